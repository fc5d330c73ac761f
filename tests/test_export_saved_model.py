"""SavedModel export: signatures checked in TF's runtime, bytes signature, warmup, card, crashes."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import ArtifactError, ExportError
from tfdeploy.export import _warmup
from tfdeploy.runtime import SavedModelRunner

NAMES = [f"digit_{i}" for i in range(10)]


@pytest.fixture(scope="module")
def exported(trained_model, test_arrays, tmp_path_factory):
    x, y = test_arrays
    base = str(tmp_path_factory.mktemp("sm") / "digits")
    path = td.export.saved_model(trained_model, base, class_names=NAMES, warmup_data=x[:3],
                                 num_warmup=3,
                                 model_card={"metrics": {"test_accuracy": 0.95},
                                             "source": {"recipe": "tests"}})
    return path


def test_every_signature_written_and_serving_default_verifies(exported, trained_model,
                                                              test_arrays):
    x, y = test_arrays
    assert exported.endswith(os.path.join("digits", "1"))
    loaded = td.tf.saved_model.load(exported)
    assert set(loaded.signatures) == {"serving_default", "serving_bytes", "classify"}
    assert set(td.export.signature_names(trained_model)) == set(loaded.signatures)
    # parity in TF's runtime: probabilities, class index and label against the Keras model
    result = td.verify.verify(exported, trained_model, x, y, class_names=NAMES)
    assert result["passed"] and result["max_abs_diff"] < 1e-5
    assert set(result["outputs"]) == {"probabilities", "class_index", "class_label"}
    assert result["accuracy"] == pytest.approx(result["reference_accuracy"])
    # weights only: the trained model's Adam slots stay out of the serving artifact
    weights = td.verify.estimate(trained_model).param_bytes
    assert td.verify.path_bytes(os.path.join(exported, "variables")) < 1.05 * weights


def test_image_bytes_signature_matches_float_signature_on_same_png(exported, digits_dir):
    test_dir = os.path.join(digits_dir, "test")
    paths = [os.path.join(test_dir, c, sorted(os.listdir(os.path.join(test_dir, c)))[0])
             for c in ("0", "3", "7")]
    encoded = np.array([open(p, "rb").read() for p in paths], dtype=object)
    # the float path: decode and resize with tfdeploy's data pipeline (outside the graph)
    ds = td.tf.data.Dataset.from_tensor_slices(paths).map(
        lambda p: td.tf.clip_by_value(td.tf.image.resize(td.tf.cast(
            td.tf.io.decode_png(td.tf.io.read_file(p), channels=1), td.tf.float32), (32, 32)),
            0.0, 255.0))
    pixels = np.stack(list(ds.as_numpy_iterator()))
    by_float = SavedModelRunner(exported).run(pixels)
    by_bytes = SavedModelRunner(exported, signature="serving_bytes").run(encoded)
    np.testing.assert_allclose(by_bytes["probabilities"], by_float["probabilities"], atol=1e-5)
    np.testing.assert_array_equal(by_bytes["class_index"], by_float["class_index"])
    np.testing.assert_array_equal(by_bytes["class_label"], by_float["class_label"])


def test_classify_method_and_labels_asset(exported, trained_model, test_arrays):
    from tensorflow.core.protobuf import saved_model_pb2

    x, _ = test_arrays
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(exported, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    sigs = proto.meta_graphs[0].signature_def
    assert sigs["classify"].method_name == "tensorflow/serving/classify"
    assert set(sigs["classify"].inputs) == {"inputs"}
    assert set(sigs["classify"].outputs) == {"classes", "scores"}
    assert sigs["serving_default"].method_name == "tensorflow/serving/predict"
    with open(os.path.join(exported, "assets", "labels.txt")) as f:
        assert f.read().splitlines() == NAMES
    examples = np.array([td.tf.train.Example(features=td.tf.train.Features(feature={
        "images": td.tf.train.Feature(float_list=td.tf.train.FloatList(value=row.ravel()))
    })).SerializeToString() for row in x[:5]], dtype=object)
    out = SavedModelRunner(exported, signature="classify").run(examples)
    np.testing.assert_allclose(out["scores"], trained_model.predict(x[:5], verbose=0), atol=1e-5)
    assert [c.decode() for c in out["classes"][0]] == NAMES


def test_warmup_file_parses_as_prediction_logs_and_replays(exported, test_arrays):
    x, _ = test_arrays
    path = os.path.join(exported, "assets.extra", "tf_serving_warmup_requests")
    logs = _warmup.read(path)
    assert len(logs) == 6  # 3 samples x (serving_default + serving_bytes)
    signatures = [log.predict_log.request.model_spec.signature_name for log in logs]
    assert signatures == ["serving_default", "serving_bytes"] * 3
    assert {log.predict_log.request.model_spec.name for log in logs} == {"digits"}
    loaded = td.tf.saved_model.load(exported)
    for i, log in enumerate(logs[::2]):
        sent = td.tf.make_ndarray(log.predict_log.request.inputs["images"])
        np.testing.assert_array_equal(sent, x[i:i + 1])
    for log in logs:  # replay each request the way TF Serving does
        request = log.predict_log.request
        fn = loaded.signatures[request.model_spec.signature_name]
        feeds = {k: td.tf.constant(td.tf.make_ndarray(v)) for k, v in request.inputs.items()}
        assert fn(**feeds)["probabilities"].shape == (1, 10)


def test_model_card_beside_warmup(exported, trained_model):
    card = td.export.read_model_card(exported)
    assert card["schema"] == "tfdeploy-model-card/1"
    assert card["metrics"] == {"test_accuracy": 0.95}
    assert card["source"]["recipe"] == "tests"
    assert card["source"]["params"] == trained_model.count_params()
    assert card["artifact"]["signatures"] == ["classify", "serving_bytes", "serving_default"]
    assert card["artifact"]["class_names"] == NAMES and card["artifact"]["warmup_requests"]
    assert card["compression"][-1]["step"] == "measured"


def test_regressor_gets_regress_method(tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    inputs = td.keras.Input((4,), name="features")
    model = td.keras.Model(inputs, td.keras.layers.Dense(1)(inputs))
    path = td.export.saved_model(model, str(tmp_path / "reg"))
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    sigs = proto.meta_graphs[0].signature_def
    assert set(sigs) - {"__saved_model_init_op"} == {"serving_default", "regress"}
    assert sigs["regress"].method_name == "tensorflow/serving/regress"
    rows = np.arange(8, dtype=np.float32).reshape(2, 4)
    examples = np.array([td.tf.train.Example(features=td.tf.train.Features(feature={
        "images": td.tf.train.Feature(float_list=td.tf.train.FloatList(value=r))
    })).SerializeToString() for r in rows], dtype=object)
    out = SavedModelRunner(path, signature="regress").run(examples)
    np.testing.assert_allclose(out["outputs"], model.predict(rows, verbose=0).ravel(), rtol=1e-5)


def test_model_with_a_lookup_table_exports_whole(tmp_path):
    inputs = td.keras.Input((1,), dtype=td.tf.string)
    ids = td.keras.layers.StringLookup(vocabulary=["buy", "sell", "hold"])(inputs)
    x = td.keras.layers.Flatten()(td.keras.layers.Embedding(5, 4)(ids))
    model = td.keras.Model(inputs, td.keras.layers.Dense(2, activation="softmax")(x))
    path = td.export.saved_model(model, str(tmp_path / "text"))
    runner = td.runtime.load(path)
    assert runner.inputs == [("images", (-1, 1), "string")]
    words = np.array([["buy"], ["hold"], ["unknown"]], dtype=object)
    np.testing.assert_allclose(runner.predict(words),
                               model.predict(td.tf.constant(words.astype(str)), verbose=0),
                               atol=1e-6)


def test_killed_export_leaves_no_version_directory(tmp_path):
    base = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import os, signal, sys
        import tfdeploy as td
        from tfdeploy.export import _saved_model as sm
        def die(export_dir, methods):   # the graph is on disk, the assets are not yet
            assert os.path.exists(os.path.join(export_dir, "saved_model.pb"))
            os.kill(os.getpid(), signal.SIGKILL)
        sm._set_method_names = die
        model = td.models.build_cnn((8, 8, 1), num_classes=3, width=0.1)
        td.export.saved_model(model, {str(base)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=240)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    left = os.listdir(base)
    assert td.export.versions(str(base)) == [] and not any(d.isdigit() for d in left)
    assert left and all(d.startswith("temp-") for d in left)  # invisible to TF Serving
    with pytest.raises(ArtifactError, match="neither a SavedModel directory"):
        td.runtime.load(str(base))


def test_bad_class_names_and_multi_input_warmup_rejected(trained_model, tmp_path):
    with pytest.raises(ExportError, match="single-line strings.*'a\\\\nb'"):
        td.export.saved_model(trained_model, str(tmp_path / "a"),
                              class_names=["a\nb"] + [str(i) for i in range(9)])
    assert not os.path.exists(tmp_path / "a" / "1")
    a, b = td.keras.Input((2,)), td.keras.Input((2,))
    two = td.keras.Model([a, b], td.keras.layers.Dense(2)(td.keras.layers.Concatenate()([a, b])))
    with pytest.raises(ExportError, match="warmup_data needs a single-input model"):
        td.export.saved_model(two, str(tmp_path / "b"), warmup_data=np.zeros((1, 2)))


def test_corrupt_saved_model_gets_clear_errors(exported, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / "saved_model.pb").write_bytes(b"\x00not a protobuf" * 10)
    with pytest.raises(ArtifactError, match="Could not load SavedModel"):
        td.runtime.load(str(broken))
    with pytest.raises(ArtifactError, match="corrupt saved_model.pb"):
        td.runtime.inspect(str(broken))
    no_vars = tmp_path / "no_vars"
    shutil.copytree(exported, no_vars)
    shutil.rmtree(no_vars / "variables")
    with pytest.raises(ArtifactError, match="Could not load SavedModel"):
        td.runtime.load(str(no_vars))
    card = json.loads((no_vars / "assets.extra" / "model_card.json").read_text())
    assert card["name"] == "cnn"


def test_saved_model_size_counts_its_own_files_not_the_artifacts_beside_it(exported, tmp_path):
    """A version directory also holds assets.extra and the .tflite/.onnx files exported beside
    the SavedModel; the SavedModel's size (every table's bytes and gzip bytes) is its own."""
    import shutil

    version = str(tmp_path / "1")
    shutil.copytree(exported, version)
    own = td.verify.path_bytes(version)
    parts = [os.path.join(d, f) for d, _, files in os.walk(version) for f in files
             if os.path.relpath(d, version).split(os.sep)[0] != "assets.extra"]
    assert os.path.isdir(os.path.join(version, "assets.extra"))  # warmup + card are there
    assert own == sum(os.path.getsize(p) for p in parts)
    own_gzip = td.verify.gzip_bytes(version)
    with open(os.path.join(version, "model_float32.tflite"), "wb") as f:
        f.write(os.urandom(200_000))  # an artifact exported beside it
    with open(os.path.join(version, "assets.extra", "verification_inputs.npz"), "wb") as f:
        f.write(os.urandom(100_000))
    assert td.verify.path_bytes(version) == own
    assert td.verify.gzip_bytes(version) == own_gzip
    # a plain directory (not a SavedModel) still counts every file
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.bin").write_bytes(b"x" * 10)
    (plain / "sub").mkdir()
    (plain / "sub" / "b.bin").write_bytes(b"y" * 5)
    assert td.verify.path_bytes(str(plain)) == 15
