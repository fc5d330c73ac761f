"""Layer selection, nested-model flattening, the XNNPACK policy and the per-layer report."""

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import CompressionError

C = td.compress
L = td.keras.layers


def _cnn():
    return td.models.build_cnn((8, 8, 1), num_classes=3, width=0.125)


def _pruned_names(model):
    return sorted(layer.layer.name for layer in model.layers if hasattr(layer, "pruning_vars"))


def test_select_regex_skip_first_last_and_types():
    model = _cnn()
    pruned = C.prune(model, 0.5, epochs=1, steps_per_epoch=4,
                     layers=C.Select(skip_first=True, skip_last=True))
    assert _pruned_names(pruned) == sorted(["conv2", "conv3", "conv4", "conv5", "conv6", "dense1"])
    pruned = C.prune(model, 0.5, epochs=1, steps_per_epoch=4, layers=C.Select(regex=r"conv[56]"))
    assert _pruned_names(pruned) == ["conv5", "conv6"]
    pruned = C.prune(model, 0.5, epochs=1, steps_per_epoch=4, layers=C.Select(types=L.Dense))
    assert _pruned_names(pruned) == ["dense1", "probabilities"]
    rows = C.report(pruned).to_dict()
    assert rows["dense1"]["pruned"] and not rows["conv1"]["pruned"]
    assert rows["conv1"]["left_out"]["pruned"] == "not selected"
    assert not C.is_pruning_wrapped(model)


def test_select_errors():
    model = _cnn()
    with pytest.raises(CompressionError, match="No layer matches regex 'nothing.*'"):
        C.prune(model, 0.5, epochs=1, steps_per_epoch=4, layers=C.Select(regex="nothing.*"))
    with pytest.raises(CompressionError, match="Invalid regex"):
        C.Select(regex="(")
    with pytest.raises(CompressionError, match="No layer of model 'cnn' was selected for pruning.*"
                       "MaxPooling2D has no weights"):
        C.prune(model, 0.5, epochs=1, steps_per_epoch=4, layers=["pool1"])
    inputs = td.keras.Input((4,))
    bn = td.keras.Model(inputs, L.Dense(2, name="d")(L.BatchNormalization(name="bn")(inputs)))
    with pytest.raises(CompressionError, match=r"cannot take it: \['bn \(tfmot has no pruning"):
        C.prune(bn, 0.5, epochs=1, steps_per_epoch=4, layers=["bn", "d"])
    with pytest.raises(CompressionError, match="Unrecognized policy='fast'"):
        C.prune(model, 0.5, epochs=1, steps_per_epoch=4, policy="fast")


def _transfer_model():
    base_in = td.keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="base_conv1")(base_in)
    x = L.BatchNormalization(name="base_bn")(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="base_conv2")(x)
    base = td.keras.Model(base_in, x, name="base")
    base.trainable = False
    inputs = td.keras.Input((8, 8, 3))
    y = base(inputs, training=False)
    y = L.GlobalAveragePooling2D(name="gap")(y)
    outputs = L.Dense(3, activation="softmax", name="head")(y)
    return td.keras.Model(inputs, outputs, name="transfer")


def test_nested_model_is_flattened_for_pruning_and_qat():
    model = _transfer_model()
    x = np.random.RandomState(0).rand(4, 8, 8, 3).astype("float32")
    flat = C.flatten(model)
    assert C.is_nested(model) and not C.is_nested(flat)
    assert {"base_conv1", "base_bn", "base_conv2", "head"} <= {layer.name for layer in flat.layers}
    assert not flat.get_layer("base_conv1").trainable
    np.testing.assert_allclose(flat.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    originals = {id(layer) for layer in model._flatten_layers()}
    assert not any(id(layer) in originals for layer in flat.layers)  # a copy: new layers
    pruned = C.prune(model, 0.5, schedule=C.ConstantSparsity(0.5, unit="step"))
    assert _pruned_names(pruned) == ["base_conv1", "base_conv2", "head"]
    qat = C.quantize(model)
    wrapped = {layer.layer.name for layer in qat.layers if hasattr(layer, "quantize_config")}
    assert {"base_conv1", "base_conv2", "head"} <= wrapped
    assert C.is_nested(model)  # input untouched


def _xnnpack_model():
    inputs = td.keras.Input((16, 16, 3))
    x = L.ZeroPadding2D(1)(inputs)
    x = L.Conv2D(8, 3, strides=2, padding="valid", name="stem")(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Conv2D(16, 1, name="pw1")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(16, 1, name="pw2")(x)
    x = L.GlobalAveragePooling2D(keepdims=True)(x)
    x = L.Flatten()(x)
    outputs = L.Dense(3, activation="softmax", name="head")(x)
    return td.keras.Model(inputs, outputs)


def test_xnnpack_policy_prunes_only_1x1_convs():
    pruned = C.prune(_xnnpack_model(), 0.7, epochs=1, steps_per_epoch=10, policy="xnnpack")
    assert _pruned_names(pruned) == ["pw1", "pw2"]
    rows = C.report(pruned).to_dict()
    assert rows["stem"]["left_out"]["pruned"] == "xnnpack policy prunes only 1x1 Conv2D"
    with pytest.raises(CompressionError, match="policy='xnnpack' cannot be used on model 'cnn'"):
        C.prune(_cnn(), 0.5, epochs=1, steps_per_epoch=4, policy="xnnpack")


def test_report_table_and_dict():
    model = _cnn()
    pruned = C.prune(model, 0.5, epochs=1, steps_per_epoch=4, layers=C.Select(skip_first=True))
    rep = C.report(pruned)
    table = str(rep)
    assert "conv1" in table and "first layer skipped (skip_first=True)" in table
    d = rep.to_dict()
    assert d["conv2"]["pruned"] and d["conv2"]["type"] == "Conv2D"
    assert d["conv2"]["params"] == model.get_layer("conv2").count_params()
    assert d["conv1"]["left_out"] == {"pruned": "first layer skipped (skip_first=True)"}
