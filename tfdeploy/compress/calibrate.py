"""Calibration from data: a QAT model's activation ranges, BatchNorm moving statistics.

tfmot starts every activation range at [-6, 6] and moves it with an exponential
moving average (decay 0.999): after a short fine-tune of a few hundred steps the
ranges have barely moved, activations above 6 are clipped and QAT loses accuracy
that post-training quantization would keep. Setting the ranges from the float
model's observed activations first (as post-training calibration does) lets a
short QAT fine-tune start from the right place.

`recalibrate_batchnorm` re-estimates BatchNormalization moving statistics after
a rewrite that changed what the layers see (`slim` removes input channels of
every convolution, so the statistics recorded on the full model no longer
centre and scale their inputs; on a 50 % slimmed MobileNetV2 the prediction
became the same for every image).
"""

import numpy as np

from tfdeploy._keras import keras, tf
from tfdeploy._walk import nodes
from tfdeploy.compress.graph import rebuild
from tfdeploy._tfmot import activation_range_variables, input_range_variables
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


def _calibrate_input_quantizers(qat_model, data, num_batches):
    """Set each tfmot ``QuantizeLayer``'s range from what reaches it: the float layers in
    front of it (or none: raw model input, e.g. 0-255 pixels, which [-6, 6] clipped to a
    constant image) run unquantized, so the QAT model itself is the probe."""
    found = input_range_variables(qat_model)
    if not found:
        return {}
    calls = {id(node.layer): node for node in nodes(qat_model)}
    found = [(calls[id(layer)], lo, hi) for layer, lo, hi in found if id(layer) in calls]
    probe = keras.Model(qat_model.inputs, [node.keras_inputs[0] for node, _, _ in found])
    ranges = [None] * len(found)
    for batch in _batches(data, num_batches):
        values = probe(tf.convert_to_tensor(batch, tf.float32), training=False)
        values = values if isinstance(values, (list, tuple)) else [values]
        for i, value in enumerate(values):
            v = value.numpy()
            old = ranges[i] or (0.0, 0.0)  # the range always holds 0
            ranges[i] = (min(old[0], float(v.min())), max(old[1], float(v.max())))
    assigned = {}
    for (node, lo, hi), seen in zip(found, ranges):
        if seen is None:
            continue
        lo.assign(seen[0])
        hi.assign(seen[1])
        assigned[lo.name], assigned[hi.name] = seen
    return assigned


def calibrate_ranges(qat_model, float_model, data, num_batches=8):
    """Set a QAT model's activation min/max variables from the float model's activations,
    and its input fake-quants' (tfmot ``QuantizeLayer``) from what reaches them.

    Args:
        qat_model: the model returned by `tfdeploy.compress.quantize`.
        float_model: the float model it was made from (same layer names).
        data: calibration inputs: a ``tf.data.Dataset`` of ``(images, labels)`` or
            of images, or a numpy array.
        num_batches: batches to observe. Defaults to 8.

    Returns:
        ``{variable name: value}`` for every range variable set.
    """
    assigned = _calibrate_input_quantizers(qat_model, data, num_batches)
    wrapped = activation_range_variables(qat_model)
    names = [n for n in wrapped if n in {layer.name for layer in float_model.layers}]
    if not names:
        return assigned
    observed = _observed_ranges(float_model, names, data, num_batches)
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


def unset_input_ranges(qat_model):
    """Names of the tfmot ``QuantizeLayer``s whose range was never set ([0, 0]).

    tfmot starts an input fake-quant at [0, 0] and sets it from the first
    training batch, so a QAT model that was neither calibrated nor trained maps
    every input to 0 there (its int8 files predict one class; tf2onnx divides by
    the zero range).
    """
    return [layer.name for layer, lo, hi in input_range_variables(qat_model)
            if float(np.min(lo.numpy())) == 0.0 and float(np.max(hi.numpy())) == 0.0]


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


def recalibrate_batchnorm(model, data, num_batches=8):
    """Re-estimate every BatchNormalization layer's moving mean and variance from ``data``.

    The model runs with each BatchNormalization normalising by its batch's own
    statistics (as in training; a frozen or ``training=False`` layer too), so
    every layer sees inputs already normalised upstream; each layer's moving
    mean/variance becomes the pooled mean/variance of its input over the
    batches. Nothing else changes: no weight is trained. Use it after a rewrite
    that changes what the layers see (`slim` calls it when given
    ``calibration_data``), before fine-tuning or exporting.

    Args:
        model: a built Keras 2 functional or Sequential model (nested allowed).
        data: inputs: a ``tf.data.Dataset`` of ``(images, labels)`` or of
            images, or a numpy array (batches of 32).
        num_batches: batches to observe. Defaults to 8.

    Returns:
        The names of the BatchNormalization layers updated, in graph order.

    Raises:
        CompressionError: ``data`` yielded no batches.
    """
    captured = []

    def batch_statistics(layer):
        if not isinstance(layer, keras.layers.BatchNormalization):
            return None

        def call(x, *args, **kwargs):
            captured.append((layer, x))
            kwargs["training"] = True
            return layer(x, *args, **kwargs)

        return call

    replica = rebuild(model, batch_statistics)  # new inputs; the same layer objects
    if not captured:
        return []
    probe = keras.Model(replica.inputs, [x for _, x in captured])
    layers = [layer for layer, _ in captured]
    sums = [None] * len(layers)
    trainable = [layer.trainable for layer in layers]
    try:
        for layer in layers:  # a frozen BatchNormalization ignores training=True
            layer.trainable = True
        for batch in _batches(data, num_batches):
            values = probe(tf.convert_to_tensor(batch, tf.float32), training=False)
            values = values if isinstance(values, (list, tuple)) else [values]
            for i, (layer, value) in enumerate(zip(layers, values)):
                axes = [a % len(value.shape) for a in layer.axis]
                reduce = tuple(a for a in range(len(value.shape)) if a not in axes)
                v = tf.cast(value, tf.float64)
                moments = (float(np.prod([value.shape[a] for a in reduce])),
                           tf.reduce_sum(v, reduce).numpy(),
                           tf.reduce_sum(tf.square(v), reduce).numpy())
                sums[i] = moments if sums[i] is None else tuple(
                    a + b for a, b in zip(sums[i], moments))
    finally:
        for layer, was in zip(layers, trainable):
            layer.trainable = was
    if sums[0] is None:
        raise CompressionError("The calibration data yielded no batches.")
    for layer, (count, total, squares) in zip(layers, sums):
        mean = total / count
        variance = np.maximum(squares / count - mean ** 2, 0.0)
        layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype.as_numpy_dtype))
        layer.moving_variance.assign(
            variance.astype(layer.moving_variance.dtype.as_numpy_dtype))
    return [layer.name for layer in layers]
