"""Mixed precision for training stages, with float32 kept at the model's boundary.

`with_policy` clones a model so its layers compute in float16/bfloat16 while
keeping float32 variables, with the output layer(s) in float32 (stable softmax
and loss). `to_float32` clones it back to a pure float32 model with the same
weights, which is what every exporter should receive, so artifacts take and
return float32.
"""

from tfdeploy.model_io import check_model
from tfdeploy._keras import keras
from tfdeploy._walk import producer
from tfdeploy.compress.graph import flatten
from tfdeploy.compress.history import carry
from tfdeploy.errors import CompressionError

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def _clone(model, policy):
    work = flatten(model)
    outputs = {producer(t).name for t in work.outputs}

    def clone_fn(layer):
        config = layer.get_config()
        if not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = "float32" if layer.name in outputs else policy
        return type(layer).from_config(config)

    out = keras.models.clone_model(work, clone_function=clone_fn)
    out.set_weights(work.get_weights())
    return carry(model, out)


def with_policy(model, policy="mixed_float16"):
    """Return a copy of ``model`` whose layers use ``policy`` (outputs stay float32).

    Args:
        model: a built Keras 2 model (not wrapped for pruning/QAT/clustering).
        policy: "mixed_float16" (GPUs), "mixed_bfloat16" (TPUs, recent CPUs) or
            "float32". Defaults to "mixed_float16".

    Returns:
        A new ``keras.Model``: inputs and outputs float32, inner compute in the
        policy's dtype. Compile it normally: Keras adds loss scaling for float16.

    Raises:
        CompressionError: unknown policy.
    """
    model = check_model(model)
    if policy not in POLICIES:
        raise CompressionError(
            f"Unrecognized policy={policy!r}. Supported policies are: {list(POLICIES)}.")
    return _clone(model, policy)


def to_float32(model):
    """Return a pure float32 copy of a (possibly mixed-precision) model, for export."""
    model = check_model(model)
    return _clone(model, "float32")


def compute_dtypes(model):
    """``{layer: compute dtype}`` of every layer (to check a policy took effect)."""
    return {layer.name: layer.compute_dtype for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer)}
