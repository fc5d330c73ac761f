"""Magnitude pruning inside model.fit: sparsity read back from weights, callbacks, errors."""

import copy
import glob

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import CompressionError


def _tiny(seed=0):
    td.tf.random.set_seed(seed)
    k = td.keras
    inputs = k.Input((8, 8, 1))
    x = k.layers.Rescaling(1 / 255.0)(inputs)
    x = k.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = k.layers.Flatten()(x)
    x = k.layers.Dense(32, activation="relu", name="hidden")(x)
    outputs = k.layers.Dense(3, activation="softmax", name="out")(x)
    return k.Model(inputs, outputs)


def _data(n=96, batch=16):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (n, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, n)
    return td.tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _fit(model, ds, epochs, cbs):
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    return model.fit(ds, epochs=epochs, callbacks=cbs, verbose=0)


def _kernels(model):
    return {layer.name: layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")}


def test_short_fit_reaches_target_sparsity():
    """6 steps per epoch x 2 epochs: tfmot's default frequency=100 would never prune."""
    ds = _data()
    base = _tiny()
    before = {k: v.copy() for k, v in _kernels(base).items()}
    pruned = td.compress.prune(base, 0.8, epochs=2, steps_per_epoch=ds)
    assert pruned._tfdeploy_pruning["frequency"] < 100
    _fit(pruned, ds, 2, td.compress.callbacks(pruned))
    stripped = td.compress.strip(pruned)
    assert not td.compress.is_pruning_wrapped(stripped)
    for name, kernel in _kernels(stripped).items():
        assert abs(np.mean(kernel == 0) - 0.8) <= 0.01, name
    assert abs(td.compress.model_sparsity(stripped) - 0.8) <= 0.01
    # the input model was not touched
    for name, kernel in _kernels(base).items():
        np.testing.assert_array_equal(kernel, before[name])
        assert np.mean(kernel == 0) < 0.05


def test_constant_schedule_in_steps_and_layer_selection():
    ds = _data()
    schedule = td.compress.ConstantSparsity(0.5, begin=0, unit="step")
    pruned = td.compress.prune(_tiny(), schedule=schedule, layers=["hidden"], epochs=1,
                               steps_per_epoch=6)
    assert pruned._tfdeploy_pruning["layers"] == ["hidden"]
    _fit(pruned, ds, 1, td.compress.callbacks(pruned))
    sparsity = td.compress.sparsity_by_layer(td.compress.strip(pruned))
    assert abs(sparsity["hidden"] - 0.5) <= 0.01
    assert sparsity["conv"] < 0.05 and sparsity["out"] < 0.05


def test_select_layers_by_type():
    pruned = td.compress.prune(_tiny(), 0.5, layers=[td.keras.layers.Conv2D], epochs=1,
                               steps_per_epoch=6)
    assert pruned._tfdeploy_pruning["layers"] == ["conv"]


def test_polynomial_schedule_in_epochs_resolves_to_steps():
    schedule = td.compress.PolynomialDecay(0.7, begin=1, end=3, unit="epoch")
    pruned = td.compress.prune(_tiny(), schedule=schedule, epochs=4, steps_per_epoch=10)
    info = pruned._tfdeploy_pruning
    assert info["begin_step"] == 10
    assert info["end_step"] == 30 and (30 - 10) % info["frequency"] == 0
    cfg = schedule.get_config()
    assert td.compress.PolynomialDecay.from_config(cfg) == schedule


def test_callbacks_survive_deepcopy_and_second_fit(tmp_path):
    ds = _data()
    pruned = td.compress.prune(_tiny(), 0.6, epochs=3, steps_per_epoch=ds)
    cbs = td.compress.callbacks(pruned, log_dir=str(tmp_path / "logs"))
    assert [type(c).__name__ for c in cbs] == ["PruningStep", "SparsityMonitor", "TraceOnce"]
    h1 = _fit(pruned, ds, 1, cbs)
    copies = copy.deepcopy(cbs)
    assert copies[1].get_config() == {"log_dir": str(tmp_path / "logs")}
    assert copies[0].model is None if hasattr(copies[0], "model") else True
    # second fit with the same instances continues the schedule from the optimizer step
    h2 = pruned.fit(ds, epochs=2, callbacks=cbs, verbose=0)
    assert h2.history["sparsity"][-1] > h1.history["sparsity"][-1]
    assert abs(h2.history["sparsity"][-1] - 0.6) <= 0.01
    # a deep copy works on a fresh fit too
    other = td.compress.prune(_tiny(1), 0.6, epochs=1, steps_per_epoch=ds)
    h3 = _fit(other, ds, 1, copy.deepcopy(cbs))
    assert "sparsity/hidden" in h3.history
    # sparsity scalars reached TensorBoard
    assert glob.glob(str(tmp_path / "logs" / "sparsity" / "events.out.tfevents.*"))


def _fit_traced(model, data, cbs, epochs=2):
    """``fit`` a seed-0 model with ``cbs``: (train-step traces, histories of two fits,
    optimizer variable names, weights)."""
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    first = model.fit(*data, epochs=epochs, callbacks=cbs, verbose=0).history
    second = model.fit(*data, epochs=1, callbacks=cbs, verbose=0).history
    return (model.train_function.experimental_get_tracing_count(), first, second,
            [v.name for v in model.optimizer.variables], model.get_weights())


@pytest.mark.parametrize("kind", ["pruned", "quantized"])
def test_callbacks_trace_the_train_step_once_with_the_same_training(kind):
    """Keras creates the optimizer's slots and the metrics' variables in the first trace of the
    train step, and a tf.function whose first trace creates variables is traced again: a fit
    traced twice. `TraceOnce` (in ``callbacks()``) creates them first: one trace, the same
    variables, logs and weights, for a dataset and for arrays, and across a second fit."""
    ds = _data()
    x, y = [np.concatenate(a) for a in zip(*ds.as_numpy_iterator())]
    for data in ((ds,), (x, y)):
        runs = []
        for once in (False, True):
            td.keras.utils.set_random_seed(0)
            if kind == "pruned":
                model = td.compress.prune(_tiny(), 0.6, epochs=2, steps_per_epoch=ds)
            else:
                model = td.compress.quantize(_tiny())
            cbs = td.compress.callbacks(model)
            if not once:
                cbs = [c for c in cbs if not isinstance(c, td.compress.TraceOnce)]
            runs.append(_fit_traced(model, data, cbs))
        (traces, *rest, weights), (traces_1, *rest_1, weights_1) = runs
        assert (traces, traces_1) == (2, 1)
        assert rest_1 == rest and "sparsity" in rest[0]
        assert all(np.array_equal(a, b) for a, b in zip(weights_1, weights))


def test_sparsity_published_per_layer_in_logs():
    ds = _data()
    pruned = td.compress.prune(_tiny(), 0.5, epochs=2, steps_per_epoch=ds)
    h = _fit(pruned, ds, 2, td.compress.callbacks(pruned))
    for name in ("conv", "hidden", "out"):
        assert abs(h.history[f"sparsity/{name}"][-1] - 0.5) <= 0.02


def test_bad_sparsity_and_selection():
    with pytest.raises(CompressionError, match=r"target_sparsity must be a fraction in \[0, 1\)"):
        td.compress.prune(_tiny(), 80, epochs=1, steps_per_epoch=10)
    with pytest.raises(CompressionError, match="No layer matches 'dense_99'.*Layers in this"):
        td.compress.prune(_tiny(), 0.5, layers=["dense_99"], epochs=1, steps_per_epoch=10)
    with pytest.raises(CompressionError, match="Unrecognized schedule='cubic'"):
        td.compress.prune(_tiny(), 0.5, schedule="cubic", epochs=1, steps_per_epoch=10)
    with pytest.raises(CompressionError, match="expressed in epochs; pass steps_per_epoch"):
        td.compress.prune(_tiny(), 0.5, epochs=1)
    with pytest.raises(CompressionError,
                       match=r"No layer of model .* was selected for pruning.*Flatten has no"):
        td.compress.prune(_tiny(), 0.5, layers=["flatten*"], epochs=1, steps_per_epoch=10)


def test_pruning_twice_needs_strip():
    pruned = td.compress.prune(_tiny(), 0.5, epochs=1, steps_per_epoch=10)
    with pytest.raises(CompressionError, match="already wrapped for pruning.*strip"):
        td.compress.prune(pruned, 0.5, epochs=1, steps_per_epoch=10)
