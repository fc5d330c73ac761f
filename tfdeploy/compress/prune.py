"""Magnitude pruning of any Keras (tf_keras) model, behind tfdeploy's own API."""

import fnmatch

from tfdeploy._keras import check_model, keras, tfmot
from tfdeploy.compress._tfmot import prune_registry, prune_wrapper_class
from tfdeploy.compress.schedules import get_schedule, steps_of
from tfdeploy.errors import CompressionError, ModelTypeError


def _prunable(layer):
    registry = prune_registry()
    prunable_layer = tfmot().sparsity.keras.PrunableLayer
    if isinstance(layer, prunable_layer):
        return True
    return registry.supports(layer) and bool(registry._weight_names(layer))


def _selector(model, layers):
    """Build ``layer -> bool`` from None / names / glob patterns / types / a callable."""
    if layers is None:
        return _prunable
    if callable(layers) and not isinstance(layers, type):
        return layers
    items = layers if isinstance(layers, (list, tuple, set)) else [layers]
    names = [i for i in items if isinstance(i, str)]
    types = tuple(i for i in items if isinstance(i, type))
    other = [i for i in items if not isinstance(i, (str, type))]
    if other:
        raise CompressionError(
            f"layers must hold layer names, glob patterns or layer classes, received {other!r}.")
    all_names = [layer.name for layer in model.layers]
    for pattern in names:
        if not fnmatch.filter(all_names, pattern):
            raise CompressionError(
                f"No layer matches {pattern!r}. Layers in this model: {all_names}.")

    def select(layer):
        return (any(fnmatch.fnmatchcase(layer.name, p) for p in names)
                or (bool(types) and isinstance(layer, types)))

    return select


def copy_model(model):
    """Return an independent copy of ``model`` (new layers, same weights)."""
    try:
        clone = keras.models.clone_model(model)
    except Exception as exc:  # subclassed models cannot be cloned
        raise ModelTypeError(
            f"Could not clone model {model.name!r} ({type(model).__name__}): {exc}. tfdeploy "
            "wrappers need a Sequential or functional model; rebuild subclassed models with "
            "the functional API.") from exc
    clone.set_weights(model.get_weights())
    return clone


def prune(model, target_sparsity=0.8, schedule="polynomial_decay", epochs=None,
          steps_per_epoch=None, layers=None):
    """Wrap a model for magnitude pruning; returns a new model, the input is untouched.

    Train the result with ``model.fit(..., callbacks=tfdeploy.compress.callbacks(model))``
    and call `strip` afterwards.

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
            patterns ("conv*"), layer classes (``keras.layers.Dense``), or a
            callable ``layer -> bool``. Defaults to None.

    Returns:
        A new ``keras.Model`` whose selected layers are tfmot pruning wrappers.

    Raises:
        ModelTypeError: Keras 3 model, non-model, or subclassed model.
        CompressionError: bad sparsity, schedule, window or layer selection.

    Example:
        >>> pruned = prune(model, 0.8, epochs=3, steps_per_epoch=train_ds)
        >>> pruned.compile(...); pruned.fit(train_ds, epochs=3, callbacks=callbacks(pruned))
    """
    check_model(model)
    schedule = get_schedule(schedule, target_sparsity)
    spe = steps_of(steps_per_epoch)
    total = spe * int(epochs) if (spe and epochs) else None
    if epochs is not None and int(epochs) < 1:
        raise CompressionError(f"epochs must be at least 1, received {epochs!r}.")
    tf_schedule = schedule.to_tfmot(steps_per_epoch=spe, total_steps=total)
    if any(isinstance(layer, prune_wrapper_class())
           for layer in model.layers):
        raise CompressionError(
            f"Model {model.name!r} is already wrapped for pruning; call "
            "tfdeploy.compress.strip(model) before pruning it again.")
    select = _selector(model, layers)
    chosen, refused = [], []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or not select(layer):
            continue
        (chosen if _prunable(layer) else refused).append(layer.name)
    if refused and layers is not None:
        raise CompressionError(
            f"Layer(s) {refused} cannot be pruned (tfmot has no pruning support for their type "
            "or they have no weights). Select other layers.")
    if not chosen:
        raise CompressionError(
            f"No prunable layer selected in model {model.name!r}; it needs Conv/Dense-like "
            "layers with weights.")
    work = copy_model(model)
    wrap = tfmot().sparsity.keras.prune_low_magnitude
    chosen_set = set(chosen)

    def clone_fn(layer):
        if layer.name in chosen_set:
            return wrap(layer, pruning_schedule=tf_schedule)
        return layer

    pruned = keras.models.clone_model(work, clone_function=clone_fn)
    pruned._tfdeploy_pruning = {"schedule": schedule.get_config(), "layers": chosen,
                                "begin_step": tf_schedule.begin_step,
                                "end_step": tf_schedule.end_step,
                                "frequency": tf_schedule.frequency}
    return pruned


def is_pruning_wrapped(model):
    """True when ``model`` holds tfmot pruning wrappers (still in training form)."""
    wrapper = prune_wrapper_class()
    return any(isinstance(layer, wrapper) for layer in model.layers)
