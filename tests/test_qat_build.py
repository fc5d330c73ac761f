"""`quantize` builds its QAT model with `_tfmot.quantize_layers` (tfmot's ``quantize_apply``
steps, run once on the unannotated model); tfmot's public path (annotate the layers in a clone,
then ``quantize_apply``: three more rebuilds of the graph) must give the very same model: the
same config (layer types, names, quantize configs), bitwise the same weights, the same outputs,
and after a training step the same weights again."""

import warnings

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy import _tfmot
from tfdeploy._keras import tfmot
from tfdeploy.compress import Select, qat as qat_module
from tfdeploy.models import build_cnn, build_mobilenet

C = td.compress
L = td.keras.layers
qk = tfmot().quantization.keras


class Scale(L.Layer):
    """A custom layer with a weight: tfmot has no config for it."""

    def build(self, input_shape):
        self.scale = self.add_weight("scale", input_shape[-1:], initializer="ones")

    def call(self, x):
        return x * self.scale


class ScaleConfig(qk.QuantizeConfig):
    """Fake-quantizes `Scale`'s weight to ``bits`` and its output to 8 bits."""

    def __init__(self, bits=8):
        self.bits = bits

    def get_weights_and_quantizers(self, layer):
        return [(layer.scale, qk.quantizers.LastValueQuantizer(
            num_bits=self.bits, per_axis=False, symmetric=True, narrow_range=False))]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        layer.scale = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [qk.quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self):
        return {"bits": self.bits}


def _cnn():
    td.keras.utils.set_random_seed(1)
    return build_cnn((32, 32, 1), 10, width=0.25)


def _sparse(model):
    """Half of every kernel set to zero (the smallest magnitudes), as pruning leaves it."""
    for layer in model.layers:
        if type(layer).__name__ in ("Conv2D", "Dense"):
            weights = layer.get_weights()
            kernel = weights[0]
            kernel[np.abs(kernel) < np.median(np.abs(kernel))] = 0
            layer.set_weights(weights)
    return model


def _custom():
    td.keras.utils.set_random_seed(2)
    inputs = td.keras.Input((12,))
    x = L.Dense(16, activation="relu", name="d1")(inputs)
    x = Scale(name="scale")(x)
    x = L.Dense(16, name="d2")(x)
    return td.keras.Model(inputs, L.Dense(4, activation="softmax", name="d3")(x))


def _mobilenet(arch):
    td.keras.utils.set_random_seed(3)
    return build_mobilenet((32, 32, 1), 5, arch=arch, alpha=0.35)


def _case(name):
    """``(model, quantize keyword arguments)`` for each case."""
    if name == "cnn":
        return _cnn(), {}
    if name in ("v2", "v3_small", "v3_large"):
        return _mobilenet(name), {}
    if name == "sparsity":
        return _sparse(_cnn()), {"preserve": "sparsity"}
    if name == "cluster":
        return C.strip(C.cluster(_cnn(), 8)), {}  # "auto" picks "cluster"
    if name == "cluster_sparsity":
        return C.strip(C.cluster(_sparse(_cnn()), 8)), {}
    if name == "precision_map":
        return _cnn(), {"precision_map": {"conv2": "float", "conv5": "float", "dense1": "int8"}}
    if name == "select":
        return _cnn(), {"layers": Select(types=L.Conv2D, skip_first=True)}
    if name == "custom_configs":
        from tensorflow_model_optimization.python.core.quantization.keras.default_8bit \
            import default_8bit_quantize_registry as registry

        dense = registry.Default8BitQuantizeConfig(["kernel"], ["activation"], False)
        return _custom(), {"quantize_configs": {"scale": ScaleConfig(bits=4), "d2": dense}}
    raise AssertionError(name)


def _build(model, kwargs, monkeypatch, public):
    """``quantize(model, **kwargs)`` with tfmot's public path or ours, from the same name
    counters (Keras numbers unnamed layers per session: ``quantize_layer_1``...)."""
    monkeypatch.setattr(qat_module, "quantize_layers", _tfmot.quantize_apply_annotated
                        if public else _tfmot.quantize_layers)
    td.keras.backend.reset_uids()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MobileNetV3's float fallback, said in both
        return C.quantize(model, **kwargs)


def _data(model, n=16):
    rng = np.random.default_rng(0)
    shape = (n,) + tuple(model.input_shape[1:])
    x = rng.uniform(0, 255, shape) if len(shape) == 4 else rng.normal(size=shape)
    classes = model.output_shape[-1]
    return x.astype("float32"), rng.integers(0, classes, n)


