"""Compression reaches inside MobileNets: QAT wraps the nested base's layers, slimming keeps
inverted-residual Adds, depthwise channels and V3 squeeze-excite consistent, V3's
hard-swish / SE arithmetic that tfmot cannot quantize is reported, never silent."""

import re

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.compress import channel_widths
from tfdeploy.errors import QuantizationFallbackWarning, SlimWarning
from tfdeploy.models import build_mobilenet

X = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 1)).astype("float32")


@pytest.fixture(scope="module")
def v2():
    return build_mobilenet((32, 32, 1), 5, arch="v2", alpha=0.35)


@pytest.fixture(scope="module")
def v2_slim(v2):
    """``slim(v2, 0.5)`` without calibration data (it warns that the BatchNorm statistics are
    stale), made once for the two tests that read it; neither changes it."""
    with pytest.warns(SlimWarning, match="calibration_data"):
        return td.compress.slim(v2, 0.5)


def test_qat_on_nested_v2_wraps_the_inner_layers(v2):
    base = v2.get_layer(td.models.base_layer_name(v2))
    inner = {layer.name for layer in base.layers}
    # calibrating from the nested model: the probe reads the flattened graph's own calls
    qat = td.compress.quantize(v2, calibration_data=X)
    assert qat._tfdeploy_qat["calibrated"] > 30
    wrapped = [layer.layer.name for layer in qat.layers if hasattr(layer, "quantize_config")]
    inner_wrapped = [n for n in wrapped if n in inner]
    kinds = {type(base.get_layer(n)).__name__ for n in inner_wrapped}
    convs = [layer for layer in base.layers
             if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D")]
    assert len(inner_wrapped) >= len(convs) > 30
    assert {"Conv2D", "DepthwiseConv2D", "Add", "ReLU"} <= kinds
    assert "probabilities" in wrapped
    assert qat(X).shape == (4, 5)
    layers = {layer.layer.name: layer for layer in qat.layers if hasattr(layer, "layer")}
    # weight ranges are the kernels' own from the start (tfmot's [-6, 6] until a training step
    # rounded a 0.1-sized kernel to a few levels and the head's to zero before `fit`)
    for name in ("Conv1", "block_3_project", "probabilities"):
        kernel = layers[name].layer.kernel.numpy()
        top = np.abs(kernel).max(axis=tuple(range(kernel.ndim - 1)))
        high = [v for v in layers[name].weights if v.name.endswith("kernel_max:0")][0].numpy()
        np.testing.assert_allclose(high, top if high.size > 1 else top.max(), rtol=1e-5)
    # output-only quantizers (an Add, a BN folded into its conv) are calibrated too
    flat = td.compress.flatten(v2)
    for name in ("block_2_add", "block_3_project_BN"):
        seen = td.keras.Model(flat.inputs, flat.get_layer(name).get_output_at(-1)).predict(
            X, verbose=0)
        bounds = sorted(float(v.numpy()) for v in layers[name].weights
                        if v.name.split("/")[-1] in ("output_min:0", "output_max:0"))
        np.testing.assert_allclose(bounds, [min(seen.min(), 0), max(seen.max(), 0)], rtol=1e-4)


def test_slim_v2_shares_masks_across_adds_and_depthwise_channels(v2, v2_slim):
    slim = v2_slim
    before, after = channel_widths(td.compress.flatten(v2)), channel_widths(slim)
    # block_2_add joins block_1_project and block_2_project: one shared channel mask
    assert after["block_1_project"] == after["block_2_project"] < before["block_1_project"]
    assert after["block_3_project"] == after["block_4_project"] == after["block_5_project"]
    # a depthwise conv keeps exactly the channels of the expand conv feeding it
    for b in range(1, 17):
        assert after[f"block_{b}_depthwise"] == after[f"block_{b}_expand"]
    assert after["probabilities"] == 5
    assert slim.count_params() < 0.5 * v2.count_params()
    assert slim(X).shape == (4, 5)
    for layer in slim.layers:
        if type(layer).__name__ == "Add":
            shapes = {tuple(t.shape[1:]) for t in layer.input}
            assert len(shapes) == 1, layer.name


def _batchnorm_misfit(model, x):
    """Largest |mean offset| and |variance ratio - 1| between each BatchNormalization's moving
    statistics and the statistics of what it receives on ``x`` (inference mode)."""
    from tfdeploy._walk import nodes

    calls = [n for n in nodes(model) if isinstance(n.layer, td.keras.layers.BatchNormalization)]
    probe = td.keras.Model(model.inputs, [n.call_args[0] for n in calls])
    offset = spread = 0.0
    for node, value in zip(calls, probe.predict(x, verbose=0, batch_size=len(x))):
        value = value.reshape(-1, value.shape[-1]).astype("float64")
        mean, var = value.mean(0), value.var(0)
        layer = node.layer
        mm, mv = layer.moving_mean.numpy(), layer.moving_variance.numpy()
        live = var > 1e-8
        offset = max(offset, float(np.max(np.abs(mean - mm) / np.sqrt(mv + layer.epsilon))))
        if live.any():
            spread = max(spread, float(np.max(np.abs(var[live] / mv[live] - 1))))
    return offset, spread


def test_slim_re_estimates_batchnorm_statistics_of_a_frozen_base(v2, v2_slim):
    # The transfer base is frozen and called with training=False: its BatchNorm layers never
    # update their statistics in a fine-tune. After slimming, those statistics (recorded on the
    # full model) no longer fit what the layers see; a 50 % slimmed MobileNetV2 predicted one
    # class for every image and stayed at chance through its fine-tune and QAT.
    x = np.random.default_rng(1).uniform(0, 255, (32, 32, 32, 1)).astype("float32")
    stale = v2_slim  # slimmed without calibration_data: it warned (see the fixture)
    assert max(_batchnorm_misfit(stale, x)) > 0.1
    assert "NOT re-estimated" in str(td.compress.history(stale))
    fresh = td.compress.slim(v2, 0.5, calibration_data=x)
    offset, spread = _batchnorm_misfit(fresh, x)
    assert offset < 1e-3 and spread < 1e-3, (offset, spread)
    norms = [layer for layer in fresh.layers
             if isinstance(layer, td.keras.layers.BatchNormalization)]
    assert len(norms) > 30 and not any(layer.trainable for layer in norms)  # still frozen
    np.testing.assert_allclose(fresh.predict(X, verbose=0), fresh.predict(X, verbose=0))


def test_v3_slim_keeps_squeeze_excite_consistent_and_qat_fallback_is_reported():
    v3 = build_mobilenet((32, 32, 1), 5, arch="v3_small", alpha=0.35)
    slim = td.compress.slim(v3, 0.5)
    widths = channel_widths(slim)
    se = [n for n in widths if n.endswith("squeeze_excite/Conv_1")]
    assert se
    for name in se:  # the SE gate multiplies the depthwise output: same channels
        block = name.split("/")[0]
        assert widths[name] == widths[f"{block}/depthwise"]
    assert widths[se[0]] < channel_widths(td.compress.flatten(v3))[se[0]]
    assert slim(X).shape == (4, 5)
    with pytest.warns(QuantizationFallbackWarning, match="hard-swish"):
        qat = td.compress.quantize(v3, calibration_data=X)
    rows = td.compress.report(qat).to_dict()
    ops = [n for n, r in rows.items() if "hard-swish" in str(r.get("left_out", {}))]
    assert len(ops) == len(qat._tfdeploy_qat["float_fallback"]) > 10


def _int8_ops(model, tmp_path, name):
    path = td.export.tflite(model, str(tmp_path / f"{name}.tflite"), "int8",
                            representative_data=X, num_calibration=4)
    return td.verify.op_dtypes(path)


def test_v1_qat_full_int8_holds_int8_convs_and_depthwise(tmp_path):
    v1 = build_mobilenet((32, 32, 1), 5, arch="v1", alpha=0.25)
    qat = td.compress.quantize(v1, calibration_data=X)
    wrapped = [layer.layer.name for layer in qat.layers if hasattr(layer, "quantize_config")]
    # the 13 depthwise and 13 pointwise convs of the nested base, each wrapped
    assert sum(bool(re.fullmatch(r"conv_(dw|pw)_\d+", name)) for name in wrapped) == 26
    # every conv's BatchNormalization is annotated with it (tfmot's Conv+BN transforms match
    # annotated layers only), so the converter folds it: no per-BN int8 MUL left in the file
    norms = [n for n in wrapped if n.endswith("_bn")]
    assert len(norms) == 27
    ops = _int8_ops(qat, tmp_path, "v1")
    assert ops["CONV_2D"] == {"int8"} and ops["DEPTHWISE_CONV_2D"] == {"int8"}
    kinds = [op["op"] for op in td.verify.operators(str(tmp_path / "v1.tflite"))]
    # and the input preprocessing (x / 127.5 - 1, grayscale copied to 3 channels) is folded
    # into the first conv: one ADD on the one input channel, no MUL or CONCATENATION
    assert "MUL" not in kinds and "CONCATENATION" not in kinds, kinds
    assert kinds[:3] == ["QUANTIZE", "ADD", "CONV_2D"], kinds


def test_v3_large_full_int8_keeps_convs_int8_and_reports_the_float_fallback(tmp_path):
    v3 = build_mobilenet((32, 32, 1), 5, arch="v3_large", alpha=0.35)
    with pytest.warns(QuantizationFallbackWarning, match="hard-swish"):
        qat = td.compress.quantize(v3, calibration_data=X)
    assert len(qat._tfdeploy_qat["float_fallback"]) > 10
    ops = _int8_ops(qat, tmp_path, "v3_large")
    assert ops["CONV_2D"] == {"int8"} and ops["DEPTHWISE_CONV_2D"] == {"int8"}
