"""The quickstart end to end, as a user runs it: `tfdeploy quickstart` on the digits directory.

One run (the session fixture ``quickstart_run``) feeds every assertion: the printed table, the
artifacts on disk read back in their own runtimes, int8 dtypes and surviving zeros in the .tflite,
TensorBoard logs.
"""

import glob
import os

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.cli import main


@pytest.fixture(scope="module")
def run(quickstart_run):
    return quickstart_run  # one quickstart per session, shared with tests/test_viz.py


def _row(run, variant):
    """The JSON's row of ``variant``, its path (relative to the JSON's directory) resolved."""
    row = next(r for r in run["json"]["rows"] if r["variant"] == variant)
    assert row["path"] is None or not os.path.isabs(row["path"]), row["path"]
    return {**row, "path": row["path"] and os.path.join(run["dir"], row["path"])}


def test_table_lists_every_variant(run):
    header = run["stdout"].splitlines()[1]
    for col in ("variant", "params", "sparsity", "file bytes", "gzip bytes", "accuracy",
                "ms/sample"):
        assert col in header
    variants = [r["variant"] for r in run["json"]["rows"]]
    assert variants == ["keras baseline float32", "tflite baseline float32",
                        "saved_model pruned float32", "tflite pruned float32",
                        "tflite pruned+QAT int8"]
    for v in variants:
        assert v in run["stdout"]


def test_int8_tflite_holds_int8_sparse_weights(run):
    path = _row(run, "tflite pruned+QAT int8")["path"]
    tensors = td.verify.weight_tensors(path)
    kernels = [t for t in tensors if len(t["shape"]) >= 2]
    assert kernels and all(t["dtype"] == "int8" for t in kernels)
    zeros = sum(int(np.sum(t["values"] == 0)) for t in kernels)
    total = sum(t["values"].size for t in kernels)
    assert zeros / total >= 0.79  # the pruned zeros survived QAT and conversion


def test_int8_accuracy_within_two_points_of_float(run, test_arrays):
    x, y = test_arrays
    int8 = td.runtime.load(_row(run, "tflite pruned+QAT int8")["path"])
    float_tfl = td.runtime.load(_row(run, "tflite pruned float32")["path"])
    acc_int8 = td.verify.accuracy(int8, x, y)
    acc_float = td.verify.accuracy(float_tfl, x, y)
    assert acc_float > 0.9
    assert acc_int8 >= acc_float - 0.02
    assert abs(acc_int8 - _row(run, "tflite pruned+QAT int8")["accuracy"]) < 1e-9


def test_pruned_artifacts_are_80_percent_sparse_and_smaller(run):
    for variant in ("saved_model pruned float32", "tflite pruned float32",
                    "tflite pruned+QAT int8"):
        assert abs(_row(run, variant)["sparsity"] - 0.8) <= 0.01, variant
    base = _row(run, "tflite baseline float32")["gzip_bytes"]
    assert _row(run, "tflite pruned+QAT int8")["gzip_bytes"] * 8 < base


def test_saved_model_in_serving_layout_loads_and_agrees(run, test_arrays):
    x, _ = test_arrays
    base = run["dir"] / "saved_models" / "digits"
    assert td.export.versions(str(base)) == [1]
    sm = td.runtime.load(str(base / "1"))
    tfl = td.runtime.load(_row(run, "tflite pruned float32")["path"])
    np.testing.assert_allclose(sm.predict(x[:8]), tfl.predict(x[:8]), atol=1e-4)


