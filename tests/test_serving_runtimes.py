"""Serving runtimes: every artifact of a version answers like its SavedModel's serving_default.

One digits classifier (fit briefly, so its answers differ between images) is exported
with every artifact; each (runtime, artifact) pair the manifest offers is checked against
the SavedModel read by `tfdeploy.runtime` (names, dtypes, labels, values within
`td.verify`'s tolerances), at changing batch sizes and from 8 threads at once.
"""

import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import ArtifactError, EmptyBatchError, ExportError, InvalidInputError
from tfdeploy.runtime.artifacts import MANIFEST_PATH, read_artifacts, sha256_of
from tfdeploy.serving.runtimes import RUNTIMES, candidates, load_runtime
from tfdeploy.verify.report import TOLERANCES

from test_serving_support import build_digits_classifier

ARTIFACTS = ("tflite_float32", "tflite_int8", "onnx", "onnx_int8")
LABELS = [f"digit_{i}" for i in range(10)]
PAIRS = [("tensorflow", "saved_model"), ("litert", "tflite_float32"), ("litert", "tflite_int8"),
         ("onnxruntime", "onnx"), ("openvino", "onnx"), ("onnxruntime", "onnx_int8"),
         ("openvino", "onnx_int8")]


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory, train_ds):
    base = tmp_path_factory.mktemp("runtimes") / "digits"
    train_images = td.data.to_numpy(train_ds)[0]
    build_digits_classifier(str(base), artifacts=ARTIFACTS, representative_data=train_images,
                            train_data=train_ds)
    return str(base / "1")


@pytest.fixture(scope="module")
def images(test_arrays):
    x, y = test_arrays
    picked = np.concatenate([np.flatnonzero(y == c)[:7] for c in np.unique(y)])  # every class
    return x[np.random.default_rng(0).permutation(picked)].astype(np.float32)


@pytest.fixture(scope="module")
def reference(version_dir, images):
    """The SavedModel's serving_default, run by tfdeploy.runtime (not by the runtimes)."""
    out = td.runtime.load(version_dir).run({"images": images})
    assert len(set(out["class_index"].tolist())) >= 3, "the test model must tell images apart"
    return out


