"""Walk a Keras model's layers and graph without importing Keras.

The one layer walker: compression (`tfdeploy.compress.graph`), the compression
report, the bridge and the memory estimate (`tfdeploy.verify.memory`, which must
not import Keras) all use it. A nested model is recognised by its ``layers`` list,
which plain layers (and single-layer wrappers, which have ``layer``) do not have.

It is also the one place that reads Keras's private graph attributes
(``_is_graph_network``, ``_nodes_by_depth``, ``_keras_history``,
``_self_tracked_trackables``), for Keras 2 and Keras 3 alike.
"""


def is_model(layer):
    """True for a (possibly nested) Keras model: it has a ``layers`` list."""
    return isinstance(getattr(layer, "layers", None), list)


def is_graph_network(model):
    """True for a functional model (a Sequential one included): its layers and calls form a
    graph that can be read and rebuilt; False for a subclassed model or a plain layer."""
    return bool(getattr(model, "_is_graph_network", False))


def leaf_layers(model):
    """Every non-model layer of ``model``, nested models expanded, in order."""
    for layer in model.layers:
        if is_model(layer):
            yield from leaf_layers(layer)
        else:
            yield layer


def nodes(model):
    """The call nodes of a functional/Sequential ``model`` from inputs to outputs.

    Input nodes are left out; a nested model appears as one node (its layer is
    the model).
    """
    by_depth = model._nodes_by_depth
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            if not node.is_input:
                yield node


def producer(tensor, default=None):
    """The layer (Keras 3: operation) whose call made the symbolic ``tensor``, else ``default``."""
    history = getattr(tensor, "_keras_history", None)
    return history[0] if history is not None else default


def tracked_layers(model):
    """The layers a Keras 2 model tracks itself, in order, its ``InputLayer`` included when it
    has one (``_self_tracked_trackables``); None when it tracks none."""
    return getattr(model, "_self_tracked_trackables", None)
