"""Composable plans: ordered stages, one history, TensorBoard, early errors for bad plans."""

import glob
import os

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import CompressionError

C = td.compress


def test_plan_slim_prune_cluster_quantize(trained_model, train_ds, test_ds, tmp_path):
    small_train = train_ds.take(15)
    before = [w.copy() for w in trained_model.get_weights()]
    result = C.apply_plan(trained_model, [
        C.Stage("slim", ratio=0.5, epochs=1, optimizer="adam", learning_rate=5e-4),
        C.Stage("prune", target_sparsity=0.6, epochs=1, lr_schedule="cosine"),
        C.Stage("cluster", n_clusters=16, epochs=1, optimizer="sgd"),
        ("quantize", {"epochs": 1}),
    ], small_train, validation_data=test_ds, log_dir=str(tmp_path / "logs"))
    h = result.history
    assert [e["stage"] for e in h] == ["baseline", "slim", "prune", "cluster", "quantize"]
    assert h[1]["params"] < 0.3 * h[0]["params"]
    assert h[2]["sparsity"] == pytest.approx(0.6, abs=0.03)
    assert h[2]["gzip_bytes"] < h[1]["gzip_bytes"]
    assert h[3]["gzip_bytes"] < h[2]["gzip_bytes"]
    assert all(0.0 <= e["accuracy"] <= 1.0 for e in h)
    assert h[1]["accuracy"] > 0.5
    assert C.is_quantization_aware(result.model)
    rows = C.report(result.model).to_dict()
    assert rows["conv2"]["slimmed"] and rows["conv2"]["pruned"] and rows["conv2"]["clustered"]
    assert rows["conv2"]["quantized"]
    assert "quantize" in result.table() and "baseline" in result.table()
    events = glob.glob(os.path.join(str(tmp_path / "logs"), "plan", "events.*"))
    assert events and glob.glob(os.path.join(str(tmp_path / "logs"), "1_slim", "train", "*"))
    for a, b in zip(before, trained_model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_plan_rejects_bad_plans_before_training(trained_model, train_ds):
    with pytest.raises(CompressionError, match=r"Stage 2 \('cluster'\) comes after stage 1"):
        C.apply_plan(trained_model, ["quantize", "cluster"], train_ds)
    with pytest.raises(CompressionError, match="Unrecognized stage kind='shrink'"):
        C.Stage("shrink")
    with pytest.raises(CompressionError, match=r"Stage 'slim' does not take \['n_clusters'\]"):
        C.Stage("slim", n_clusters=4)
    with pytest.raises(CompressionError, match="precision='mixed_float16' is supported on"):
        C.Stage("prune", precision="mixed_float16")
    with pytest.raises(CompressionError, match="needs student="):
        C.Stage("distill")


def test_plan_mixed_precision_stage_returns_float32_model():
    model = td.models.build_cnn((8, 8, 1), num_classes=3, width=0.125)
    x = np.random.RandomState(0).rand(32, 8, 8, 1).astype("float32") * 255
    y = np.arange(32) % 3
    data = td.tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    student = td.models.build_cnn((8, 8, 1), num_classes=3, width=0.0625)
    result = C.apply_plan(model, [C.Stage("fine_tune", epochs=1, precision="mixed_bfloat16",
                                          optimizer="sgd", lr_schedule="constant"),
                                  C.Stage("distill", student=student, epochs=1,
                                          precision="mixed_bfloat16"),
                                  C.Stage("low_rank", energy=0.5, layers=["dense1"], epochs=1)],
                          data, validation_data=(x, y))
    assert set(C.compute_dtypes(result.model).values()) == {"float32"}
    assert [h["stage"] for h in result.history] == ["baseline", "fine_tune", "distill",
                                                    "low_rank"]
    assert result.history[2]["params"] == student.count_params()
    assert result.history[3]["params"] < result.history[2]["params"]
    assert result.model.predict(x[:2], verbose=0).dtype == np.float32
