"""Initialise a QAT model's activation ranges from calibration data.

tfmot starts every activation range at [-6, 6] and moves it with an exponential
moving average (decay 0.999): after a short fine-tune of a few hundred steps the
ranges have barely moved, activations above 6 are clipped and QAT loses accuracy
that post-training quantization would keep. Setting the ranges from the float
model's observed activations first (as post-training calibration does) lets a
short QAT fine-tune start from the right place.
"""

import numpy as np

from tfdeploy._keras import keras, tf
from tfdeploy._walk import nodes
from tfdeploy.compress._tfmot import activation_range_variables
from tfdeploy.errors import CompressionError


def _batches(data, num_batches):
    if isinstance(data, np.ndarray):
        for i in range(0, min(len(data), 32 * num_batches), 32):
            yield data[i:i + 32]
        return
    for n, item in enumerate(data):
        if n >= num_batches:
            break
        yield item[0] if isinstance(item, (tuple, list)) else item


def _observed_ranges(float_model, names, data, num_batches):
    """Min/max of each named layer's output and pre-activation over the calibration batches."""
    # the tensors of the layer's call in *this* graph: a layer of a flattened model was also
    # called inside the nested base it came from, and ``layer.output`` is that first call's
    # (probing it would be disconnected from ``float_model``'s input)
    calls = {node.layer.name: node for node in nodes(float_model)}
    outputs, keys = [], []
    for name in names:
        node = calls.get(name)
        if node is None:  # a layer of the model that its graph never calls
            continue
        layer = node.layer
        outputs.append(node.outputs)
        keys.append((name, "output"))
        activation = getattr(layer, "activation", None)
        if activation is not None and activation is not keras.activations.linear:
            outputs.append(node.call_args[0])
            keys.append((name, "input"))
    probe = keras.Model(float_model.inputs, outputs)
    ranges = {}
    for batch in _batches(data, num_batches):
        values = probe(tf.convert_to_tensor(batch, tf.float32), training=False)
        values = values if isinstance(values, (list, tuple)) else [values]
        for (name, kind), value in zip(keys, values):
            if kind == "input":
                layer = float_model.get_layer(name)
                saved = layer.activation
                try:
                    layer.activation = keras.activations.linear
                    value = layer(value)
                finally:
                    layer.activation = saved
                kind = "pre_activation"
            v = value.numpy()
            lo, hi = float(v.min()), float(v.max())
            old = ranges.get((name, kind))
            ranges[(name, kind)] = (min(lo, old[0]), max(hi, old[1])) if old else (lo, hi)
    if not ranges:
        raise CompressionError("The calibration data yielded no batches.")
    return ranges


def calibrate_ranges(qat_model, float_model, data, num_batches=8):
    """Set a QAT model's activation min/max variables from the float model's activations.

    Args:
        qat_model: the model returned by `tfdeploy.compress.quantize`.
        float_model: the float model it was made from (same layer names).
        data: calibration inputs: a ``tf.data.Dataset`` of ``(images, labels)`` or
            of images, or a numpy array.
        num_batches: batches to observe. Defaults to 8.

    Returns:
        ``{variable name: value}`` for every range variable set.
    """
    wrapped = activation_range_variables(qat_model)
    names = [n for n in wrapped if n in {layer.name for layer in float_model.layers}]
    if not names:
        return {}
    observed = _observed_ranges(float_model, names, data, num_batches)
    assigned = {}
    for name in names:
        for var, kind, is_max in wrapped[name]:
            key = (name, "output" if kind == "output" else "pre_activation")
            if key not in observed:
                continue
            lo, hi = observed[key]
            value = max(hi, 0.0) if is_max else min(lo, 0.0)
            var.assign(value)
            assigned[var.name] = value
    return assigned


def uncalibrated_layers(qat_model, start=6.0, slack=0.25):
    """Names of the layers whose activation ranges are still near tfmot's start of [-6, 6].

    Such a model was neither calibrated (``quantize(..., calibration_data=...)``)
    nor trained long enough for the moving average to move its ranges: every
    activation is quantized in steps of 12/255, so tiny float differences between
    runtimes flip whole steps and near-tied top classes can differ.

    Args:
        qat_model: a quantization-aware model (others return []).
        start: tfmot's initial range bound. Defaults to 6.0.
        slack: how close to ``-start``/``start`` both bounds must be. Defaults to 0.25.

    Returns:
        Layer names, in model order.
    """
    stuck = []
    for name, variables in activation_range_variables(qat_model).items():
        bounds = [float(np.max(var.numpy()) if is_max else np.min(var.numpy()))
                  for var, _, is_max in variables]
        if bounds and all(abs(abs(b) - start) <= slack for b in bounds):
            stuck.append(name)
    return stuck
