"""Integrated gradients, Grad-CAM and saliency agreement on real Keras models."""

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy import viz
from tfdeploy.errors import DataError, ModelTypeError


def test_integrated_gradients_completeness():
    """Attributions sum to f(x) - f(baseline) for the attributed class (completeness axiom)."""
    keras = td.keras
    inputs = keras.Input((12, 12, 2))
    h = keras.layers.Conv2D(4, 3, activation="tanh")(inputs)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(3, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 12, 12, 2)).astype(np.float32)
    baseline = np.full((12, 12, 2), 0.1, np.float32)
    attr = viz.integrated_gradients(model, x, baseline=baseline, steps=50)
    assert attr.shape == x.shape
    target = np.argmax(model(x).numpy(), axis=-1)
    fx = model(x).numpy()[np.arange(3), target]
    fb = model(np.broadcast_to(baseline, x.shape)).numpy()[np.arange(3), target]
    np.testing.assert_allclose(attr.reshape(3, -1).sum(axis=1), fx - fb, atol=2e-3)
    assert np.all(np.abs(fx - fb) > 1e-2)  # a non-trivial difference was explained


def test_integrated_gradients_completeness_on_trained_cnn(trained_model, test_arrays):
    x = test_arrays[0][:2]
    attr = viz.integrated_gradients(trained_model, x, steps=50)
    p, p0 = trained_model(x).numpy(), trained_model(np.zeros_like(x)).numpy()
    t = p.argmax(-1)
    gap = p[np.arange(2), t] - p0[np.arange(2), t]
    np.testing.assert_allclose(attr.reshape(2, -1).sum(1), gap, atol=0.05 * np.abs(gap).max())


def test_grad_cam_peaks_in_the_region_the_output_depends_on():
    keras = td.keras
    mask = np.zeros((1, 16, 16, 1), np.float32)
    mask[:, 2:7, 9:14] = 1.0  # the only region the output can see
    inputs = keras.Input((16, 16, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(inputs)
    h = keras.layers.Lambda(lambda t: t * mask, name="region")(h)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", use_bias=False,
                            name="conv_b")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(2, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(1).uniform(0, 1, (4, 16, 16, 1)).astype(np.float32)
    # for the predicted class (Grad-CAM's use): a fixed class can have no positive evidence
    # on an untrained model, and its map is then zero everywhere (5 of 40 random inits
    # with target=0, 0 of 60 with the predicted class)
    cam = viz.grad_cam(model, x, target=None)
    assert cam.shape == (4, 16, 16)
    for m in cam:
        r, c = np.unravel_index(np.argmax(m), m.shape)
        assert 1 <= r <= 7 and 8 <= c <= 14, (r, c)
        inside = m[1:8, 8:15].mean()
        outside = (m.sum() - m[1:8, 8:15].sum()) / (m.size - 49)
        assert inside > 5 * outside


def test_agreement_is_one_with_itself_and_low_with_a_random_model(trained_model, test_arrays):
    x, y = test_arrays
    picks = [int(np.flatnonzero(y == c)[0]) for c in range(4)]
    images = x[picks]
    td.tf.random.set_seed(123)
    random_model = td.models.build_cnn((32, 32, 1), 10, width=0.25)
    ig = viz.explain({"float": trained_model, "same": trained_model, "random": random_model},
                     images, steps=24)
    assert ig["scores"]["same"] == {"spearman": 1.0, "topk_overlap": 1.0}
    assert ig["scores"]["random"]["spearman"] < 0.3, ig["scores"]
    cam = viz.explain({"float": trained_model, "same": trained_model, "random": random_model},
                      images, "grad_cam")
    assert cam["scores"]["same"]["spearman"] == pytest.approx(1.0)
    assert cam["scores"]["random"]["spearman"] < 0.5, cam["scores"]
    assert cam["scores"]["random"]["topk_overlap"] < 0.5, cam["scores"]


def test_quantization_aware_model_keeps_what_the_float_model_looks_at(trained_model,
                                                                      test_arrays, train_ds):
    x = test_arrays[0][:3]
    qat = td.compress.quantize(trained_model,  # returns a new model; the fixture is untouched
                               calibration_data=train_ds.take(2))
    out = viz.explain({"float": trained_model, "qat": qat}, x, steps=24)
    assert out["scores"]["qat"]["spearman"] > 0.5, out["scores"]  # fake-quant passes gradients


def test_grad_cam_on_mobilenet_v2_and_a_nested_transfer_model():
    keras = td.keras
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    flat = keras.applications.MobileNetV2(input_shape=(64, 64, 3), weights=None, classes=5,
                                          alpha=0.35)
    assert viz.grad_cam(flat, x).shape == (2, 64, 64)  # out_relu, the last 4-D layer
    # the same architecture as a frozen base inside a transfer model: Grad-CAM on its output
    base = keras.Model(flat.input, flat.get_layer("out_relu").output, name="base")
    base.trainable = False
    inputs = keras.Input((64, 64, 3))
    h = keras.layers.GlobalAveragePooling2D()(base(inputs))
    transfer = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(h))
    cam = viz.grad_cam(transfer, x)
    assert cam.shape == (2, 64, 64) and np.all((cam >= 0) & (cam <= 1))
    attr = viz.integrated_gradients(transfer, x[:1], steps=8)
    assert attr.shape == (1, 64, 64, 3) and np.isfinite(attr).all()


def test_bad_inputs_get_typed_errors(trained_model):
    with pytest.raises(DataError, match="batch"):
        viz.integrated_gradients(trained_model, np.zeros((32, 32, 1)))
    with pytest.raises(DataError, match="method"):
        viz.explain({"m": trained_model}, np.zeros((1, 32, 32, 1)), method="lime")
    with pytest.raises(DataError, match="same|both"):
        viz.saliency_agreement(np.zeros((1, 4, 4)), np.zeros((2, 4, 4)))
    dense = td.keras.Sequential([td.keras.Input((4,)), td.keras.layers.Dense(2)])
    with pytest.raises(ModelTypeError, match="4-D"):
        viz.grad_cam(dense, np.zeros((1, 4, 4, 1)))
