"""Fold a model's input preprocessing into its first convolution (compute acceleration).

A transfer model takes raw 0-255 pixels: ``Rescaling(1/127.5, offset=-1)``, for grayscale
input a ``Concatenate([x, x, x])`` that copies the one channel to three, then the base's
first ``Conv2D``. In TFLite that is a CONCATENATION, a MUL and an ADD over three full-size
channels before any real work: 1.0 ms of a 9.5 ms MobileNetV2 1.0 at 224x224 on one
thread here, and 40 % of a slimmed one (measured by cutting the graph after each stage).

The same function, exactly (up to float rounding), is a one-channel shift and a
smaller convolution::

    conv(concat_k(s * x + o)) = conv'(x + o / s),   conv' kernel = s * sum of the k copies

The shift keeps the convolution's zero padding where it was: a padded zero is
``s * x + o = 0`` before and ``x + o / s = 0`` after. `fold_input_preprocessing` finds
that pattern at the model's input and rewrites it; anything else is left as it is.
"""

import numpy as np

from tfdeploy._keras import keras
from tfdeploy._walk import is_graph_network, nodes
from tfdeploy.compress.graph import flatten, rebuild
from tfdeploy.compress.history import carry, record

L = keras.layers


def _consumers(model):
    """``{id(tensor): [node, ...]}``: the call nodes that read each tensor."""
    out = {}
    for node in nodes(model):
        for t in node.keras_inputs:
            readers = out.setdefault(id(t), [])
            if not any(n is node for n in readers):  # concat([x, x, x]) reads x once
                readers.append(node)
    return out


def _outputs(node):
    return node.outputs if isinstance(node.outputs, (list, tuple)) else [node.outputs]


def _is_plain_conv(layer):
    return type(layer) is L.Conv2D and getattr(layer, "groups", 1) == 1 and \
        layer.data_format == "channels_last"


def _plan(model):
    """``(rescaling, concat or None, [conv, ...], copies)`` to fold, or None."""
    consumers = _consumers(model)
    calls = {}
    for node in nodes(model):
        calls[id(node.layer)] = calls.get(id(node.layer), 0) + 1
    outputs = {id(t) for t in model.outputs}
    if len(model.inputs) != 1:
        return None
    first = consumers.get(id(model.inputs[0]), [])
    if len(first) != 1 or type(first[0].layer) is not L.Rescaling:
        return None
    rescale = first[0].layer
    if np.ndim(rescale.scale) or np.ndim(rescale.offset) or not float(rescale.scale):
        return None
    (scaled,) = _outputs(first[0])
    concat, copies, feed = None, 1, scaled
    after = consumers.get(id(scaled), [])
    if len(after) == 1 and type(after[0].layer) is L.Concatenate:
        node = after[0]
        ins = list(node.keras_inputs)
        if after[0].layer.axis not in (-1, len(scaled.shape) - 1) or \
                any(t is not scaled for t in ins):
            return None
        concat, copies, feed = after[0].layer, len(ins), _outputs(node)[0]
        after = consumers.get(id(feed), [])
    convs = []
    for node in after:
        layer = node.layer
        while type(layer) is L.ZeroPadding2D:  # zeros stay zeros after the shift
            (padded,) = _outputs(node)
            nxt = consumers.get(id(padded), [])
            if len(nxt) != 1 or id(padded) in outputs:
                return None
            node, layer = nxt[0], nxt[0].layer
        if not _is_plain_conv(layer) or calls[id(layer)] != 1:
            return None
        convs.append(layer)
    if not convs or id(feed) in outputs or id(scaled) in outputs:
        return None
    return rescale, concat, convs, copies


def _compressed(kernel):
    """A pruned (exact zeros) or clustered (few distinct values) kernel: summing its
    copies would undo what the compression left in it."""
    return bool(np.any(kernel == 0)) or np.unique(kernel).size < kernel.size // 2


def _may_fold(model):
    """Cheap look at the outer graph: the input goes to a scalar ``Rescaling`` first."""
    if not is_graph_network(model) or len(model.inputs) != 1:
        return False
    first = _consumers(model).get(id(model.inputs[0]), [])
    return len(first) == 1 and type(first[0].layer) is L.Rescaling


def fold_input_preprocessing(model):
    """Return a copy of ``model`` with its input rescaling folded into the first convolution.

    Looks for ``input -> Rescaling (scalar) -> [Concatenate of k copies] ->
    [ZeroPadding2D] -> Conv2D`` and replaces it with ``Rescaling(1, offset / scale)``
    (one shift of the input channels) and a Conv2D whose kernel is ``scale`` times the
    sum of the k copies' kernel slices. Predictions are the same up to float rounding;
    the TFLite file loses a CONCATENATION, a MUL and the full-width ADD (1 ms of a
    MobileNetV2 at 224x224). Nested models are flattened. `export.tflite` and
    `quantize` apply it; call it yourself for other runtimes.

    Args:
        model: a built Keras 2 Sequential or functional float model.

    A convolution whose kernel was pruned (has exact zeros) or clustered (few
    distinct values) is left alone: the summed kernel would lose its zeros or its
    shared values.

    Returns:
        A new flat ``keras.Model`` whose ``history`` gains a ``folded`` entry, or
        ``model`` itself when there is nothing to fold.
    """
    if not _may_fold(model):
        return model
    work = flatten(model)
    plan = _plan(work)
    if plan is None or any(_compressed(c.get_weights()[0]) for c in plan[2]):
        return model
    rescale, concat, convs, copies = plan
    scale, offset = float(rescale.scale), float(rescale.offset)
    pending = {}

    def replace(layer):
        if layer is rescale:
            if not offset:  # x * s only: the shift is nothing
                return lambda tensor, **kwargs: tensor
            config = dict(layer.get_config(), scale=1.0, offset=offset / scale)
            return L.Rescaling.from_config(config)
        if layer is concat:
            return lambda tensors, **kwargs: tensors[0]
        if any(layer is c for c in convs):
            weights = layer.get_weights()
            kernel = weights[0]
            channels = kernel.shape[2] // copies
            kernel = kernel.reshape(kernel.shape[:2] + (copies, channels) + kernel.shape[3:])
            weights[0] = (scale * kernel.sum(axis=2)).astype(kernel.dtype)
            new = L.Conv2D.from_config(layer.get_config())
            pending[layer.name] = (new, weights)
            return new
        return None

    out = rebuild(work, replace)
    for new, weights in pending.values():
        new.set_weights(weights)
        new.trainable = next(c for c in convs if c.name == new.name).trainable
    out = carry(model, out)
    names = [c.name for c in convs]
    detail = (f"input x{scale:g}{offset:+g} folded into {names}"
              + (f"; the {copies} channel copies summed" if concat is not None else ""))
    record(out, "folded", names, {}, source=model, detail=detail,
           params={"scale": scale, "offset": offset, "copies": copies})
    return out


__all__ = ["fold_input_preprocessing"]
