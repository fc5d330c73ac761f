"""Kernels per layer from a Keras model or a ``.tflite`` file, for weight-distribution plots."""

import numpy as np

from tfdeploy.compress.sparsity import kernels_by_layer
from tfdeploy.verify import weight_tensors


def model_kernels(model):
    """``{layer_name: kernel}`` of a Keras model (plain, pruned, clustered or QAT-wrapped)."""
    return kernels_by_layer(model)


def tflite_kernels(path, like=None):
    """``{name: stored kernel values}`` of a ``.tflite`` file (int8 levels when quantized).

    Args:
        path: the ``.tflite`` file.
        like: optional ``{layer_name: kernel}`` of the Keras model it came from;
            each TFLite kernel then takes the name of the Keras layer with the
            same number of elements (in order), so plots line up by layer.
    """
    tensors = [t for t in weight_tensors(path) if len(t["shape"]) >= 2]
    if not like:
        return {t["name"]: t["values"] for t in tensors}
    free = list(tensors)
    out = {}
    for name, kernel in like.items():
        match = next((t for t in free if t["values"].size == np.size(kernel)), None)
        if match is not None:
            free.remove(match)
            out[name] = match["values"]
    return out
