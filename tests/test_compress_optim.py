"""Fine-tuning optimizers and schedules; mixed-precision policies with a float32 boundary."""

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import CompressionError

C = td.compress


@pytest.mark.parametrize("name,cls,rate", [("adam", "Adam", 1e-4), ("sgd", "SGD", 1e-3),
                                           ("adagrad", "Adagrad", 1e-3),
                                           ("rmsprop", "RMSprop", 1e-4)])
def test_optimizer_by_name_defaults_to_fine_tune_rate(name, cls, rate):
    opt = C.optimizer(name)
    assert type(opt).__name__ == cls
    assert float(opt.learning_rate.numpy()) == pytest.approx(rate)
    assert rate < C.fine_tune_rate(name, factor=1.0)  # lower than the usual training rate


def test_optimizer_object_is_copied_and_rescheduled():
    base = td.keras.optimizers.SGD(0.05, momentum=0.9)
    copy = C.optimizer(base)
    assert copy is not base and copy.get_config()["momentum"] == pytest.approx(0.9)
    scheduled = C.optimizer(base, 0.01, "warmup_cosine", total_steps=50)
    assert type(scheduled) is type(base)
    assert scheduled.get_config()["learning_rate"]["class_name"] == "WarmupCosine"
    assert base.get_config()["learning_rate"] == pytest.approx(0.05)


def test_warmup_cosine_shape():
    sched = C.WarmupCosine(1e-3, total_steps=100, warmup_steps=10, floor=0.1)
    rates = np.array([float(sched(s)) for s in range(100)])
    assert np.all(np.diff(rates[:10]) > 0) and rates[9] == pytest.approx(1e-3)
    assert np.all(np.diff(rates[10:]) <= 1e-12)
    assert rates[-1] == pytest.approx(1e-4, rel=0.05)
    assert C.WarmupCosine(**sched.get_config()).get_config() == sched.get_config()


def test_optimizer_errors():
    with pytest.raises(CompressionError, match="Unrecognized optimizer='lion'"):
        C.optimizer("lion")
    with pytest.raises(CompressionError, match="Unrecognized schedule='step'"):
        C.optimizer("adam", lr_schedule="step", total_steps=10)
    with pytest.raises(CompressionError, match="needs the number of training steps"):
        C.optimizer("adam", lr_schedule="cosine")
    with pytest.raises(CompressionError, match="learning_rate must be a positive number"):
        C.optimizer("adam", -1.0)


@pytest.mark.parametrize("policy,dtype", [("mixed_float16", "float16"),
                                          ("mixed_bfloat16", "bfloat16")])
def test_mixed_precision_keeps_float32_boundary(policy, dtype):
    model = td.models.build_cnn((8, 8, 1), num_classes=3, width=0.125)
    mixed = C.with_policy(model, policy)
    dtypes = C.compute_dtypes(mixed)
    assert dtypes["conv2"] == dtype and dtypes["probabilities"] == "float32"
    assert C.compute_dtypes(model)["conv2"] == "float32"  # input untouched
    x = np.random.RandomState(0).rand(8, 8, 8, 1).astype("float32") * 255
    mixed.compile(C.optimizer("adam", 1e-3), "sparse_categorical_crossentropy")
    mixed.fit(x, np.arange(8) % 3, epochs=1, verbose=0)
    assert mixed.predict(x, verbose=0).dtype == np.float32
    back = C.to_float32(mixed)
    assert set(C.compute_dtypes(back).values()) == {"float32"}
    np.testing.assert_allclose(back.predict(x, verbose=0), mixed.predict(x, verbose=0), atol=0.05)
    with pytest.raises(CompressionError, match="Unrecognized policy='float8'"):
        C.with_policy(model, "float8")


def test_mixed_model_exports_with_float32_boundary(tmp_path):
    mixed = C.with_policy(td.models.build_cnn((8, 8, 1), num_classes=3, width=0.125),
                          "mixed_float16")
    path = td.export.tflite(C.to_float32(mixed), str(tmp_path / "mp.tflite"))
    runner = td.runtime.load(path)
    assert [io[2] for io in runner.inputs + runner.outputs] == ["float32", "float32"]
    x = np.random.RandomState(0).rand(2, 8, 8, 1).astype("float32") * 255
    np.testing.assert_allclose(runner.predict(x), mixed.predict(x, verbose=0), atol=0.02)
