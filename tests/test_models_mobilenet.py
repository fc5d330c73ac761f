"""MobileNet transfer builder, FineTune callback and pipeline-only augmentation on real models."""

import os

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import DataError, ModelTypeError, WeightsUnavailableError
from tfdeploy.models import FineTune, build_mobilenet, save_base_weights

keras = td.keras


def _small(arch="v2", classes=10, **kw):
    return build_mobilenet((32, 32, 1), classes, arch=arch,
                           alpha=0.25 if arch == "v1" else 0.35, **kw)


@pytest.mark.parametrize("arch", ["v1", "v2", "v3_small", "v3_large"])
def test_every_family_builds_frozen_with_preprocessing_inside(arch):
    model = _small(arch)
    base = model.get_layer(td.models.base_layer_name(model))
    assert not base.trainable and not base.trainable_weights
    assert {w.name for w in model.trainable_weights} == {
        w.name for w in model.get_layer("probabilities").weights}
    # raw pixels in: preprocess (x/127.5 - 1) and grayscale->RGB are layers of the model
    raw = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    rgb = np.repeat(raw / 127.5 - 1.0, 3, axis=-1)
    pooled = np.mean(base(rgb, training=False).numpy(), axis=(1, 2))
    head = model.get_layer("probabilities")
    expected = head(pooled).numpy()
    np.testing.assert_allclose(model(raw).numpy(), expected, atol=1e-5)
    flat = td.compress.flatten(model)
    assert not td.compress.is_nested(flat) and len(flat.layers) > 50
    np.testing.assert_allclose(flat(raw).numpy(), expected, atol=1e-5)


def test_bad_arguments_are_typed_errors(tmp_path):
    with pytest.raises(ModelTypeError, match="Supported architectures"):
        build_mobilenet((32, 32, 1), arch="resnet")
    with pytest.raises(ModelTypeError, match="at least 32x32"):
        build_mobilenet((16, 16, 1))
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_mobilenet((32, 32, 1), weights=str(tmp_path / "none.h5"))


