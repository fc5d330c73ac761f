"""Memory planning: parameters by dtype, activations, optimizer state, budget; vs measured."""

import os

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import DataError
from tfdeploy.verify import MemoryBudgetError
from tfdeploy.verify.benchmark import _reset_peak, peak_rss_bytes, rss_bytes
from tfdeploy.verify.memory import parse_bytes


def test_params_by_dtype_and_activations_by_hand():
    inputs = td.keras.Input((10,))
    hidden = td.keras.layers.Dense(20, name="f32")(inputs)            # 10*20+20 float32
    outputs = td.keras.layers.Dense(5, dtype="float16", name="f16")(hidden)  # 20*5+5 float16
    model = td.keras.Model(inputs, outputs)
    est = td.verify.estimate(model, batch_size=8, optimizer="adam")
    assert est.params_by_dtype == {"float32": {"count": 220, "bytes": 880},
                                   "float16": {"count": 105, "bytes": 210}}
    assert est.n_params == model.count_params() == 325
    # peak: the f32 layer's input (8x10) and output (8x20) in float32 live together
    assert est.activation_bytes == max(8 * (10 + 20) * 4, 8 * 20 * 2 + 8 * 5 * 2)
    assert est.stored_activation_bytes == 8 * 20 * 4 + 8 * 5 * 2
    assert est.optimizer_bytes == 2 * est.trainable_bytes == 2 * 1090
    assert est.training_bytes == 1090 * 4 + est.stored_activation_bytes
    sgd = td.verify.estimate(model, batch_size=8, optimizer=td.keras.optimizers.SGD(momentum=0.9))
    assert sgd.optimizer == "momentum" and sgd.optimizer_bytes == 1090


def test_skip_connections_keep_their_source_alive():
    L = td.keras.layers
    inputs = td.keras.Input((6, 6, 2))
    skip = L.Conv2D(8, 1, name="skip")(inputs)
    wide = L.Conv2D(64, 1, name="wide")(skip)
    back = L.Conv2D(8, 1, name="back")(wide)
    joined = L.Add(name="join")([skip, back])  # ``skip`` lives through wide and back
    model = td.keras.Model(inputs, L.GlobalAveragePooling2D()(joined))
    unit = 4 * 36 * 4  # batch 4 x 6x6 positions x float32, per channel
    est = td.verify.estimate(model, batch_size=4)
    # at "back": skip (8) + its input wide (64) + its output (8) are live together; a
    # layer-by-layer count (inputs + outputs of one layer) tops out at 64 + 8
    assert est.activation_bytes == (8 + 64 + 8) * unit
    assert est.uncounted_layers == {}


def test_layers_of_unknown_size_are_named_not_skipped_silently():
    inputs = td.keras.Input((None, 3), name="tokens")
    model = td.keras.Model(inputs, td.keras.layers.Dense(4, name="proj")(inputs))
    est = td.verify.estimate(model, batch_size=2)
    assert set(est.uncounted_layers) == {"tokens", "proj"}
    assert "unknown dimensions" in est.uncounted_layers["proj"]
    with pytest.raises(MemoryBudgetError, match=r"Not counted \(unknown sizes\): \['proj', "
                                                r"'tokens'\]"):
        est.check(budget=1, mode="inference")


def test_budget_check_raises_with_the_numbers(trained_model):
    est = td.verify.estimate(trained_model, batch_size=1024)
    need = est.training_bytes
    assert est.usage(budget=2 * need, mode="training") == pytest.approx(0.5)
    assert est.check(budget=need, mode="training") == pytest.approx(1.0)
    with pytest.raises(MemoryBudgetError,
                       match=r"Training needs [\d.,]+ MiB but the budget is 1.0 MiB "
                             r"\(\d+% of it\): parameters 1.7 MiB, gradients 1.7 MiB, adam state "
                             r"3.3 MiB, stored activations [\d.,]+ MiB \(batch 1024\)"):
        est.check(budget="1MiB", mode="training")
    with pytest.raises(MemoryError, match="Inference needs .* activations .*batch 1024"):
        td.verify.check_memory(trained_model, budget=100_000, batch_size=1024)
    assert parse_bytes("2GiB") == 2 ** 31 and parse_bytes("512 MB") == 512 * 10 ** 6
    with pytest.raises(DataError, match="Cannot read a memory size from 'lots'"):
        parse_bytes("lots")
    with pytest.raises(DataError, match="Unrecognized mode='serving'"):
        est.total("serving")


@pytest.fixture(scope="module")
def f32_tflite(trained_model, tmp_path_factory):
    return td.export.tflite(trained_model, str(tmp_path_factory.mktemp("mem") / "f32.tflite"))


def test_parameter_estimate_matches_exported_files(trained_model, f32_tflite, tmp_path):
    est = td.verify.estimate(trained_model)
    f32 = f32_tflite
    f16 = td.export.tflite(trained_model, str(tmp_path / "f16.tflite"), quantization="float16")
    # the file is the weights plus a small graph description
    assert 1.0 <= os.path.getsize(f32) / est.param_bytes < 1.05
    assert 1.0 <= os.path.getsize(f16) / (est.param_bytes / 2) < 1.05


def test_activation_estimate_vs_measured_tflite_arena(trained_model, f32_tflite):
    """LiteRT plans its arena by tensor liveness, as the estimate does: measure its growth."""
    runner = td.runtime.load(f32_tflite)
    runner.predict(np.zeros((1, 32, 32, 1), np.float32))
    x = np.random.default_rng(0).uniform(0, 255, (1024, 32, 32, 1)).astype(np.float32)
    before = rss_bytes()
    assert _reset_peak()
    runner.predict(x)  # resizes to batch 1024: a fresh arena
    measured = peak_rss_bytes() - before
    estimated = td.verify.estimate(trained_model, batch_size=1024).activation_bytes
    assert 0.8 < measured / estimated < 1.6, (measured, estimated)


def test_optimizer_estimate_matches_measured_slots(trained_model):
    model = td.keras.models.clone_model(trained_model)
    model.compile(td.keras.optimizers.Adam(), "sparse_categorical_crossentropy")
    model.train_on_batch(np.zeros((2, 32, 32, 1), np.float32), np.zeros(2))
    slots = [v for v in model.optimizer.variables() if len(v.shape)]
    measured = sum(int(np.prod(v.shape)) * v.dtype.size for v in slots)
    assert td.verify.estimate(model, optimizer=model.optimizer).optimizer_bytes == measured
