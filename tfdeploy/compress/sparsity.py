"""Read kernels and sparsity back from a model's weights (wrapped or plain).

The one kernel reader: `kernels` gives the effective kernels of any layer
(pruning mask applied, clustering centroids gathered, the float kernel of a
quantize wrapper), and everything that counts zeros or distinct values (the
sparsity counts, `tfdeploy.compress.report`, N:M checks, `unique_weights`) reads
through it.
"""

import numpy as np

from tfdeploy._keras import keras
from tfdeploy._walk import leaf_layers
from tfdeploy import _tfmot

_KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")
_MODEL_WEIGHTS = ("bias", "gamma", "beta", "moving_mean", "moving_variance", "embeddings")


def _short(weight):
    return weight.name.split("/")[-1].split(":")[0]


def is_model_weight(weight):
    """True for a layer's own parameter (kernel, bias, BN statistics), False for the
    training-only variables of wrappers (masks, quantizer ranges, cluster indices)."""
    short = _short(weight)
    return short.endswith("kernel") or short in _MODEL_WEIGHTS


def unwrap(layer):
    """The layer a tfmot wrapper wraps, or ``layer`` itself."""
    inner = getattr(layer, "layer", None)
    return inner if isinstance(inner, keras.layers.Layer) else layer


def kernels(layer):
    """``[(name, array)]``: the effective kernels of one (possibly wrapped) layer.

    A pruning wrapper gives ``kernel * mask``, a clustering wrapper the clustered
    kernel, a quantize wrapper its float kernel; a plain layer its kernels
    (``kernel``, ``depthwise_kernel``, ``pointwise_kernel``, ``embeddings``).
    """
    masked = _tfmot.pruning_masks(layer)
    if masked:
        return [(weight.name, weight.numpy() * mask.numpy()) for weight, mask in masked]
    for read in (_tfmot.clustered_kernels, _tfmot.quantize_wrapper_kernels):
        found = read(layer)
        if found:
            return found
    return [(w.name, w.numpy()) for w in layer.weights
            if _short(w) in _KERNEL_NAMES or _short(w).endswith("kernel")]


def kernel(layer):
    """The first effective kernel of ``layer`` (see `kernels`), or None."""
    found = kernels(layer)
    return found[0][1] if found else None


def zero_counts(model):
    """Return ``{layer_name: (zeros, total)}`` over the kernels of every layer that has one.

    Wrapped layers (pruning, quantization, clustering) are reported under the
    name of the layer they wrap.
    """
    out = {}
    for layer in leaf_layers(model):
        zeros = total = 0
        for _, arr in kernels(layer):
            zeros += int(np.count_nonzero(arr == 0))
            total += arr.size
        if total:
            out[unwrap(layer).name] = (zeros, total)
    return out


def kernels_by_layer(model):
    """Return ``{layer_name: kernel array}`` (effective values: pruning masks applied).

    Named like `zero_counts` (a wrapped layer under the name of the layer it
    wraps); a layer with several kernels (e.g. separable conv) gets them
    flattened and joined.
    """
    out = {}
    for layer in leaf_layers(model):
        arrays = [arr for _, arr in kernels(layer)]
        if arrays:
            out[unwrap(layer).name] = arrays[0] if len(arrays) == 1 else np.concatenate(
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
