"""``--runtime auto`` verifies every artifact on the version's verification set: a few hundred
real inputs the exporter writes beside the artifacts (``assets.extra/verification_inputs.npz``,
listed and SHA-checked in the manifest), not just the handful of warmup records.

The version's int8 ONNX file is replaced by one onnxruntime calibrated on images dimmed to a
tenth of their brightness (the manifest's size and SHA-256 updated, as a careless exporter would
write them): real images saturate its activation ranges. The warmup records are 8 images on
which it happens to answer as the SavedModel does, so on them alone it passes; the verification
set shows the drop.
"""

import json

import numpy as np
import pytest

from test_serving_support import build_digits_classifier, rest_call

pytest_plugins = ("test_serving_support",)


def _predict_request(image):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    request.model_spec.signature_name = "serving_default"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(image[None]))
    return request


def _badly_calibrated_int8(float_path, out_path, images):
    from onnxruntime import quantization as q

    class Dimmed(q.CalibrationDataReader):
        def __init__(self):
            self._rows = iter(images[:64] * 0.1)

        def get_next(self):
            row = next(self._rows, None)
            return None if row is None else {"images": row[None]}

    q.quantize_static(float_path, out_path, Dimmed(), quant_format=q.QuantFormat.QDQ,
                      activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
                      per_channel=True)


def _auto_report(base):
    from tfdeploy.serving import create_server

    server = create_server(model_name="digits", model_base_path=str(base), port=0,
                           rest_api_port=0, file_system_poll_wait_seconds=0,
                           max_num_load_retries=0, runtime="auto").start()
    try:
        status, reply = rest_call(server.rest_port, "GET", "/v1/models/digits/metadata")
        assert status == 200, reply
        return reply["metadata"]["runtime"]
    finally:
        server.stop()


@pytest.fixture(scope="module")
def badly_calibrated(tmp_path_factory, train_ds):
    """A version whose int8 ONNX file loses accuracy that 8 warmup records do not show."""
    import tfdeploy as td
    from tfdeploy.runtime import load
    from tfdeploy.runtime.artifacts import sha256_of
    from tfdeploy.serving.warmup import write_warmup_requests

    root = tmp_path_factory.mktemp("verification_set")
    model = build_digits_classifier(str(root / "trained"), train_data=train_ds)
    images, _ = td.data.to_numpy(train_ds)
    base = root / "digits"
    version = td.export.saved_model(
        model, str(base), version=1, class_names=[f"digit_{i}" for i in range(10)],
        warmup_data=images, num_warmup=8, artifacts=["onnx", "onnx_int8"],
        representative_data=images, verification_data=images)
    manifest_path = base / "1" / "assets.extra" / "artifacts.json"
    manifest = json.loads(manifest_path.read_text())
    entry = next(a for a in manifest["artifacts"] if a["name"] == "onnx_int8")
    int8 = str(base / "1" / entry["file"])
    _badly_calibrated_int8(str(base / "1" / "model_float32.onnx"), int8, images)
    entry.update(bytes=(base / "1" / entry["file"]).stat().st_size, sha256=sha256_of(int8))
    manifest_path.write_text(json.dumps(manifest))
    want = np.argmax(model.predict(images, verbose=0), -1)
    got = np.argmax(load(int8).predict(images), -1)
    agree = want == got
    assert agree.mean() < 0.9 and agree.sum() >= 8, agree.mean()   # the premise of the test
    # warmup records on which the int8 file agrees: the old 8-record check cannot see the drop
    write_warmup_requests(version, [_predict_request(images[i])
                                    for i in np.flatnonzero(agree)[:8]])
    return base, manifest, images


