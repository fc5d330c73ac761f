"""Read sparsity back from a model's weights (wrapped or plain)."""

import numpy as np

from tfdeploy._keras import keras

_KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")


def _kernels(layer):
    """Yield ``(name, array)`` for the prunable weight tensors of one layer.

    For a tfmot pruning wrapper the effective weight is ``kernel * mask``.
    """
    pruning_vars = getattr(layer, "pruning_vars", None)
    if pruning_vars:
        for weight, mask, _ in pruning_vars:
            yield weight.name, weight.numpy() * mask.numpy()
        return
    for w in layer.weights:
        short = w.name.split("/")[-1].split(":")[0]
        if short in _KERNEL_NAMES or short.endswith("kernel"):
            yield w.name, w.numpy()


def _leaf_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def sparsity_by_layer(model):
    """Return ``{layer_name: fraction of zero kernel weights}`` for layers with kernels."""
    out = {}
    for layer in _leaf_layers(model):
        zeros = total = 0
        for _, arr in _kernels(layer):
            zeros += int(np.count_nonzero(arr == 0))
            total += arr.size
        if total:
            inner = getattr(layer, "layer", None)
            name = inner.name if isinstance(inner, keras.layers.Layer) else layer.name
            out[name] = zeros / total
    return out


def model_sparsity(model, layers=None):
    """Return the fraction of zero kernel weights over ``layers`` (default: all with kernels).

    Args:
        model: a Keras model, pruned (wrapped), stripped or plain.
        layers: names of the layers to count; None counts every layer with a kernel.

    Returns:
        A float in [0, 1], weighted by kernel size.
    """
    zeros = total = 0
    for layer in _leaf_layers(model):
        if layers is not None and layer.name not in layers:
            continue
        for _, arr in _kernels(layer):
            zeros += int(np.count_nonzero(arr == 0))
            total += arr.size
    return zeros / total if total else 0.0
