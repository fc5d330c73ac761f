"""One home for Keras model I/O: `check_model`, `load_model` and `save_model`.

    model = tfdeploy.model_io.load_model("m.keras")   # Keras 2 or 3 file -> tf_keras model
    tfdeploy.model_io.save_model(model, "m.keras")    # its technique history goes with it
    model = tfdeploy.model_io.check_model(model)      # what every wrapper and exporter does

Every tfdeploy wrapper, exporter, command and the tuner load, save and check
models through this module. It sits on the ground floor: it imports only the
floor (Keras selection, tfmot, the layer walker, the history's storage). A Keras 3
model or ``.keras`` file is converted by `tfdeploy.bridge`, imported when one is
met (and logged on the ``tfdeploy.bridge`` logger).
"""

import logging
import os

from tfdeploy._history import HISTORY_FILE, history, read_history, set_history, write_history
from tfdeploy._keras import is_keras3_model, keras, tfmot
from tfdeploy._walk import is_graph_network, leaf_layers
from tfdeploy.errors import ArtifactError, ModelTypeError

log = logging.getLogger("tfdeploy.bridge")


def _keras2_file(path):
    """Load a Keras 2 file (quantization-aware models included), uncompiled."""
    try:
        with tfmot().quantization.keras.quantize_scope():
            return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for unreadable files
        raise ArtifactError(
            f"Could not load a Keras model from {path!r} ({exc}). Pass a model saved with "
            "model.save(...) (.keras, .h5 or a Keras SavedModel directory; "
            "quantization-aware models reload only from .h5).") from exc


def load_model(path):
    """Load a Keras model file as a Keras 2 model, with its technique history.

    A Keras 3 ``.keras`` file is bridged to Keras 2 (`tfdeploy.bridge.to_keras2`,
    outputs checked). The technique history stored by `save_model` comes back on
    the model (`tfdeploy.compress.history`); a file written by plain
    ``model.save`` loads with an empty one.

    Args:
        path: a ``.keras`` file (Keras 2 or 3), an ``.h5`` file or a Keras 2
            SavedModel directory. Quantization-aware Keras 2 models load too.

    Returns:
        A tf_keras ``Model`` (uncompiled).

    Raises:
        ArtifactError: the path is missing or unreadable.
        UnsupportedLayerError: a Keras 3 file with a layer the bridge cannot translate.

    Example:
        >>> model = tfdeploy.model_io.load_model("saved_models/pruned.keras")
        >>> last = tfdeploy.compress.history(model)[-1]
        >>> last["technique"]
        'pruned'
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ArtifactError(f"Keras model {path!r} does not exist.")
    from tfdeploy import bridge  # converts Keras 3; imported here, the floor stays below it

    if bridge.is_keras3_file(path):
        model = bridge.to_keras2(path)
        log.warning("Loaded the Keras 3 file %s and bridged it to Keras 2 (tf_keras): outputs "
                    "equal within %g on random inputs.", path, bridge.ATOL)
    else:
        model = _keras2_file(path)
    return set_history(model, read_history(path))


def save_model(model, filepath, **kwargs):
    """``model.save(filepath, **kwargs)``, then store its technique history with it.

    Args:
        model: a tf_keras model.
        filepath: a ``.keras`` / ``.h5`` file or a SavedModel directory.
        **kwargs: passed to ``model.save``.

    Returns:
        ``filepath``.
    """
    model.save(filepath, **kwargs)
    write_history(filepath, history(model))
    return filepath


def check_model(model, what="model", graph=False):
    """The Keras 2 model tfdeploy works on: bridges Keras 3 models, rejects the rest clearly.

    Every tfdeploy wrapper and exporter starts with ``model = check_model(model)``.
    A Keras 3 model (or a path to a saved model) becomes a tf_keras model, with
    one log line saying so.

    Args:
        model: a Keras 2 or Keras 3 model, or the path of a saved model.
        what: how to name the argument in messages. Defaults to "model".
        graph: also require a Sequential or functional model (the wrappers
            rebuild the graph; subclassed models hide it). Defaults to False.

    Returns:
        A built tf_keras ``Model``: ``model`` itself, or its bridged copy.

    Raises:
        ModelTypeError: not a Keras model, unbuilt, subclassed where ``graph``
            is set, or a Keras 3 model with a layer that cannot be bridged
            (`UnsupportedLayerError`).
    """
    if isinstance(model, (str, os.PathLike)) and os.path.exists(model):
        model = load_model(model)
    if is_keras3_model(model):
        from tfdeploy import bridge

        bridged = bridge.to_keras2(model)
        log.warning("Bridged Keras 3 model %r to Keras 2 (tf_keras) for tfdeploy: %d layers, "
                    "outputs equal within %g on random inputs.", model.name,
                    len(list(leaf_layers(bridged))), bridge.ATOL)
        model = bridged
    if not isinstance(model, keras.Model):
        raise ModelTypeError(
            f"Expected `{what}` to be a Keras model (tf_keras `keras.Model`, a Keras 3 model, "
            f"or the path of a saved model), received {type(model).__name__!r}.")
    if not model.built:
        raise ModelTypeError(
            f"`{what}` has not been built yet; give its first layer an input shape "
            "(e.g. `keras.Input((32, 32, 1))`) or call `model.build(input_shape)` first.")
    if graph and not is_graph_network(model) and not isinstance(model, keras.Sequential):
        raise ModelTypeError(
            f"`{what}` {model.name!r} ({type(model).__name__}) is a subclassed model: its "
            "layers are wired in Python code, so tfdeploy's wrappers cannot rebuild it. Build "
            "the same layers with the functional API (`keras.Model(inputs, outputs)`) or as a "
            "`keras.Sequential`, and copy the weights with `set_weights`.")
    return model


__all__ = ["check_model", "load_model", "save_model", "read_history", "write_history",
           "HISTORY_FILE"]