def _race(threads):
    """Start ``threads`` and wait for them, switching threads between any two bytecodes
    meanwhile, so that races show up."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)


def _check_like_reference(out, ref, precision):
    assert sorted(out) == sorted(ref)
    for name in ref:
        assert out[name].dtype == ref[name].dtype, name
        assert out[name].shape == ref[name].shape, name
    labels = np.array([c.encode() for c in LABELS], dtype=object)
    assert (out["class_label"] == labels[out["class_index"]]).all()
    tol = TOLERANCES[precision]
    if tol["atol"] is not None:
        assert np.abs(out["probabilities"] - ref["probabilities"]).max() <= tol["atol"]
        assert (out["class_index"] == ref["class_index"]).all()
        assert (out["class_label"] == ref["class_label"]).all()
    else:
        same = out["class_index"] == ref["class_index"]
        assert same.mean() >= tol["min_agreement"], same.mean()
        assert (out["class_label"][same] == ref["class_label"][same]).all()


def test_manifest_lists_every_artifact_beside_the_saved_model(version_dir):
    entries = read_artifacts(version_dir)
    assert [e["name"] for e in entries] == ["saved_model", *ARTIFACTS]
    assert entries[0]["runtimes"] == ["tensorflow"]
    by_name = {e["name"]: e for e in entries}
    assert by_name["onnx"]["runtimes"] == ["onnxruntime", "openvino"]
    assert by_name["tflite_int8"]["precision"] == by_name["onnx_int8"]["precision"] == "int8"
    assert by_name["tflite_float32"]["precision"] == by_name["onnx"]["precision"] == "float32"
    assert sorted((n, e["name"]) for n, e in candidates(version_dir)) == sorted(PAIRS)
    sig = entries[0]["signature"]
    assert sig["inputs"] == {"images": {"dtype": "float32", "shape": [-1, 32, 32, 1]}}
    assert {k: v["dtype"] for k, v in sig["outputs"].items()} == {
        "probabilities": "float32", "class_index": "int64", "class_label": "string"}
    for entry in entries[1:]:
        assert os.path.dirname(entry["path"]) == os.path.realpath(version_dir)
        assert entry["sha256"] == sha256_of(entry["path"])
        assert entry["bytes"] == os.path.getsize(entry["path"])
        assert entry["class_labels"] == LABELS
        runner = td.runtime.load(entry["path"])   # the file's own tensor names are mapped
        assert list(entry["inputs"]) == ["images"]
        assert list(entry["inputs"].values()) == [i[0] for i in runner.inputs]
        assert list(entry["outputs"].values()) == [o[0] for o in runner.outputs]
    # the version appeared in one piece: no temporary directories beside it
    assert os.listdir(os.path.dirname(version_dir)) == ["1"]


@pytest.mark.parametrize("runtime,artifact", PAIRS)
def test_every_runtime_answers_like_the_saved_model(runtime, artifact, version_dir, images,
                                                    reference):
    rt = load_runtime(runtime, version_dir, artifact, num_threads=1)
    try:
        assert "serving_default" in rt.signature_keys
        out = rt.call("serving_default", {"images": images})
        entry = rt.artifact
        _check_like_reference(out, reference, entry["precision"])
        info = rt.describe()
        assert (info["runtime"], info["artifact"], info["threads"]) == (runtime, artifact, 1)
        assert info["precision"] == entry["precision"] and info["file"] == entry["file"]
    finally:
        rt.close()


@pytest.mark.parametrize("runtime,artifact", PAIRS)
def test_batch_sizes_change_between_calls(runtime, artifact, version_dir, images, reference):
    rt = load_runtime(runtime, version_dir, artifact)
    whole = rt.call("serving_default", {"images": images})      # this runtime's own answers
    if runtime == "litert":
        assert rt.resizes == 1                                  # 1 -> 64
    start, parts = 8, []
    for batch in (1, 3, 1, 8, 8):
        rows = slice(start, start + batch)
        out = rt.call("serving_default", {"images": images[rows]})
        # resizing changes nothing: each row answers as it did in the batch of 64
        np.testing.assert_allclose(out["probabilities"], whole["probabilities"][rows],
                                   atol=1e-5)
        assert (out["class_label"] == whole["class_label"][rows]).all()
        parts.append(out)
        start += batch
    # and the rows together agree with the SavedModel within the artifact's tolerance
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    _check_like_reference(joined, {k: v[8:start] for k, v in reference.items()},
                          rt.artifact["precision"])
    if runtime == "litert":
        assert rt.resizes == 5       # 64->1, 1->3, 3->1, 1->8; none for 8->8
    rt.close()


@pytest.mark.parametrize("runtime,artifact,options", [
    ("tensorflow", "saved_model", {}), ("litert", "tflite_float32", {}),
    ("litert", "tflite_int8", {"instances": 3}), ("onnxruntime", "onnx", {}),
    ("openvino", "onnx", {}), ("openvino", "onnx_int8", {})])
def test_concurrent_calls_from_8_threads(runtime, artifact, options, version_dir, images):
    rt = load_runtime(runtime, version_dir, artifact, **options)
    # each thread sends its own rows at its own batch size; answers are checked against
    # the same runtime's sequential answers for those rows
    expected = rt.call("serving_default", {"images": images})
    failures, barrier = [], threading.Barrier(8)

    def worker(t):
        barrier.wait()
        for i in range(12):
            batch = 1 + (t + i) % 8
            start = (t * 7 + i * 5) % (len(images) - batch)
            rows = slice(start, start + batch)
            try:
                out = rt.call("serving_default", {"images": images[rows]})
            except Exception as exc:  # an exception in a thread must fail the test too
                failures.append((t, i, batch, repr(exc)[:200]))
                continue
            if not (out["probabilities"].shape == expected["probabilities"][rows].shape
                    and np.allclose(out["probabilities"], expected["probabilities"][rows],
                                    atol=1e-5)
                    and (out["class_label"] == expected["class_label"][rows]).all()):
                failures.append((t, i, batch))

    _race([threading.Thread(target=worker, args=(t,)) for t in range(8)])
    assert not failures, failures[:5]
    if options.get("instances"):
        assert 1 <= rt.describe()["instances"] <= options["instances"] + 1   # (+ the first)
    rt.close()


class _CountingInterpreter:
    """Wraps a LiteRT interpreter: counts every method called on it, keeps what set_tensor got."""

    def __init__(self, interpreter):
        self._interpreter, self.calls, self.fed = interpreter, {}, []

    def __getattr__(self, name):
        method = getattr(self._interpreter, name)

        def counted(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            if name == "set_tensor":
                self.fed.append(args[1])
            return method(*args, **kwargs)
        return counted


@pytest.mark.parametrize("artifact", ["tflite_float32", "tflite_int8"])
def test_litert_calls_do_no_per_call_setup(artifact, version_dir, images):
    """A call is set_tensor, invoke and get_tensor: tensor details are read once (and after a
    resize), the input is resized and re-allocated only when its batch size changes, and a
    float32 request reaches the float interpreter without a copy."""
    rt = load_runtime("litert", version_dir, artifact)
    runner = rt._runners[0]
    counting = runner._interpreter = _CountingInterpreter(runner._interpreter)
    batch = np.ascontiguousarray(images[:4])
    first = rt.call("serving_default", {"images": batch})          # 1 -> 4: one resize
    assert counting.calls.get("resize_tensor_input") == counting.calls.get("allocate_tensors") == 1
    outputs = len(runner.outputs)
    counting.calls.clear()
    for _ in range(5):                                              # the same shape again
        out = rt.call("serving_default", {"images": batch})
        np.testing.assert_array_equal(out["probabilities"], first["probabilities"])
    assert counting.calls == {"set_tensor": 5, "invoke": 5, "get_tensor": 5 * outputs}
    if artifact == "tflite_float32":
        assert all(fed is batch for fed in counting.fed)           # no copy, no conversion
    counting.calls.clear()
    rt.call("serving_default", {"images": images[:2]})              # a new size: one resize
    assert counting.calls["resize_tensor_input"] == counting.calls["allocate_tensors"] == 1
    assert rt.resizes == 2
    rt.close()


def _call_overlapping_the_first_runner(rt, images):
    """``rt.call`` made while another call is held inside the first runner (so the overlap
    does not depend on how the machine schedules threads); its outputs."""
    first = rt._runners[0]
    entered, release = threading.Event(), threading.Event()
    run = first.run

    def held_run(x):
        entered.set()
        assert release.wait(30)
        return run(x)

    first.run = held_run
    holder = threading.Thread(target=rt.call, args=("serving_default", {"images": images}))
    holder.start()
    try:
        assert entered.wait(30)
        return rt.call("serving_default", {"images": images})
    finally:
        release.set()
        holder.join(30)
        first.run = run


@pytest.mark.parametrize("runtime,artifact", [("litert", "tflite_float32"),
                                              ("onnxruntime", "onnx")])
def test_file_runtime_serves_concurrent_calls_on_every_core(runtime, artifact, version_dir,
                                                             images):
    """By default a LiteRT (ONNX Runtime) runtime runs a lone call on one interpreter
    (session) with every usable core, and calls that overlap it on one-thread interpreters
    (sessions), up to one per core, created only when calls overlap: concurrent requests are
    neither serialized onto one interpreter nor given more threads than there are cores."""
    cores = len(os.sched_getaffinity(0))
    rt = load_runtime(runtime, version_dir, artifact)
    info = rt.describe()
    assert (info["instances"], info["max_instances"]) == (1, cores)   # one until calls overlap
    assert info["instance_threads"] == [cores] == [rt._runners[0].num_threads]
    # A call that overlaps one in progress (held inside the first interpreter, so the overlap
    # does not depend on how the machine schedules threads) opens a one-thread interpreter.
    if cores >= 2:   # (one core: the second call would wait for the first)
        _call_overlapping_the_first_runner(rt, images[:8])
        info = rt.describe()
        assert info["instances"] == min(2, cores)
        assert info["instance_threads"] == [cores] + [1] * (info["instances"] - 1)
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        for _ in range(20):
            rt.call("serving_default", {"images": images[:8]})

    _race([threading.Thread(target=worker) for _ in range(8)])
    # (racing calls never open more one-thread interpreters than cores, nor give them more
    # threads)
    info = rt.describe()
    assert min(2, cores) <= info["instances"] <= cores + 1
    assert info["instance_threads"] == [cores] + [1] * (info["instances"] - 1)
    rt.close()
    rt = load_runtime(runtime, version_dir, artifact, num_threads=1, instances=1)
    _race([threading.Thread(target=worker) for _ in range(8)])      # one interpreter: queued
    assert rt.describe()["instance_threads"] == [1]
    rt.close()


@pytest.mark.parametrize("runtime,artifact", [("litert", "tflite_float32"),
                                              ("onnxruntime", "onnx"), ("openvino", "onnx")])
def test_a_call_that_starts_while_another_is_in_flight_runs_on_one_thread(runtime, artifact,
                                                                          version_dir, images):
    """Only a call alone gets the first runner's every-core threads: one that starts while
    another call is in flight runs on a one-thread runner (OpenVINO: its throughput model)
    even when the first runner is free, so a steady stream of requests never puts the first
    runner's threads beside the one-thread runners' (more threads than cores)."""
    cores = len(os.sched_getaffinity(0))
    rt = load_runtime(runtime, version_dir, artifact)
    if cores < 2:
        rt.close()
        return
    first, used = rt._runners[0], []
    run = first.run
    first.run = lambda x: used.append(len(used)) or run(x)
    feeds = {"images": images[:4]}
    want = rt.call("serving_default", feeds)["probabilities"]     # alone: the first runner
    assert used == [0]
    with rt.overlapping() as overlapping:   # another call in flight (wherever it runs)
        assert not overlapping
        got = rt.call("serving_default", feeds)["probabilities"]
    assert used == [0], "a call overlapping one in flight took the (free) first runner"
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if runtime == "openvino":
        assert rt.describe()["overlapping_calls"]["infer_requests"] == 1
    else:
        assert rt.describe()["instance_threads"] == [cores, 1]
    rt.call("serving_default", feeds)     # alone again: the first runner
    assert used == [0, 1]
    first.run = run
    rt.close()


def test_openvino_runs_overlapping_calls_on_a_throughput_model(version_dir, images):
    """OpenVINO runs a lone call on its LATENCY model (one stream, every core) and calls that
    overlap it on a second compiled model with one single-thread stream per core, read back
    from OpenVINO's own properties; answers are the same on both."""
    cores = len(os.sched_getaffinity(0))
    rt = load_runtime("openvino", version_dir, "onnx")
    if cores < 2:
        assert rt.describe()["overlapping_calls"] is None
        return
    lone, overlap = rt._runners[0]._compiled, rt._overlap._compiled
    assert (lone.get_property("NUM_STREAMS"), lone.get_property("INFERENCE_NUM_THREADS")) == (
        1, cores)
    assert (int(overlap.get_property("NUM_STREAMS")),
            int(overlap.get_property("INFERENCE_NUM_THREADS"))) == (cores, cores)
    want = rt.call("serving_default", {"images": images[:8]})["probabilities"]
    assert rt.describe()["overlapping_calls"]["infer_requests"] == 0     # alone: the first
    got = _call_overlapping_the_first_runner(rt, images[:8])["probabilities"]
    assert rt.describe()["overlapping_calls"]["infer_requests"] == 1
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    rt.close()
    rt = load_runtime("openvino", version_dir, "onnx", num_streams=2)    # the user's streams
    assert rt.describe()["overlapping_calls"] is None
    rt.close()