def test_weights_loaded_from_a_path_equal_the_saved_ones(tmp_path):
    source = _small("v2", classes=5)
    rng = np.random.default_rng(1)
    base = source.get_layer(td.models.base_layer_name(source))
    base.set_weights([w + rng.normal(0, 0.01, w.shape).astype(w.dtype)
                      for w in base.get_weights()])
    path = save_base_weights(source, str(tmp_path / "base.h5"))
    loaded = _small("v2", classes=3, weights=path)
    got = loaded.get_layer(td.models.base_layer_name(loaded)).get_weights()
    assert len(got) == len(base.get_weights())
    for a, b in zip(got, base.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_offline_imagenet_names_the_keras_cache_file(tmp_path, monkeypatch):
    from urllib.error import URLError

    from tf_keras.src.utils import data_utils

    asked = []

    def no_network(url, *args, **kwargs):
        asked.append(url)
        raise URLError("no network")

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(data_utils, "urlretrieve", no_network)
    expected = td.models.imagenet_weights_file("mobilenet_v2", 0.35, 96)
    with pytest.raises(WeightsUnavailableError) as info:
        build_mobilenet((96, 96, 3), arch="v2", alpha=0.35, weights="imagenet")
    message = str(info.value)
    assert os.path.basename(asked[0]) == expected
    assert os.path.join(str(tmp_path), ".keras", "models", expected) in message
    assert "pass a local weights file" in message


def test_finetune_unfreezes_top_layers_keeps_bn_in_inference_and_runs_with_pruning(train_ds):
    model = _small("v2", classes=10)
    pruned = td.compress.prune(model, 0.5, epochs=2, steps_per_epoch=3)
    _, every = td.models.base_layers(pruned)
    top = {id(layer) for layer in every[-12:]}
    base = [layer for layer in every if layer.weights]
    names = [getattr(layer, "layer", layer).name for layer in base]
    assert not any(layer.trainable for layer in base)

    by_name = {getattr(layer, "layer", layer).name: getattr(layer, "layer", layer)
               for layer in pruned.layers}
    inner = by_name.__getitem__
    bn = [inner(n) for n in names if isinstance(inner(n), keras.layers.BatchNormalization)]
    top_conv, low_conv = inner("Conv_1"), inner("block_1_expand")
    stats = [(b.moving_mean.numpy().copy(), b.moving_variance.numpy().copy()) for b in bn]
    kernels = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            kernels.append((top_conv.kernel.numpy().copy(), low_conv.kernel.numpy().copy()))

    # random-init MobileNet activations (and gradients) are tiny: a tiny epsilon makes Adam's
    # steps lr-sized wherever the gradient is not exactly zero
    pruned.compile(keras.optimizers.Adam(1e-2, epsilon=1e-12), "sparse_categorical_crossentropy",
                   ["accuracy"])
    start = top_conv.kernel.numpy().copy()
    fine = FineTune(at_epoch=1, unfreeze=12, lr_factor=0.1)
    history = pruned.fit(train_ds.take(3), epochs=2, verbose=0,
                         callbacks=td.compress.callbacks(pruned) + [fine, Record()])
    # the new optimizer's slots were built when it was swapped in: the new train step was
    # traced once, not twice (Keras alone creates them in its first trace)
    assert pruned.train_function.experimental_get_tracing_count() == 1
    # per-layer state: the last 12 base layers minus BatchNorm are trainable, the rest frozen
    for layer in base:
        is_bn = isinstance(getattr(layer, "layer", layer), keras.layers.BatchNormalization)
        assert layer.trainable == (id(layer) in top and not is_bn), layer.name
    assert set(fine.unfrozen) == {layer.name for layer in base
                                  if id(layer) in top and layer.trainable}
    assert "Conv_1" in " ".join(fine.unfrozen) and len(fine.unfrozen) >= 3
    # epoch 0: base frozen (the pruning mask alone zeroes weights); epoch 1: the top conv trains
    np.testing.assert_array_equal(kernels[0][0], start * (kernels[0][0] != 0))
    moved = (kernels[1][0] != kernels[0][0]) & (kernels[1][0] != 0)
    assert moved.mean() > 0.2
    # a low conv stays frozen in both epochs, yet the pruning reaches it inside the base
    np.testing.assert_array_equal(kernels[1][1], kernels[0][1] * (kernels[1][1] != 0))
    assert np.mean(kernels[1][1] == 0) > 0.3
    # BatchNorm moving statistics did not move in either epoch
    for b, (mean, var) in zip(bn, stats):
        np.testing.assert_array_equal(b.moving_mean.numpy(), mean)
        np.testing.assert_array_equal(b.moving_variance.numpy(), var)
    h = history.history
    assert h["fine_tune/trainable_layers"] == [0.0, float(len(fine.unfrozen))]
    assert h["fine_tune/learning_rate"][1] == pytest.approx(1e-3, rel=1e-5)
    assert h["fine_tune/trainable_params"][1] > h["fine_tune/trainable_params"][0]
    assert h["sparsity"][-1] > 0.3


def test_finetune_from_named_layer_on_the_nested_model(train_ds):
    model = _small("v2", classes=10)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    fine = FineTune(at_epoch=0, from_layer="block_16_expand", learning_rate=1e-4)
    model.fit(train_ds.take(1), epochs=1, verbose=0, callbacks=[fine])
    base = model.get_layer(td.models.base_layer_name(model))
    names = [layer.name for layer in base.layers]
    cut = names.index("block_16_expand")
    assert not any(layer.trainable for layer in base.layers[:cut])
    assert all(layer.trainable != isinstance(layer, keras.layers.BatchNormalization)
               for layer in base.layers[cut:])
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-4)
    with pytest.raises(ModelTypeError, match="not a layer of the base"):
        _fire(FineTune(at_epoch=0, from_layer="nope"), model)


def _fire(callback, model):
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_begin(0)


def test_augmentation_lives_in_the_pipeline_only(train_ds):
    aug = td.data.augment(train_ds, flip=None, rotation=0.1, zoom=0.1, contrast=0.2)
    assert aug.class_names == train_ds.class_names
    (x0, _), (x1, _) = next(iter(train_ds)), next(iter(aug))
    assert x1.shape == x0.shape and float(np.min(x1)) >= 0 and float(np.max(x1)) <= 255.0
    assert not np.allclose(x0.numpy(), x1.numpy())
    layers = td.data.augmentation_layers(flip="horizontal")
    assert [type(layer).__name__ for layer in layers.layers] == [
        "RandomFlip", "RandomRotation", "RandomZoom", "RandomContrast"]
    with pytest.raises(DataError, match="Unrecognized flip"):
        td.data.augment(train_ds, flip="diagonal")
