"""Read sparsity back from a model's weights (wrapped or plain)."""

import numpy as np

from tfdeploy._keras import keras
from tfdeploy.compress.graph import leaf_layers

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


def zero_counts(model):
    """Return ``{layer_name: (zeros, total)}`` over the kernels of every layer that has one.

    Wrapped layers (pruning, quantization, clustering) are reported under the
    name of the layer they wrap.
    """
    out = {}
    for layer in leaf_layers(model):
        zeros = total = 0
        for _, arr in _kernels(layer):
            zeros += int(np.count_nonzero(arr == 0))
            total += arr.size
        if total:
            inner = getattr(layer, "layer", None)
            name = inner.name if isinstance(inner, keras.layers.Layer) else layer.name
            out[name] = (zeros, total)
    return out


def kernels_by_layer(model):
    """Return ``{layer_name: kernel array}`` (effective values: pruning masks applied).

    Named like `zero_counts` (a wrapped layer under the name of the layer it
    wraps); a layer with several kernels (e.g. separable conv) gets them
    flattened and joined.
    """
    out = {}
    for layer in leaf_layers(model):
        arrays = [arr for _, arr in _kernels(layer)]
        if arrays:
            inner = getattr(layer, "layer", None)
            name = inner.name if isinstance(inner, keras.layers.Layer) else layer.name
            out[name] = arrays[0] if len(arrays) == 1 else np.concatenate(
                [a.ravel() for a in arrays])
    return out


def sparsity_by_layer(model, counts=None):
    """Return ``{layer_name: fraction of zero kernel weights}`` for layers with kernels.

    ``counts`` (from `zero_counts`) avoids reading the weights again.
    """
    counts = zero_counts(model) if counts is None else counts
    return {name: zeros / total for name, (zeros, total) in counts.items()}


def model_sparsity(model, layers=None, counts=None):
    """Return the fraction of zero kernel weights over ``layers`` (default: all with kernels).

    Args:
        model: a Keras model, pruned (wrapped), stripped or plain.
        layers: names of the layers to count (wrapped layers by the name of the
            layer they wrap); None counts every layer with a kernel.
        counts: the result of `zero_counts`, to avoid reading the weights again.

    Returns:
        A float in [0, 1], weighted by kernel size.
    """
    counts = zero_counts(model) if counts is None else counts
    chosen = [c for name, c in counts.items() if layers is None or name in layers]
    total = sum(t for _, t in chosen)
    return sum(z for z, _ in chosen) / total if total else 0.0
