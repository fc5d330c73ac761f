"""Rebuild a functional Keras graph: flatten nested models, swap layers for new ones.

tfmot's wrappers only look at ``model.layers``: a base model inside a wrapper
model (the usual transfer-learning shape) is one opaque layer to them.
`flatten` replays the graph so every inner layer becomes a layer of one flat
model, keeping weights, ``trainable`` flags and a ``training=False`` given to
the base model call (for its BatchNormalization and dropout layers). `rebuild`
is the same replay with a hook that lets slimming and low-rank factorisation
put new layers in place of old ones.
"""

import functools

from tfdeploy.model_io import check_model
from tfdeploy._keras import keras, tf
from tfdeploy._walk import is_graph_network, leaf_layers, nodes
from tfdeploy.compress.history import carry
from tfdeploy.errors import ModelTypeError

#: Layers that keep a ``training=False`` given to the nested model's call once flattened: the
#: transfer-learning ``base(x, training=False)`` means "BatchNorm uses its moving statistics,
#: no dropout". Other layers get no ``training`` argument, so the wrappers put on them later
#: follow ``fit``'s training phase. (The tfmot wrappers are applied through ``clone_model``,
#: which was not seen to keep the argument either way: the MobileNet fine-tune + pruning test
#: prunes inside the base with both rules.)
_INFERENCE_ONLY = (keras.layers.BatchNormalization, keras.layers.Dropout,
                   keras.layers.SpatialDropout2D, keras.layers.GaussianNoise,
                   keras.layers.GaussianDropout, keras.layers.AlphaDropout)


def _graph(model):
    if not is_graph_network(model):
        raise ModelTypeError(
            f"Model {model.name!r} ({type(model).__name__}) is subclassed; tfdeploy can only "
            "rewrite Sequential or functional models. Rebuild it with the functional API.")
    return model


@functools.lru_cache(maxsize=None)
def _keras_tensor():
    """``type(keras.Input(...))``, made on first use: a ``keras.Input`` at import would start
    TensorFlow (a graph-runner thread, 0.3 s) in every process that imports `compress`."""
    return type(keras.Input((1,)))


def _replay(model, inputs, replace, training):
    tmap = {id(t): n for t, n in zip(model.inputs, inputs)}
    keras_tensor = _keras_tensor()

    def sub(value):
        return tmap[id(value)] if isinstance(value, keras_tensor) else value

    for node in nodes(model):
        layer = node.layer
        args = tf.nest.map_structure(sub, node.call_args)
        kwargs = tf.nest.map_structure(sub, dict(node.call_kwargs))
        if training is False and isinstance(layer, _INFERENCE_ONLY):
            kwargs.setdefault("training", False)
        if isinstance(layer, keras.Model):
            _graph(layer)
            inner = kwargs.get("training", training)
            out = _replay(layer, tf.nest.flatten(args), replace, inner)
            out = out if len(layer.outputs) > 1 else [out]
        else:
            fn = replace(layer) if replace is not None else None
            out = (fn or layer)(*args, **kwargs)
        for old, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(out)):
            tmap[id(old)] = new
    outputs = [tmap[id(t)] for t in model.outputs]
    return outputs if len(outputs) > 1 else outputs[0]


def rebuild(model, replace=None):
    """Replay ``model``'s graph into a new flat functional model.

    The layer objects are reused (call it on a copy when the input must stay
    untouched). ``replace(layer)`` may return a callable (a new layer, or a
    function of the layer's input tensors) used instead of ``layer``; None keeps
    the layer.

    Args:
        model: a built Sequential or functional model (nested models allowed).
        replace: ``layer -> callable or None``. Defaults to None.

    Returns:
        A new ``keras.Model`` with the same inputs and output structure.
    """
    model = check_model(model)
    _graph(model)
    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name.split(":")[0])
              for t in model.inputs]
    outputs = _replay(model, inputs, replace, None)
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=model.name)


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
    return carry(model, clone)


def is_nested(model):
    """True when one of ``model.layers`` is itself a model."""
    return any(isinstance(layer, keras.Model) for layer in model.layers)


def flatten(model):
    """Return a flat copy of a model whose layers include nested models.

    The input model is untouched; the copy has the same weights, so it predicts
    the same values.

    Args:
        model: a built Sequential or functional model.

    Returns:
        A new ``keras.Model`` without nested models (a copy when there were none).

    Raises:
        ModelTypeError: a subclassed (outer or nested) model, or two inner layers
            with the same name.
    """
    if not is_graph_network(model) or not is_nested(model):
        return copy_model(model)
    # one replay with a new layer in place of each old one (a shared layer stays shared),
    # then the old weights: not a clone of the whole graph replayed a second time
    fresh = {}

    def new_layer(layer):
        if id(layer) not in fresh:
            fresh[id(layer)] = (layer, layer.__class__.from_config(layer.get_config()))
        return fresh[id(layer)][1]

    flat = carry(model, rebuild(model, new_layer))
    for old, new in fresh.values():
        new.set_weights(old.get_weights())
    names = [layer.name for layer in flat.layers]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ModelTypeError(
            f"Flattening model {model.name!r} gives duplicate layer names {dupes}; rename the "
            "inner or outer layers so every layer name is unique.")
    return flat


__all__ = ["rebuild", "flatten", "is_nested", "copy_model", "leaf_layers", "nodes"]
