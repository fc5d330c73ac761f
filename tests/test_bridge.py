"""Keras 3 models in, Keras 3 models out: tfdeploy.bridge and the wrappers that use it."""

import os
import subprocess
import sys

import keras as keras3  # Keras 3, installed alongside tf_keras
import numpy as np
import pytest

import tfdeploy as td
from tfdeploy import bridge
from tfdeploy.cli import main
from tfdeploy.errors import ModelTypeError, UnsupportedLayerError, VerificationError

L = keras3.layers


def cnn():
    """The worked example's CNN shape (Conv-Conv-pool ... Flatten, Dense, softmax), narrow."""
    inputs = keras3.Input((32, 32, 1))
    x = L.Rescaling(1.0 / 255)(inputs)
    for filters in (8, 16):
        x = L.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = L.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = L.MaxPooling2D()(x)
    x = L.BatchNormalization()(x)
    x = L.Flatten()(x)
    x = L.Dropout(0.3)(L.Dense(32, activation="relu")(x))
    return keras3.Model(inputs, L.Dense(10, activation="softmax")(x), name="cnn")


def residual():
    """Residual blocks with separable/depthwise convs, merges and Keras-3-only activations."""
    inputs = keras3.Input((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu6")(inputs)
    y = L.SeparableConv2D(8, 3, padding="same", activation="hard_silu")(x)
    y = L.DepthwiseConv2D(3, padding="same")(y)
    y = L.LayerNormalization()(L.BatchNormalization()(y))
    x = L.Add()([x, y])
    gate = L.Activation("hard_sigmoid")(L.Concatenate()([y, x]))
    z = L.Multiply()([L.Concatenate()([x, y]), gate])
    z = L.AveragePooling2D(2)(L.LeakyReLU()(z))
    z = L.Reshape((-1, 16))(z)
    return keras3.Model(inputs, [L.Dense(3, activation="silu")(L.Flatten()(z)),
                                 L.GlobalMaxPooling1D()(z)], name="residual")


def text():
    """Token ids -> Embedding -> self-attention block -> GRU/LSTM and Conv1D heads."""
    inputs = keras3.Input((12,), dtype="int32")
    e = L.Embedding(64, 16)(inputs)
    a = L.MultiHeadAttention(num_heads=2, key_dim=8)(e, e, use_causal_mask=True)
    a = L.LayerNormalization()(L.Add()([a, e]))
    g = L.LSTM(8)(L.GRU(8, return_sequences=True)(a))
    c = L.GlobalAveragePooling1D()(L.Conv1D(8, 3, activation="gelu")(a))
    return keras3.Model(inputs, L.Dense(3, activation="softmax")(L.Concatenate()([g, c])),
                        name="text")


def normalized():
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(0).normal(5.0, 2.0, (64, 6)).astype(np.float32))
    return keras3.Sequential([keras3.Input((6,)), norm, L.Dense(8, activation="tanh"),
                              L.Dense(2)], name="normalized")


def mobilenet_v2_transfer():
    """A frozen MobileNetV2 base nested inside a transfer model."""
    base = keras3.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35,
                                           include_top=False, weights=None)
    base.trainable = False
    inputs = keras3.Input((32, 32, 3))
    x = base(L.Rescaling(1.0 / 127.5, offset=-1.0)(inputs), training=False)
    x = L.GlobalAveragePooling2D()(x)
    return keras3.Model(inputs, L.Dense(4, activation="softmax")(x), name="transfer")


def mobilenet_v3():
    return keras3.applications.MobileNetV3Small(input_shape=(32, 32, 3), alpha=0.75,
                                                weights=None, classes=4)


def _randomize_batchnorm(model):
    """Non-trivial moving statistics, so a missed BatchNormalization weight shows."""
    rng = np.random.default_rng(1)
    for layer in model._flatten_layers():
        if isinstance(layer, L.BatchNormalization):
            mean, var = layer.moving_mean, layer.moving_variance
            mean.assign(rng.normal(0, 0.5, mean.shape).astype(np.float32))
            var.assign(rng.uniform(0.5, 2.0, var.shape).astype(np.float32))
    return model