def test_the_exporter_writes_the_verification_set_into_the_manifest(badly_calibrated):
    from tfdeploy.runtime.artifacts import read_verification, sha256_of

    base, manifest, images = badly_calibrated
    entry = manifest["verification"]
    path = base / "1" / entry["file"]
    assert entry["file"] == "assets.extra/verification_inputs.npz"
    assert entry["sha256"] == sha256_of(str(path)) and entry["bytes"] == path.stat().st_size
    assert entry["input"] == "images" and entry["source"] == "verification_data"
    assert entry["dtype"] == "float16"   # resized digits: not whole pixel values, so not uint8
    inputs, read_entry = read_verification(str(base / "1"))
    assert inputs.dtype == np.float32 and inputs.shape == (entry["records"], 32, 32, 1)
    np.testing.assert_allclose(inputs, images[:len(inputs)], atol=0.125)   # float16 of 0..255
    assert 200 <= entry["records"] <= 256 and read_entry == entry


def test_auto_rejects_a_drop_that_only_the_verification_set_shows(badly_calibrated, caplog):
    base = badly_calibrated[0]
    report = _auto_report(base)
    assert report["verified_on"]["on"] == "verification set"
    assert report["verified_on"]["records"] >= 200
    int8 = [r for r in report["candidates"] if r["artifact"] == "onnx_int8"]
    assert int8, report
    for row in int8:
        if "cannot load" in row.get("reason", ""):
            continue
        assert row["passed"] is False, row
        assert row["verified_on"] == "verification set"
        assert "top class agrees on" in row["reason"] and "verification set" in row["reason"]
        assert row["examples"] == report["verified_on"]["records"]
    assert report["serving"]["artifact"] != "onnx_int8"
    # a float file computes what the SavedModel computes: one batch of the set shows it
    from tfdeploy.serving.selection import VERIFY_BATCH

    float_row = next(r for r in report["candidates"] if r["runtime"] == "onnxruntime"
                     and r["artifact"] == "onnx")
    assert float_row["passed"] is True and float_row["examples"] == VERIFY_BATCH, float_row
    assert any("skips onnxruntime/onnx_int8" in r.getMessage() for r in caplog.records)


def test_without_a_verification_set_auto_falls_back_to_the_warmup_records(badly_calibrated,
                                                                          tmp_path):
    """A version exported before verification sets (no ``verification`` in its manifest) is
    verified on its warmup records, and the report says so; there the bad file passes."""
    import shutil

    base, manifest, _ = badly_calibrated
    old = tmp_path / "digits"
    shutil.copytree(base, old)
    legacy = {k: v for k, v in manifest.items() if k != "verification"}
    (old / "1" / "assets.extra" / "artifacts.json").write_text(json.dumps(legacy))
    report = _auto_report(old)
    assert report["verified_on"] == {"on": "warmup records", "records": 8}
    row = next(r for r in report["candidates"] if r["runtime"] == "onnxruntime")
    assert row["passed"] is True and row["verified_on"] == "warmup records", row


def test_a_tampered_verification_set_is_refused_and_said(badly_calibrated, tmp_path):
    import shutil

    base = badly_calibrated[0]
    bad = tmp_path / "digits"
    shutil.copytree(base, bad)
    path = bad / "1" / "assets.extra" / "verification_inputs.npz"
    data = bytearray(path.read_bytes())
    data[-40] ^= 0xFF
    path.write_bytes(bytes(data))
    report = _auto_report(bad)
    assert report["verified_on"]["on"] == "warmup records"
    assert "SHA-256" in report["verified_on"]["verification_set_rejected"]


def test_verification_data_needs_artifacts_and_the_models_shape(tmp_path, train_ds):
    import tfdeploy as td
    from tfdeploy.errors import ExportError

    model = build_digits_classifier(str(tmp_path / "a"))
    images, _ = td.data.to_numpy(train_ds)
    with pytest.raises(ExportError, match="no artifacts were asked"):
        td.export.saved_model(model, str(tmp_path / "b"), verification_data=images)
    with pytest.raises(ExportError, match=r"verification_data samples have shape \(16, 16, 1\)"):
        td.export.saved_model(model, str(tmp_path / "c"), artifacts=["onnx"],
                              verification_data=images[:, :16, :16])
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