@pytest.mark.parametrize("runtime,artifact", [p for p in PAIRS if p[0] != "tensorflow"])
def test_file_runtimes_use_every_usable_core_by_default(runtime, artifact, version_dir):
    """Every file runtime, like TensorFlow's intra-op pool, gives one call the cores this
    process may use (its affinity mask, not the machine's count), so ``--runtime auto``
    times them on equal terms; ``num_threads`` overrides it. Read back from the runtime's
    description and from the library's own session/interpreter settings."""
    def library_threads(rt):
        runner = rt._runners[0]
        if runtime == "onnxruntime":
            return runner._session.get_session_options().intra_op_num_threads
        if runtime == "openvino":
            return int(runner._compiled.get_property("INFERENCE_NUM_THREADS"))
        return runner.num_threads   # (LiteRT's interpreter does not report its threads)

    cores = len(os.sched_getaffinity(0))
    rt = load_runtime(runtime, version_dir, artifact)
    assert rt.num_threads == rt.describe()["threads"] == library_threads(rt) == cores
    rt.close()
    rt = load_runtime(runtime, version_dir, artifact, num_threads=1)
    assert rt.describe()["threads"] == library_threads(rt) == 1
    rt.close()


def test_the_default_threads_follow_the_process_affinity(version_dir):
    """A process limited to one core (a container's cpuset; here ``sched_setaffinity`` in
    the child) gets one thread per call in every file runtime, whatever the machine has."""
    script = (
        "import os\n"
        "from tfdeploy.serving.runtimes import load_runtime\n"
        "assert len(os.sched_getaffinity(0)) == 1\n"
        "for name, art in (('litert', 'tflite_int8'), ('onnxruntime', 'onnx'),\n"
        "                  ('openvino', 'onnx')):\n"
        f"    rt = load_runtime(name, {version_dir!r}, art)\n"
        "    r = rt._runners[0]\n"
        "    lib = (r._session.get_session_options().intra_op_num_threads if name == "
        "'onnxruntime' else int(r._compiled.get_property('INFERENCE_NUM_THREADS')) if name == "
        "'openvino' else r.num_threads)\n"
        "    print(name, rt.describe()['threads'], lib, rt.describe()['max_instances'])\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(td.__file__))
    core = min(os.sched_getaffinity(0))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300,
                          preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.split()[0] in
             ("litert", "onnxruntime", "openvino")]
    assert lines == ["litert 1 1 1", "onnxruntime 1 1 1", "openvino 1 1 1"], done.stdout