def masked_recurrent():
    """Padded token ids: Embedding(mask_zero=True) -> GRU -> LSTM (Keras 3 records NotEqual)."""
    inputs = keras3.Input((10,), dtype="int32")
    x = L.Embedding(40, 8, mask_zero=True)(inputs)
    x = L.GRU(6, return_sequences=True)(x)
    return keras3.Model(inputs, L.Dense(3)(L.LSTM(5)(x)), name="masked_recurrent")


def bidirectional_time_distributed():
    """Masked Bidirectional GRU and LSTM (sequences, then last state) + TimeDistributed Dense."""
    inputs = keras3.Input((10,), dtype="int32")
    x = L.Embedding(40, 8, mask_zero=True)(inputs)
    seq = L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode="sum")(x)
    tags = L.TimeDistributed(L.Dense(3, activation="softmax"))(seq)
    last = L.Dense(2)(L.Bidirectional(L.LSTM(3))(seq))
    return keras3.Model(inputs, [tags, last], name="bidirectional_time_distributed")


FAMILIES = [cnn, residual, text, normalized, mobilenet_v2_transfer, mobilenet_v3,
            masked_recurrent, bidirectional_time_distributed]


@pytest.mark.parametrize("build", FAMILIES, ids=[f.__name__ for f in FAMILIES])
def test_round_trip_keras3_to_keras2_to_keras3_keeps_outputs(build):
    original = _randomize_batchnorm(build())
    k2 = bridge.to_keras2(original)
    assert isinstance(k2, td.keras.Model)
    assert type(k2).__module__.startswith("tf_keras")
    assert sum(w.size for w in k2.get_weights()) == original.count_params()
    x = bridge.random_inputs(original, batch=3, seed=7)  # not the bridge's own inputs
    assert bridge.max_abs_diff(original, k2, x) <= 1e-5
    back = bridge.to_keras3(k2)
    assert isinstance(back, keras3.Model)
    assert bridge.max_abs_diff(original, back, x) <= 1e-5
    assert [w.shape for w in back.get_weights()] == [w.shape for w in original.get_weights()]
    for src, dst in ((original, k2), (k2, back)):  # nested bases stay nested and frozen
        for layer in src.layers:
            if isinstance(layer, (keras3.Model, td.keras.Model)):
                twin = dst.get_layer(layer.name)
                assert len(twin.layers) == len(layer.layers)
                assert twin.trainable == layer.trainable
                assert len(twin.trainable_weights) == len(layer.trainable_weights)


class ScaleBy(L.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor


def test_unsupported_custom_layer_gets_typed_error_naming_it():
    inputs = keras3.Input((4,))
    model = keras3.Model(inputs, L.Dense(2)(ScaleBy(name="scale_it")(inputs)))
    message = "Layer 'scale_it' .*ScaleBy.* cannot be bridged"
    with pytest.raises(UnsupportedLayerError, match=message) as info:
        bridge.to_keras2(model)
    assert info.value.layer == "scale_it" and info.value.class_name == "ScaleBy"
    assert isinstance(info.value, ModelTypeError)
    unknown = keras3.Sequential([keras3.Input((2, 3)), L.Dense(2, activation="log_softmax")])
    with pytest.raises(UnsupportedLayerError, match="activation 'log_softmax'"):
        bridge.to_keras2(unknown)


def test_subclassed_unbuilt_and_wrapped_models_are_refused():
    class Net(keras3.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 3), np.float32))
    with pytest.raises(ModelTypeError, match="subclassed"):
        bridge.to_keras2(net)
    with pytest.raises(ModelTypeError, match="not been built"):
        bridge.to_keras2(keras3.Sequential([L.Dense(2)]))
    small = td.models.build_cnn((8, 8, 1), num_classes=3, width=0.1)
    pruned = td.compress.prune(small, 0.5, schedule="constant", steps_per_epoch=2)
    # every tfmot training wrapper is refused (pruning, clustering, QAT's wrappers and its
    # input QuantizeLayer), named by tfdeploy._tfmot rather than by module path
    for wrapped in (pruned, td.compress.cluster(small, 4), td.compress.quantize(small)):
        with pytest.raises(ModelTypeError, match="strip"):
            bridge.to_keras3(wrapped)