def test_version_directory_holds_the_tflite_and_onnx_files_every_runtime_serves(run, test_arrays):
    from tfdeploy.serving.runtimes import candidates, load_runtime

    x = test_arrays[0][:64]
    version = str(run["dir"] / "saved_models" / "digits" / "1")
    pairs = [(name, entry["name"]) for name, entry in candidates(version)]
    assert pairs == [("tensorflow", "saved_model"), ("litert", "tflite_float32"),
                     ("litert", "tflite_int8"), ("onnxruntime", "onnx"), ("openvino", "onnx")]
    ref = load_runtime("tensorflow", version).call("serving_default", {"images": x})
    for name, artifact in pairs[1:]:
        out = load_runtime(name, version, artifact).call("serving_default", {"images": x})
        assert sorted(out) == sorted(ref) and out["class_label"].dtype == object
        agreement = (out["class_label"] == ref["class_label"]).mean()
        assert agreement >= (0.95 if artifact == "tflite_int8" else 1.0), (name, artifact)
    # the int8 and float files in the version directory come from the quickstart's QAT and
    # pruned models; the ones beside it are the same conversions, copied (not converted again)
    int8 = next(e for e in td.runtime.read_artifacts(version) if e["name"] == "tflite_int8")
    assert int8["precision"] == "int8"
    files = {e["name"]: e["path"] for e in td.runtime.read_artifacts(version)}
    for name, variant in (("tflite_float32", "tflite pruned float32"),
                          ("tflite_int8", "tflite pruned+QAT int8")):
        with open(files[name], "rb") as a, open(_row(run, variant)["path"], "rb") as b:
            assert a.read() == b.read(), name
    beside = td.runtime.load(_row(run, "tflite pruned+QAT int8")["path"]).predict(x)
    inside = td.runtime.load(int8["path"]).predict(x)
    assert (beside.argmax(1) == inside.argmax(1)).mean() >= 0.95


def test_served_quickstart_model_auto_runtime_and_both_protocols(run, test_arrays):
    """``tfdeploy serve --runtime auto`` on the quickstart's saved_models/digits (a process,
    oneDNN forced on) serves one of its TFLite/ONNX files, says which in its metadata, and
    tritonclient's V2 http and grpc clients get the V1 predict's answers."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from test_serving_support import ServerProcess, rest_call

    x = test_arrays[0][:4].astype(np.float32)
    base = run["dir"] / "saved_models" / "digits"
    with ServerProcess(["--model_name", "digits", "--model_base_path", str(base),
                        "--file_system_poll_wait_seconds", "0", "--runtime", "auto"]) as proc:
        report = rest_call(proc.rest_port, "GET", "/v1/models/digits/metadata")[1][
            "metadata"]["runtime"]
        assert report["serving"]["runtime"] != "tensorflow", report
        assert "Serving " in proc.output() and report["serving"]["artifact"] in proc.output()
        status, v1 = rest_call(proc.rest_port, "POST", "/v1/models/digits:predict",
                               {"instances": x.tolist()})
        assert status == 200
        want = np.array([p["probabilities"] for p in v1["predictions"]], np.float32)
        for module, url in ((httpclient, f"127.0.0.1:{proc.rest_port}"),
                            (grpcclient, f"127.0.0.1:{proc.grpc_port}")):
            client = module.InferenceServerClient(url)
            assert client.is_server_live() and client.is_model_ready("digits")
            assert client.get_model_metadata("digits")
            inp = module.InferInput("images", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            result = client.infer("digits", [inp], outputs=[
                module.InferRequestedOutput("probabilities")])
            np.testing.assert_allclose(result.as_numpy("probabilities"), want, rtol=1e-6)
            client.close()


def test_tensorboard_logs_written(run):
    logs = run["dir"] / "logs"
    for stage in ("baseline/train", "prune/train", "prune/sparsity", "qat/train", "comparison"):
        assert glob.glob(str(logs / stage / "events.out.tfevents.*")), stage


def test_quickstart_reports_bad_data_dir(tmp_path, capsys):
    status = main(["quickstart", "--data", str(tmp_path / "nothing"), "--quiet"])
    assert status == 1
    assert "must contain train/ and test/" in capsys.readouterr().err


def test_recipe_help_lists_options():
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, os.path.join(root, "recipes", "quickstart.py"),
                           "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for opt in ("--epochs", "--sparsity", "--output", "--data"):
        assert opt in proc.stdout
