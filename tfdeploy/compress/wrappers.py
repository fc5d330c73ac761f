"""Which training-time wrappers a model holds (pruning, clustering, quantization-aware).

The floor below every wrapper and `strip`: it imports only `_tfmot`, so `prune`,
`cluster`, `quantize`, `slim` and `strip` can all ask without importing each other.
"""

from tfdeploy._tfmot import is_cluster_wrapper, is_prune_wrapper, is_quantize_wrapper


def is_pruning_wrapped(model):
    """True when ``model`` holds tfmot pruning wrappers (still in training form)."""
    return any(is_prune_wrapper(layer) for layer in model.layers)


def is_clustering_wrapped(model):
    """True when ``model`` holds tfmot clustering wrappers."""
    return any(is_cluster_wrapper(layer) for layer in model.layers)


def is_quantization_aware(model):
    """True when ``model`` holds tfmot quantize wrappers."""
    return any(is_quantize_wrapper(layer) for layer in model.layers)