def test_verify_catches_a_numerical_difference(monkeypatch):
    from tfdeploy.bridge import _convert

    model = cnn()
    real = _convert.Converter.copy_weights

    def off_by_a_bit(self):
        real(self)
        _, dst = self.pairs[0]  # the first conv (a softmax ignores a shift of the last layer)
        dst.set_weights([w + 1e-3 for w in dst.get_weights()])

    monkeypatch.setattr(_convert.Converter, "copy_weights", off_by_a_bit)
    with pytest.raises(VerificationError, match="differs from the original"):
        bridge.to_keras2(model)
    assert bridge.to_keras2(model, verify=False) is not None


@pytest.mark.parametrize("build", [masked_recurrent, bidirectional_time_distributed])
def test_masked_recurrent_bidirectional_time_distributed_equal_on_padded_ids(build):
    original = build()
    k2 = bridge.to_keras2(original)
    kinds = {type(layer).__name__ for layer in k2.layers}
    assert "TFOpLambda" not in kinds and kinds >= {"Embedding"}
    ids = bridge.realistic_inputs(original, batch=8, seed=3)[0]
    assert (ids == 0).any() and (ids[:, 0] > 0).all()      # padded rows, none empty
    assert bridge.max_abs_diff(original, k2, [ids]) <= 1e-5
    # the padding really is masked: changing what the padded steps hold changes nothing
    unmasked = ids.copy()
    unmasked[ids == 0] = 7
    out = original(unmasked)
    assert bridge.max_abs_diff(original, k2, [unmasked]) <= 1e-5
    assert not np.allclose(np.asarray(bridge._flat(out)[-1]),
                           np.asarray(bridge._flat(original(ids))[-1]))


def _relu6_model(first):
    inputs = keras3.Input((64,))
    x = first(inputs)
    x = L.Dense(16, activation="relu6", kernel_initializer=keras3.initializers.RandomNormal(
        stddev=1.0, seed=1))(x)
    return keras3.Model(inputs, L.Dense(2)(x))


REAL_RANGE = {"pixels": lambda: _relu6_model(L.Rescaling(1.0 / 255)),
              "normalization": lambda: _relu6_model(L.Normalization(mean=0.0, variance=1e4))}


@pytest.mark.parametrize("name", sorted(REAL_RANGE))
def test_a_wrong_activation_mapping_fails_verification_on_real_range_inputs(name,
                                                                            monkeypatch):
    """relu6 bridged as an unclipped ReLU: equal on standard-normal inputs (they never reach
    6 after rescaling), far apart on pixels 0-255 or on the Normalization's own statistics."""
    from tfdeploy.bridge import _layers

    model = REAL_RANGE[name]()
    assert bridge.to_keras2(model) is not None            # the right mapping passes
    x = bridge.realistic_inputs(model)[0]
    if name == "pixels":
        assert x.min() >= 0 and x.max() <= 255 and x.max() > 200
    else:
        assert 50 < x.std() < 150                          # sqrt(variance) = 100
    monkeypatch.setitem(_layers._EXPAND_TO_KERAS2, "relu6",
                        lambda layers, t, layer_name: layers.ReLU(name=layer_name)(t))
    wrong = bridge.to_keras2(model, verify=False)
    assert bridge.max_abs_diff(model, wrong, bridge.random_inputs(model)) <= 1e-5
    with pytest.raises(VerificationError, match="real-range inputs"):
        bridge.to_keras2(model)


