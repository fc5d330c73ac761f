"""Physical structured pruning: smaller layers, consistent shapes, exactness, clear errors."""

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import CompressionError

C = td.compress
L = td.keras.layers


def _zero_weakest_half(model):
    """Zero the first half of the filters of every hidden Conv2D/Dense (kernel and bias)."""
    for layer in model.layers:
        if isinstance(layer, (L.Conv2D, L.Dense)) and layer.name != "probabilities":
            kernel, bias = layer.get_weights()
            half = kernel.shape[-1] // 2
            kernel[..., :half] = 0.0
            bias[:half] = 0.0
            layer.set_weights([kernel, bias])


@pytest.mark.parametrize("criterion", ["l1", "l2", "mask"])
def test_slim_removes_exactly_the_dead_channels(criterion):
    # With zero kernel+bias, a ReLU channel is exactly 0 downstream: removing it
    # (and the matching rows of the next Conv, and the Flatten->Dense rows) must not
    # change the output at all.
    model = td.models.build_cnn((8, 8, 1), num_classes=4, width=0.25)
    _zero_weakest_half(model)
    before = [w.copy() for w in model.get_weights()]
    small = C.slim(model, 0.5, criterion=criterion)
    x = np.random.RandomState(0).rand(6, 8, 8, 1).astype("float32") * 255
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-6)
    full, slim_w = C.channel_widths(model), C.channel_widths(small)
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "dense1"):
        assert slim_w[name] == full[name] // 2
    assert slim_w["probabilities"] == 4  # feeds the model output: kept
    assert small.get_layer("dense1").kernel.shape[0] == 2 * 2 * full["conv6"] // 2
    assert small.count_params() < 0.3 * model.count_params()
    assert small._tfdeploy_slim["conv2"] == (full["conv2"], full["conv2"] // 2)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def _residual():
    inputs = td.keras.Input((8, 8, 3))
    a = L.Conv2D(8, 3, padding="same", name="c1")(inputs)
    a = L.BatchNormalization(name="bn1")(a)
    a = L.ReLU()(a)
    b = L.DepthwiseConv2D(3, padding="same", name="dw")(a)
    b = L.Conv2D(8, 1, name="pw")(b)
    b = L.BatchNormalization(name="bn2")(b)
    c = L.Add(name="add")([a, b])
    c = L.GlobalAveragePooling2D()(c)
    c = L.Dense(16, activation="relu", name="d1")(c)
    return td.keras.Model(inputs, L.Dense(3, name="out")(c))


def test_add_shares_one_mask_and_bn_depthwise_follow():
    model = _residual()
    rng = np.random.RandomState(1)
    model.set_weights([rng.randn(*w.shape).astype("float32") if w.ndim else w
                       for w in model.get_weights()])
    small = C.slim(model, 0.5)
    widths = C.channel_widths(small)
    assert widths == {"c1": 4, "dw": 4, "pw": 4, "d1": 8, "out": 3}
    assert small.get_layer("bn1").gamma.shape[0] == 4 and small.get_layer("bn2").gamma.shape[0] == 4
    score = (np.abs(model.get_layer("c1").kernel.numpy()).reshape(-1, 8).sum(0)
             / np.abs(model.get_layer("c1").kernel.numpy()).reshape(-1, 8).sum(0).mean()
             + np.abs(model.get_layer("pw").kernel.numpy()).reshape(-1, 8).sum(0)
             / np.abs(model.get_layer("pw").kernel.numpy()).reshape(-1, 8).sum(0).mean())
    kept = np.sort(np.argsort(-score)[:4])
    np.testing.assert_array_equal(small.get_layer("c1").bias.numpy(),
                                  model.get_layer("c1").bias.numpy()[kept])
    np.testing.assert_array_equal(small.get_layer("pw").bias.numpy(),
                                  model.get_layer("pw").bias.numpy()[kept])
    assert small.predict(rng.rand(2, 8, 8, 3), verbose=0).shape == (2, 3)
    # Excluding one side of the Add keeps the shared channels whole.
    partial = C.slim(model, 0.5, layers=C.Select(exclude=["pw"]))
    assert C.channel_widths(partial)["c1"] == 8 and C.channel_widths(partial)["d1"] == 8
    assert "shares channels" in C.report(partial).to_dict()["c1"]["left_out"]["slimmed"]


def test_divisor_keeps_a_multiple_of_it_in_every_layer():
    """70 % of a MobileNetV2 1.0 leaves 5, 10, 29, ... channels; with divisor=8 every slimmed
    layer keeps a multiple of 8 (XNNPACK's int8 convolutions pad channels to 8 on x86)."""
    model = td.models.build_mobilenet((32, 32, 1), 5, alpha=1.0)
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 1)).astype("float32")
    plain = C.slim(model, 0.7, calibration_data=x)
    assert any(after % 8 for _, after in plain._tfdeploy_slim.values())
    small = C.slim(model, 0.7, calibration_data=x, divisor=8)
    sizes = small._tfdeploy_slim
    assert len(sizes) == len(plain._tfdeploy_slim) > 50
    for name, (before, after) in sizes.items():
        assert after % 8 == 0 and 8 <= after < before, (name, before, after)
        # the nearest multiple of 8 to what the ratio alone keeps
        assert abs(after - plain._tfdeploy_slim[name][1]) <= 4, name
    assert C.history(small)[-1]["params"]["divisor"] == 8
    assert small.predict(x, verbose=0).shape == (8, 5)
    for bad in (0, -8, 2.5, True, "8"):
        with pytest.raises(CompressionError, match="divisor must be a positive integer"):
            C.slim(model, 0.7, divisor=bad)


def test_slim_then_fine_tune_recovers(trained_model, train_ds, test_arrays):
    x, y = test_arrays
    base = td.verify.accuracy(trained_model, x, y)
    small = C.slim(trained_model, 0.5)
    assert small.count_params() < 0.3 * trained_model.count_params()
    small.compile(C.optimizer("adam", 5e-4), "sparse_categorical_crossentropy", ["accuracy"])
    small.fit(train_ds, epochs=2, verbose=0)
    assert td.verify.accuracy(small, x, y) >= base - 0.05


def test_slim_errors():
    model = td.models.build_cnn((8, 8, 1), num_classes=3, width=0.125)
    for bad in (0.0, 1.0, 1.5, -0.1, "half"):
        with pytest.raises(CompressionError, match="ratio must be a fraction in"):
            C.slim(model, bad)
    with pytest.raises(CompressionError, match="Unrecognized criterion='l3'"):
        C.slim(model, 0.5, criterion="l3")
    inputs = td.keras.Input((8, 8, 3))
    a = L.Conv2D(8, 3, padding="same", name="c1")(inputs)
    b = L.Conv2D(8, 3, padding="same", name="c2")(inputs)
    c = L.Concatenate(name="join")([a, b])
    out = L.Dense(2)(L.Flatten()(c))
    with pytest.raises(CompressionError, match=r"slim cannot rewrite layer 'join' \(Concatenate"):
        C.slim(td.keras.Model(inputs, out), 0.5)
    qat = C.quantize(model)
    with pytest.raises(CompressionError, match="quantization-aware"):
        C.slim(qat, 0.5)