def test_onnxruntime_threads_do_not_spin_between_calls(version_dir, images):
    """ONNX Runtime's intra-op threads spin waiting for work by default, burning a core
    beside every concurrent request; the runtime turns spinning off, so an idle session
    costs no CPU."""
    import time

    rt = load_runtime("onnxruntime", version_dir, "onnx", num_threads=2)
    options = rt._runners[0]._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert rt.describe()["spinning"] is False
    for _ in range(5):
        rt.call("serving_default", {"images": images[:8]})
    cpu = time.process_time()
    time.sleep(0.3)
    assert time.process_time() - cpu < 0.015   # spinning: 0.037-0.047 s of 0.3 s (measured)
    rt.close()


def test_file_runtimes_run_serving_default_only(version_dir, images):
    tf_rt = load_runtime("tensorflow", version_dir)
    assert {"serving_default", "serving_bytes", "classify"} <= tf_rt.signature_keys
    rt = load_runtime("litert", version_dir)           # the first .tflite listed
    assert rt.artifact["name"] == "tflite_float32"
    assert rt.signature_keys == frozenset({"serving_default"})
    with pytest.raises(ArtifactError, match="model_float32.tflite.*'classify'.*tensorflow "
                                            "runtime"):
        rt.call("classify", {"inputs": np.array([b""], dtype=object)})
    with pytest.raises(ValueError, match=r"Unrecognized runtime='tensorrt'. Supported runtimes "
                                         r"are: \['tensorflow', 'litert'"):
        load_runtime("tensorrt", version_dir)
    with pytest.raises(ArtifactError, match="no artifact 'tflite_int8' for the onnxruntime "
                                            "runtime"):
        load_runtime("onnxruntime", version_dir, "tflite_int8")