def test_keras3_model_pruned_qat_trained_and_exported_int8_with_keras2_calls(
        train_ds, test_arrays, tmp_path, caplog):
    """The same calls a Keras 2 user makes, given a Keras 3 model."""
    from tfdeploy.compress.sparsity import model_sparsity

    keras3.utils.set_random_seed(0)
    model = cnn()
    with caplog.at_level("WARNING", logger="tfdeploy.bridge"):
        pruned = td.compress.prune(model, target_sparsity=0.5, epochs=2, steps_per_epoch=train_ds,
                                   schedule="constant")
    lines = [r.getMessage() for r in caplog.records if r.name == "tfdeploy.bridge"]
    assert len(lines) == 1 and "Bridged Keras 3 model 'cnn' to Keras 2" in lines[0]
    pruned.compile(td.keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy",
                   ["accuracy"])
    pruned.fit(train_ds, epochs=2, verbose=0, callbacks=td.compress.callbacks(pruned))
    stripped = td.compress.strip(pruned)
    assert model_sparsity(stripped) == pytest.approx(0.5, abs=0.02)
    qat = td.compress.quantize(stripped, calibration_data=train_ds.take(4))
    qat.compile(td.keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy", ["accuracy"])
    qat.fit(train_ds.take(10), epochs=1, verbose=0)
    path = td.export.tflite(qat, str(tmp_path / "k3_int8.tflite"), quantization="int8",
                            representative_data=train_ds, num_calibration=64)
    summary = td.verify.weight_summary(path)
    assert set(summary["dtypes"]) == {"int8", "int32"}  # int8 kernels, int32 biases
    assert summary["sparsity"] == pytest.approx(0.5, abs=0.05)  # the pruning survived
    x, y = test_arrays
    result = td.verify.verify(td.runtime.load(path), qat, x[:300], y[:300])
    assert result["precision"] == "int8" and result["passed"], result["failures"]
    # learned, far above chance (0.1): two short epochs from scratch reach 0.69-0.9 depending on
    # the shared dataset's shuffle order (which tests ran before); fidelity is `passed` above
    assert result["accuracy"] > 0.5


def test_strip_returns_keras3_on_request(trained_model):
    k3 = td.compress.strip(trained_model, keras3=True)
    assert isinstance(k3, keras3.Model)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 1)).astype(np.float32)
    assert bridge.max_abs_diff(trained_model, k3, [x]) <= 1e-5


def test_keras3_file_through_tfdeploy_export_and_verify(trained_model, digits_dir, tmp_path,
                                                        capsys):
    path = str(tmp_path / "digits_k3.keras")
    bridge.to_keras3(trained_model).save(path)
    assert bridge.is_keras3_file(path)
    loaded = td.model_io.load_model(path)
    assert isinstance(loaded, td.keras.Model)
    base = str(tmp_path / "digits")
    assert main(["export", path, "--format", "saved_model", "-o", base, "--num-warmup", "0"]) == 0
    version = capsys.readouterr().out.strip().splitlines()[-1]
    tfl = str(tmp_path / "digits_int8.tflite")
    assert main(["export", path, "--format", "tflite", "--quantization", "int8", "-o", tfl,
                 "--data", digits_dir, "--num-calibration", "32"]) == 0
    capsys.readouterr()
    report = str(tmp_path / "verify.json")
    assert main(["verify", version, tfl, "--model", path, "--data", digits_dir, "--quiet",
                 "--json", report]) == 0
    import json

    with open(report) as f:
        results = json.load(f)
    assert [r["precision"] for r in results] == ["float32", "int8"]
    assert all(r["accuracy"] > 0.9 for r in results)


def test_wrappers_accept_a_keras3_file_path(tmp_path):
    path = str(tmp_path / "residual.keras")
    residual().save(path)
    pruned = td.compress.prune(path, 0.5, schedule="constant", steps_per_epoch=2)
    assert isinstance(pruned, td.keras.Model)


def test_process_whose_tf_keras_is_already_keras3_can_train_and_export(tmp_path):
    """tf.keras resolved to Keras 3 before tfdeploy: tfdeploy's training code still works."""
    code = f"""
import os
os.environ.pop("TF_USE_LEGACY_KERAS", None)
import numpy as np
import tensorflow as tf
inputs = tf.keras.Input((8, 8, 1))                      # tf.keras is Keras 3 here
x = tf.keras.layers.Conv2D(4, 3, activation="relu")(inputs)
model = tf.keras.Model(inputs, tf.keras.layers.Dense(3)(tf.keras.layers.Flatten()(x)))
assert tf.keras.__version__.startswith("3.")
import tfdeploy as td
pruned = td.compress.prune(model, 0.5, schedule="constant", epochs=1, steps_per_epoch=2)
pruned.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
x = np.random.default_rng(0).uniform(size=(8, 8, 8, 1)).astype("float32")
y = np.arange(8) % 3
pruned.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=td.compress.callbacks(pruned))
qat = td.compress.quantize(td.compress.strip(pruned), calibration_data=x)
path = td.export.tflite(qat, {str(tmp_path / "m.tflite")!r}, quantization="int8",
                        representative_data=x)
assert tf.keras.__version__.startswith("3.")
again = td.compress.prune(model, 0.5, schedule="constant", steps_per_epoch=2)
back = td.compress.strip(again, keras3=True)
assert type(back).__module__.startswith("keras."), type(back)
print("OK", os.path.getsize(path))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("OK")
