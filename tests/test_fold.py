"""fold_input_preprocessing: the input rescaling and channel copies go into the first conv."""

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.compress import fold_input_preprocessing, history
from tfdeploy.models import build_mobilenet

L = td.keras.layers
RNG = np.random.default_rng(0)


def _stem(padding="same", pad_layer=False, copies=3, side=9, strides=2):
    """raw pixels -> x / 127.5 - 1 -> k channel copies -> [ZeroPadding2D] -> Conv2D -> Dense."""
    inputs = td.keras.Input((side, side, 1), name="images")
    x = L.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(inputs)
    if copies > 1:
        x = L.Concatenate(name="to_rgb")([x] * copies)
    if pad_layer:
        x = L.ZeroPadding2D(((0, 1), (0, 1)), name="pad")(x)
    x = L.Conv2D(4, 3, strides=strides, padding=padding, use_bias=False, name="conv")(x)
    outputs = L.Dense(3, name="logits")(L.Flatten()(x))
    return td.keras.Model(inputs, outputs)


@pytest.mark.parametrize("kwargs", [{}, {"padding": "valid", "pad_layer": True}, {"copies": 1},
                                    {"side": 8, "strides": 1}])
def test_folded_stem_computes_the_same_values_borders_included(kwargs):
    model = _stem(**kwargs)
    x = RNG.uniform(0, 255, (8,) + model.input_shape[1:]).astype("float32")
    folded = fold_input_preprocessing(model)
    assert folded is not model
    assert "to_rgb" not in [layer.name for layer in folded.layers]
    conv = folded.get_layer("conv")
    assert conv.kernel.shape[2] == 1  # one input channel: the copies were summed
    # the padded border is where a wrong fold (the offset put into a bias) would differ
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-4)
    entry = history(folded)[-1]
    assert entry["technique"] == "folded" and entry["layers"] == ["conv"]


def test_nothing_to_fold_returns_the_model_itself():
    model = _stem()
    other = td.keras.Input((9, 9, 1))
    mixed = L.Concatenate()([L.Rescaling(2.0)(other), other])  # not copies of one tensor
    assert fold_input_preprocessing(td.keras.Model(other, L.Conv2D(2, 3)(mixed))) is not None
    two = td.keras.Model(other, L.Conv2D(2, 3)(mixed))
    assert fold_input_preprocessing(two) is two
    pruned = _stem()
    kernel = pruned.get_layer("conv").get_weights()[0]
    kernel[..., :2] = 0.0  # a pruned first conv keeps its zeros: no fold
    pruned.get_layer("conv").set_weights([kernel])
    assert fold_input_preprocessing(pruned) is pruned
    assert fold_input_preprocessing(model) is not model


def test_mobilenet_tflite_starts_with_one_add_and_predicts_as_keras(tmp_path):
    model = build_mobilenet((48, 48, 1), 5, arch="mobilenet_v2", alpha=0.35)
    x = RNG.uniform(0, 255, (6, 48, 48, 1)).astype("float32")
    path = td.export.tflite(model, str(tmp_path / "m.tflite"), model_card={})
    kinds = [op["op"] for op in td.verify.operators(path)]
    assert kinds[:2] == ["ADD", "CONV_2D"], kinds
    assert "MUL" not in kinds and "CONCATENATION" not in kinds
    got = td.runtime.load(path).predict(x)
    got = got if isinstance(got, np.ndarray) else next(iter(got.values()))
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)
    card = td.export.model_card.read(path)
    assert "folded" in [step["step"] for step in card["compression"]]
