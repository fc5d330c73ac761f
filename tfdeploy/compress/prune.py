"""Magnitude pruning of any Keras (tf_keras) model, behind tfdeploy's own API."""

from tfdeploy.model_io import check_model
from tfdeploy._keras import keras, tfmot
from tfdeploy._tfmot import is_prune_wrapper, prunable_weight_names
from tfdeploy.compress.graph import copy_model, flatten
from tfdeploy.compress.history import record
from tfdeploy.compress.schedules import get_schedule, steps_of, whole_number
from tfdeploy.compress.selection import resolve
from tfdeploy.compress.distribute import check_scope
from tfdeploy.compress.wrappers import is_pruning_wrapped, is_quantization_aware
from tfdeploy.errors import CompressionError


def _prunable(layer):
    if isinstance(layer, tfmot().sparsity.keras.PrunableLayer):
        return True
    return bool(prunable_weight_names(layer))


def why_not_prunable(layer):
    """None when tfmot can prune ``layer``, else a short reason."""
    if _prunable(layer):
        return None
    if not layer.weights:
        return f"{type(layer).__name__} has no weights"
    return f"tfmot has no pruning support for {type(layer).__name__}"


POLICIES = (None, "xnnpack")


def prune(model, target_sparsity=0.8, schedule="polynomial_decay", epochs=None,
          steps_per_epoch=None, layers=None, policy=None):
    """Wrap a model for magnitude pruning; returns a new model, the input is untouched.

    Train the result with ``model.fit(..., callbacks=tfdeploy.compress.callbacks(model))``
    and call `strip` afterwards. Nested models (a base model inside a wrapper
    model) are flattened first so the inner layers are pruned too. Which layers
    were pruned, and why the others were not, is in `tfdeploy.compress.report`.

    Args:
        model: a built Keras 2 (tf_keras) Sequential or functional model.
        target_sparsity: final fraction of zero weights in each pruned layer.
            Defaults to 0.8.
        schedule: "polynomial_decay", "constant", or a `PolynomialDecay` /
            `ConstantSparsity` instance (which then carries its own target).
            Defaults to "polynomial_decay".
        epochs: number of epochs the pruning fit will run; with
            ``steps_per_epoch`` it sets the end of the default window.
        steps_per_epoch: int, or the training ``tf.data.Dataset`` (its cardinality
            is used). Needed for epoch-based schedules.
        layers: which layers to prune: None (every prunable layer), names or glob
            patterns ("conv*"), layer classes (``keras.layers.Dense``), a
            callable ``layer -> bool``, or a `Select` (regex, skip first/last).
            Defaults to None.
        policy: None, or "xnnpack" for tfmot's latency-oriented policy: only
            1x1 Conv2D layers are pruned, and the model must have the shape
            XNNPACK's sparse inference accelerates (ZeroPadding2D + 3x3/2 Conv2D
            on a 3-channel input ... GlobalAveragePooling2D). Defaults to None.

    Returns:
        A new ``keras.Model`` whose selected layers are tfmot pruning wrappers.

    Raises:
        ModelTypeError: Keras 3 model, non-model, or subclassed model.
        CompressionError: bad sparsity, schedule, window, layer selection, or a
            model the chosen policy does not support.

    Example:
        >>> pruned = prune(model, 0.8, epochs=3, steps_per_epoch=train_ds)
        >>> pruned.compile(...); pruned.fit(train_ds, epochs=3, callbacks=callbacks(pruned))
    """
    model = check_model(model, graph=True)
    check_scope(model, "prune")
    if policy not in POLICIES:
        raise CompressionError(
            f"Unrecognized policy={policy!r}. Supported policies are: {list(POLICIES)}.")
    schedule = get_schedule(schedule, target_sparsity)
    spe = steps_of(steps_per_epoch)
    if epochs is not None:
        epochs = whole_number(epochs, "epochs", 1)
    total = spe * epochs if (spe and epochs) else None
    tf_schedule = schedule.to_tfmot(steps_per_epoch=spe, total_steps=total)
    _refuse_wrapped(model)
    work = flatten(model)
    why_not = why_not_prunable
    if policy == "xnnpack":
        why_not = _xnnpack_check(work)
    chosen, skipped = resolve(work, layers, why_not, "pruning")
    pruned = wrap_for_pruning(work, chosen, pruning_schedule=tf_schedule)
    params = {"target_sparsity": schedule.final_sparsity, "schedule": schedule.get_config(),
              "begin_step": tf_schedule.begin_step, "end_step": tf_schedule.end_step,
              "frequency": tf_schedule.frequency, "policy": policy}
    # the wrapped model's own view (as before the history); the history keeps it for good
    object.__setattr__(pruned, "_tfdeploy_pruning", {
        "schedule": params["schedule"], "layers": chosen, "begin_step": params["begin_step"],
        "end_step": params["end_step"], "frequency": params["frequency"], "policy": policy})
    record(pruned, "pruned", chosen, skipped, source=model,
           detail=f"{schedule.final_sparsity:.0%} magnitude", params=params)
    return pruned


def _refuse_wrapped(model):
    if is_pruning_wrapped(model):
        raise CompressionError(
            f"Model {model.name!r} is already wrapped for pruning; call "
            "tfdeploy.compress.strip(model) before pruning it again.")
    if is_quantization_aware(model):
        raise CompressionError(
            f"Model {model.name!r} is quantization-aware; prune the float model first, then "
            "apply QAT (tfdeploy.compress.quantize keeps the zeros).")


def _xnnpack_check(model):
    policy = tfmot().sparsity.keras.PruneForLatencyOnXNNPack()
    try:
        policy.ensure_model_supports_pruning(model)
    except ValueError as exc:
        raise CompressionError(
            f"policy='xnnpack' cannot be used on model {model.name!r}: {exc}. XNNPACK's sparse "
            "inference needs ZeroPadding2D(1) + Conv2D(3x3, strides 2, valid) on a 3-channel "
            "input, then only 1x1 Conv2D/DepthwiseConv2D/BatchNorm/ReLU/Add layers, then "
            "GlobalAveragePooling2D(keepdims=True) (a MobileNet-like model). Use policy=None "
            "for other models.") from exc

    def why_not(layer):
        reason = why_not_prunable(layer)
        if reason is None and not policy.allow_pruning(layer):
            return "xnnpack policy prunes only 1x1 Conv2D"
        return reason

    return why_not


def wrap_for_pruning(model, chosen, **params):
    """Clone a flat private copy with pruning wrappers on ``chosen`` (its layers are reused)."""
    chosen_set = set(chosen)
    wrap = tfmot().sparsity.keras.prune_low_magnitude

    def clone_fn(layer):
        return wrap(layer, **params) if layer.name in chosen_set else layer

    try:
        return keras.models.clone_model(model, clone_function=clone_fn)
    except ValueError as exc:
        raise CompressionError(f"Could not wrap model {model.name!r} for pruning: {exc}") from exc


__all__ = ["prune", "why_not_prunable", "wrap_for_pruning", "is_pruning_wrapped", "copy_model",
           "is_prune_wrapper", "POLICIES"]