def _copy_version(version_dir, tmp_path):
    copy = str(tmp_path / "digits" / "1")
    shutil.copytree(version_dir, copy)
    return copy


@pytest.mark.parametrize("runtime,artifact", [("litert", "tflite_int8"),
                                              ("onnxruntime", "onnx"), ("openvino", "onnx_int8")])
def test_corrupt_artifact_raises_artifact_error_naming_the_file(runtime, artifact, version_dir,
                                                                tmp_path):
    copy = _copy_version(version_dir, tmp_path)
    entry = next(e for e in read_artifacts(copy) if e["name"] == artifact)
    with open(entry["path"], "r+b") as f:          # same size, a few weights changed
        f.seek(entry["bytes"] // 2)
        f.write(b"\x7f\x00\x13\x37")
    name = os.path.basename(entry["path"])
    with pytest.raises(ArtifactError, match=f"{name}.*SHA-256.*Re-export"):
        load_runtime(runtime, copy, artifact)
    # without a checksum to compare, the runtime's own parser refuses a truncated file
    with open(entry["path"], "r+b") as f:
        f.truncate(entry["bytes"] // 3)
    manifest_path = os.path.join(copy, MANIFEST_PATH)
    with open(manifest_path) as f:
        manifest = json.load(f)
    for e in manifest["artifacts"]:
        e.pop("sha256"), e.pop("bytes")
    with open(manifest_path, "w") as f:
        json.dump(manifest, f)
    with pytest.raises(ArtifactError, match=f"{name}.*(not a valid|not a model)"):
        load_runtime(runtime, copy, artifact)
    os.remove(entry["path"])
    with pytest.raises(ArtifactError, match=f"{name}.*does not exist"):
        read_artifacts(copy)


def test_missing_openvino_names_the_extra(version_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)   # import openvino -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'tfdeploy\[openvino\]'"):
        load_runtime("openvino", version_dir)
    # the other runtimes of the version still load
    assert load_runtime("onnxruntime", version_dir).describe()["runtime"] == "onnxruntime"


def test_version_without_manifest_is_its_saved_model(version_dir, tmp_path, images, reference):
    copy = _copy_version(version_dir, tmp_path)
    os.remove(os.path.join(copy, MANIFEST_PATH))
    entries = read_artifacts(copy)
    assert [(e["name"], e["runtimes"]) for e in entries] == [("saved_model", ["tensorflow"])]
    out = load_runtime("tensorflow", copy).call("serving_default", {"images": images})
    _check_like_reference(out, reference, "float32")
    with pytest.raises(ArtifactError, match=r"no artifact for the litert runtime; it has "
                                            r"\['saved_model \(tensorflow\)'\]"):
        load_runtime("litert", copy)


def test_export_refuses_bad_artifact_options_before_writing(tmp_path):
    base = str(tmp_path / "m")
    with pytest.raises(ExportError, match=r"Unrecognized artifacts \['tflite_int4'\]. Supported "
                                          r"artifacts are: \['tflite_float32'"):
        build_digits_classifier(base, artifacts=["tflite_int4"])
    with pytest.raises(ExportError, match=r"\['tflite_int8'\] are int8 and need "
                                          "representative_data"):
        build_digits_classifier(base, artifacts=["onnx", "tflite_int8"])
    with pytest.raises(ExportError, match=r"list of names.*artifacts=\['onnx'\]"):
        build_digits_classifier(base, artifacts="onnx")
    keras = td.keras
    inputs = keras.Input((4,))
    two = keras.Model(inputs, [keras.layers.Dense(3, activation="softmax")(inputs),
                               keras.layers.Dense(1)(inputs)])
    with pytest.raises(ExportError, match="one input and one output.*2 outputs"):
        td.export.saved_model(two, base, artifacts=["onnx"])
    assert not os.path.exists(base) or not os.listdir(base)


def test_failed_artifact_leaves_no_version(tmp_path, monkeypatch):
    from tfdeploy.export import _artifacts

    def broken(*args, **kwargs):
        raise ExportError("tf2onnx conversion failed: simulated")

    monkeypatch.setattr(_artifacts, "export_onnx", broken)
    base = tmp_path / "digits"
    with pytest.raises(ExportError, match="simulated"):
        build_digits_classifier(str(base), artifacts=["tflite_float32", "onnx"])
    assert os.listdir(base) == []      # neither a version nor a temporary directory


def test_runtimes_load_without_keras_or_training_code(version_dir, images):
    script = (
        "import sys, numpy as np\n"
        "from tfdeploy.serving.runtimes import load_runtime\n"
        f"x = np.zeros((2, 32, 32, 1), np.float32)\n"
        "for name in ('litert', 'onnxruntime', 'openvino', 'tensorflow'):\n"
        f"    out = load_runtime(name, {version_dir!r}).call('serving_default', {{'images': x}})\n"
        "    assert out['class_label'].dtype == object\n"
        "bad = [m for m in ('tf_keras', 'tensorflow_model_optimization', 'keras_tuner')\n"
        "       if m in sys.modules]\n"
        "assert not bad, bad\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}  # set by tfdeploy
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(td.__file__))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_every_runtime_is_tested():
    assert {r for r, _ in PAIRS} == set(RUNTIMES)


@pytest.mark.parametrize("runtime,artifact", PAIRS[1:])
def test_bad_input_is_refused_naming_the_signature_input(runtime, artifact, version_dir):
    rt = load_runtime(runtime, version_dir, artifact)
    for x in (np.zeros((2, 28, 28, 1), np.float32), np.zeros((2, 32, 32), np.float32),
              np.zeros((2, 32, 32, 3), np.float32)):
        with pytest.raises(InvalidInputError, match=r"Input 'images' has shape \(2, .*\); "
                                                    r"signature 'serving_default' takes "
                                                    r"\(-1, 32, 32, 1\)"):
            rt.call("serving_default", {"images": x})
    with pytest.raises(EmptyBatchError, match="Input 'images' holds no samples"):
        rt.call("serving_default", {"images": np.zeros((0, 32, 32, 1), np.float32)})
    with pytest.raises(InvalidInputError, match="Missing input 'images'"):
        rt.call("serving_default", {"pixels": np.zeros((1, 32, 32, 1), np.float32)})
    with pytest.raises(InvalidInputError, match="'images' cannot be read as float32"):
        rt.call("serving_default", {"images": np.array([["a"]], dtype=object)})
    # the runtime still answers after refusing
    out = rt.call("serving_default", {"images": np.zeros((1, 32, 32, 1), np.float32)})
    assert out["class_label"].shape == (1,)
