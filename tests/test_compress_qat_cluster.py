"""Clustering, selective / pruning-preserving / cluster-preserving QAT, custom layers."""

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import CompressionError

C = td.compress
L = td.keras.layers
from tfdeploy._keras import tfmot  # noqa: E402


def _fit(model, data, steps=12):
    model.compile(td.keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy",
                  ["accuracy"])
    model.fit(data.take(steps), epochs=1, verbose=0, callbacks=C.callbacks(model))
    return model


@pytest.fixture(scope="module")
def clustered(trained_model, train_ds):
    wrapped = C.cluster(trained_model, 16)
    assert C.is_clustering_wrapped(wrapped) and not C.is_clustering_wrapped(trained_model)
    return C.strip(_fit(wrapped, train_ds))


def test_cluster_unique_weights_per_kernel(clustered, trained_model, test_arrays):
    unique = C.unique_weights(clustered)
    assert set(unique) >= {"conv1", "conv2", "conv6", "dense1", "probabilities"}
    assert all(n <= 16 for n in unique.values()), unique
    assert min(C.unique_weights(trained_model).values()) > 16
    x, y = test_arrays
    assert td.verify.accuracy(clustered, x, y) >= td.verify.accuracy(trained_model, x, y) - 0.05


def test_cluster_preserving_qat_to_int8_tflite(clustered, train_ds, test_arrays, tmp_path):
    qat = C.quantize(clustered)
    assert qat._tfdeploy_qat["preserve"] == "cluster"
    qat = _fit(qat, train_ds, steps=8)
    path = td.export.tflite(qat, str(tmp_path / "cqat.tflite"), quantization="int8",
                            representative_data=train_ds.take(2))
    summary = td.verify.weight_summary(path)
    assert summary["dtypes"].get("int8", 0) > 0.9 * sum(
        n for d, n in summary["dtypes"].items() if d != "int32")
    # Cluster-preserving QAT keeps at most 16 distinct int8 values per output channel.
    for tensor in td.verify.weight_tensors(path):
        if tensor["dtype"] == "int8" and tensor["values"].ndim == 4:
            per_channel = [np.unique(c).size for c in tensor["values"]]
            assert max(per_channel) <= 16, tensor["name"]
    x, y = test_arrays
    assert td.verify.accuracy(td.runtime.load(path), x[:200], y[:200]) > 0.8


def _int8_sparsity(qat, train_ds, path):
    path = td.export.tflite(qat, str(path), quantization="int8",
                            representative_data=train_ds.take(2))
    summary = td.verify.weight_summary(path)
    assert summary["dtypes"].get("int8", 0) > 0
    return summary["sparsity"]


def test_pruning_preserving_qat_keeps_zeros_that_default_qat_refills(
        trained_model, train_ds, tmp_path):
    pruned = C.prune(trained_model, 0.6, schedule=C.ConstantSparsity(0.6, unit="step", frequency=1))
    model = C.strip(_fit(pruned, train_ds, steps=4))
    assert C.model_sparsity(model) == pytest.approx(0.6, abs=0.02)
    # A fine-tune strong enough to move pruned weights by more than half an int8 step
    # (Adam moves every weight by ~lr per step): without preservation the zeros refill.
    found = {}
    for preserve in (None, "sparsity"):
        qat = C.quantize(model, preserve=preserve)
        assert qat._tfdeploy_qat["preserve"] == preserve
        qat.compile(td.keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
        qat.fit(train_ds.take(16), epochs=1, verbose=0)
        found[preserve] = _int8_sparsity(qat, train_ds, tmp_path / f"{preserve}.tflite")
    assert found["sparsity"] >= 0.57, found           # the pruned zeros are int8 zeros
    assert found[None] <= found["sparsity"] - 0.2, found  # default QAT measurably refills them


def test_selective_qat_annotates_only_chosen_layers():
    model = td.models.build_cnn((8, 8, 1), num_classes=3, width=0.125)
    qat = C.quantize(model, layers=C.Select(types=L.Dense))
    wrapped = sorted(layer.layer.name for layer in qat.layers if hasattr(layer, "quantize_config"))
    assert {"dense1", "probabilities"} <= set(wrapped)
    assert not [name for name in wrapped if name.startswith("conv")]
    assert C.report(qat).to_dict()["conv3"]["left_out"]["quantized"] == "not selected"


class Scale(L.Layer):
    """A custom layer with a weight and no quantize config."""

    def build(self, input_shape):
        self.scale = self.add_weight("scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale


class NoOpConfig(tfmot().quantization.keras.QuantizeConfig):
    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


def _custom_model():
    inputs = td.keras.Input((6,))
    x = L.Dense(8, name="d1")(inputs)
    x = Scale(name="scale")(x)
    return td.keras.Model(inputs, L.Dense(2, name="d2")(x))


def test_custom_layer_needs_quantize_config():
    model = _custom_model()
    with pytest.raises(CompressionError, match=r"custom layer\(s\) 'scale' \(Scale\)"):
        C.quantize(model)
    qat = C.quantize(model, quantize_configs={"scale": NoOpConfig()})
    wrapped = sorted(layer.layer.name for layer in qat.layers if hasattr(layer, "quantize_config"))
    assert wrapped == ["d1", "d2", "scale"]
    left_out = C.quantize(model, layers=C.Select(exclude=["scale"]))
    assert "scale" not in {getattr(layer, "layer", layer).name for layer in left_out.layers
                           if hasattr(layer, "quantize_config")}
    assert qat.predict(np.ones((2, 6), np.float32), verbose=0).shape == (2, 2)


def test_bad_combinations_and_values():
    model = td.models.build_cnn((8, 8, 1), num_classes=3, width=0.125)
    qat = C.quantize(model)
    with pytest.raises(CompressionError, match="clustering after QAT is not supported"):
        C.cluster(qat, 8)
    with pytest.raises(CompressionError, match="n_clusters must be an integer >= 2"):
        C.cluster(model, 1)
    with pytest.raises(CompressionError, match="Unrecognized init='kmeans'"):
        C.cluster(model, 8, init="kmeans")
    with pytest.raises(CompressionError, match="Unrecognized preserve='zeros'"):
        C.quantize(model, preserve="zeros")
    with pytest.raises(CompressionError, match="already quantization-aware"):
        C.quantize(qat)
    with pytest.raises(CompressionError, match="is quantization-aware; prune the float model"):
        C.prune(qat, 0.5, epochs=1, steps_per_epoch=2)


@pytest.mark.parametrize("init", ["kmeans++", "density", "linear", "random"])
def test_every_centroid_init_bounds_unique_values(init):
    model = td.models.build_cnn((8, 8, 1), num_classes=3, width=0.25)
    wrapped = C.cluster(model, 8, init=init, layers=["conv3", "dense1"])
    x = np.random.RandomState(0).rand(16, 8, 8, 1).astype("float32") * 255
    wrapped.compile(td.keras.optimizers.SGD(1e-3), "sparse_categorical_crossentropy")
    wrapped.fit(x, np.arange(16) % 3, epochs=1, verbose=0)
    unique = C.unique_weights(C.strip(wrapped))
    assert unique["conv3"] <= 8 and unique["dense1"] <= 8
    assert unique["conv4"] > 8  # not selected: untouched