def _assert_same(public, ours, x):
    assert ours.get_config() == public.get_config()
    assert [w.name for w in ours.weights] == [w.name for w in public.weights]
    differ = [w.name for w, v in zip(ours.weights, public.weights)
              if not np.array_equal(w.numpy(), v.numpy())]
    assert differ == []
    np.testing.assert_array_equal(ours(x, training=False).numpy(),
                                  public(x, training=False).numpy())


def _train_step(model, x, y):
    """One Adam step in eager mode (as `fit` would take it, without tracing a function)."""
    td.keras.utils.set_random_seed(4)
    loss = td.keras.losses.SparseCategoricalCrossentropy()
    optimizer = td.keras.optimizers.Adam(1e-3)
    with td.tf.GradientTape() as tape:
        value = loss(y, model(x, training=True))
    optimizer.apply_gradients(zip(tape.gradient(value, model.trainable_weights),
                                  model.trainable_weights))
    return float(value)


CASES = ["cnn", "v2", "v3_large", "sparsity", "cluster", "cluster_sparsity",
         "precision_map", "select", "custom_configs"]


@pytest.mark.parametrize("case", CASES)
def test_quantize_builds_the_model_tfmot_public_quantize_apply_builds(case, monkeypatch):
    model, kwargs = _case(case)
    x, y = _data(model)
    public = _build(model, kwargs, monkeypatch, public=True)
    ours = _build(model, kwargs, monkeypatch, public=False)
    assert any(_tfmot.is_quantize_wrapper(layer) for layer in ours.layers)
    assert ours._tfdeploy_qat == public._tfdeploy_qat
    assert C.history(ours) == C.history(public)
    _assert_same(public, ours, x)
    before = [w.numpy() for w in ours.trainable_weights]
    assert _train_step(ours, x, y) == _train_step(public, x, y)
    assert any(not np.array_equal(w.numpy(), v) for w, v in zip(ours.trainable_weights, before))
    _assert_same(public, ours, x)


def test_custom_configs_are_per_layer_copies_and_the_model_is_left_as_it_was():
    """Each layer gets its own copy of a custom config (tfmot's clone of the annotate
    wrapper serialized it), and the model quantize_layers reads keeps its config."""
    model, kwargs = _case("custom_configs")
    before = model.get_config()
    config = kwargs["quantize_configs"]["scale"]
    qat = C.quantize(model, **kwargs)
    by_name = {layer.layer.name: layer for layer in qat.layers
               if _tfmot.is_quantize_wrapper(layer)}
    assert type(by_name["scale"].quantize_config) is ScaleConfig
    assert by_name["scale"].quantize_config is not config
    assert by_name["scale"].quantize_config.bits == 4
    assert model.get_config() == before and "use_legacy_config" not in model.__dict__
    flat = C.flatten(model)
    with qk.quantize_scope({"Scale": Scale}):
        _tfmot.quantize_layers(flat, ["d1"])
    assert "use_legacy_config" not in flat.__dict__


def test_quantize_layers_says_what_tfmot_says_for_nothing_or_an_unsupported_layer():
    model = C.flatten(_custom())
    with pytest.raises(ValueError, match="no layers to quantize"):
        _tfmot.quantize_layers(model, [])
    with pytest.raises(RuntimeError, match="Layer scale.*is not supported"), \
            qk.quantize_scope({"Scale": Scale}):
        _tfmot.quantize_layers(model, ["scale"])


def test_off_the_checked_tfmot_versions_quantize_layers_takes_tfmot_public_path(monkeypatch):
    public = _tfmot.quantize_apply_annotated
    calls = []

    def counted(*args):
        calls.append(args[1])
        return public(*args)

    monkeypatch.setattr(_tfmot, "quantize_apply_annotated", counted)
    model = C.flatten(_custom())
    with qk.quantize_scope({"Scale": Scale}):
        _tfmot.quantize_layers(model, ["d1"])
        assert calls == []
        monkeypatch.setattr(_tfmot, "_checked", [False])  # check_version found another one
        qat = _tfmot.quantize_layers(model, ["d1"])
    assert calls == [["d1"]]
    assert [layer.layer.name for layer in qat.layers if _tfmot.is_quantize_wrapper(layer)] == [
        "d1"]
