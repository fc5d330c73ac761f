"""Remove training-only wrappers so a plain Keras model remains."""

from tfdeploy._keras import check_model, tfmot
from tfdeploy.compress._tfmot import pruning_masks
from tfdeploy.compress.graph import copy_model
from tfdeploy.compress.history import carry
from tfdeploy.compress.wrappers import (is_clustering_wrapped, is_pruning_wrapped,
                                        is_quantization_aware)


def strip(model):
    """Return a plain model with pruning or clustering wrappers removed (input untouched).

    The masks are applied, so pruned weights are exact zeros in the returned
    model's kernels; clustered kernels hold only their centroid values.
    Quantization-aware models keep their quantize wrappers: the TFLite
    converter reads the learned ranges from them.

    Args:
        model: a model returned by `prune` (after training) or any Keras model.

    Returns:
        A new ``keras.Model``.
    """
    check_model(model)
    if is_pruning_wrapped(model):
        for layer in model.layers:
            for weight, mask in pruning_masks(layer):
                weight.assign(weight * mask)
        stripped = tfmot().sparsity.keras.strip_pruning(model)
        out = copy_model(stripped)
    elif is_clustering_wrapped(model):
        stripped = tfmot().clustering.keras.strip_clustering(model)
        out = copy_model(stripped)
        for name in getattr(model, "_tfdeploy_frozen_sparse", []):
            out.get_layer(name).trainable = True  # frozen by `cluster` to keep its zeros
    else:
        out = model if is_quantization_aware(model) else copy_model(model)
    return carry(model, out)
