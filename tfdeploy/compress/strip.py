"""Remove training-only wrappers so a plain Keras model remains."""

from tfdeploy.bridge import to_keras3
from tfdeploy._keras import tfmot
from tfdeploy._tfmot import pruning_masks
from tfdeploy.compress.graph import copy_model
from tfdeploy.compress.history import carry, notes
from tfdeploy.model_io import check_model
from tfdeploy.compress.wrappers import (is_clustering_wrapped, is_pruning_wrapped,
                                        is_quantization_aware)


def strip(model, keras3=False):
    """Return a plain model with pruning or clustering wrappers removed (input untouched).

    The masks are applied, so pruned weights are exact zeros in the returned
    model's kernels; clustered kernels hold only their centroid values.
    Quantization-aware models keep their quantize wrappers: the TFLite
    converter reads the learned ranges from them.

    Args:
        model: a model returned by `prune` (after training) or any Keras model.
        keras3: return the stripped model as a Keras 3 model
            (`tfdeploy.bridge.to_keras3`, outputs checked equal), for users who
            keep working in Keras 3. Not for quantization-aware models, whose
            wrappers have no Keras 3 form. Defaults to False.

    Returns:
        A new ``keras.Model`` (Keras 3 with ``keras3=True``).
    """
    model = check_model(model)
    if is_pruning_wrapped(model):
        for layer in model.layers:
            for weight, mask in pruning_masks(layer):
                weight.assign(weight * mask)
        stripped = tfmot().sparsity.keras.strip_pruning(model)
        out = copy_model(stripped)
    elif is_clustering_wrapped(model):
        stripped = tfmot().clustering.keras.strip_clustering(model)
        out = copy_model(stripped)
        frozen = notes(model).get("clustered", {}).get("params", {}).get("frozen_sparse", [])
        for name in frozen:
            out.get_layer(name).trainable = True  # frozen by `cluster` to keep its zeros
    else:
        out = model if is_quantization_aware(model) else copy_model(model)
    out = carry(model, out)
    return to_keras3(out) if keras3 else out
