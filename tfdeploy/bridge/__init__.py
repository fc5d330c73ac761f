"""Keras 3 models in, Keras 3 models out: the bridge to Keras 2 (tf_keras) and back.

TensorFlow's ``import keras`` is Keras 3, but the Model Optimization Toolkit
only accepts Keras 2 (``tf_keras``) models. `to_keras2` rebuilds a Keras 3
Sequential or functional model (in memory, or a ``.keras`` file) layer by layer
in tf_keras, copies its weights (checked by count, shape and name) and, by
default, proves the two compute the same outputs on random inputs and on inputs
in the model's real range (`realistic_inputs`: pixels when it rescales, the
Normalization statistics, valid and padded token ids). `to_keras3`
is the way back for plain (stripped) models. `tfdeploy.model_io.check_model`, which
every tfdeploy wrapper and exporter calls, bridges a Keras 3 model automatically, and
`tfdeploy.model_io.load_model` a Keras 3 ``.keras`` file.

A ``.keras`` file from Keras 3 is read with Keras 3 itself
(``keras.saving.load_model``): its weight file is keyed by Keras 3's own
saving internals (per-container class-name keys, sub-layer groups such as
``query_dense`` or ``cell``), and the numerical check needs the original model
anyway. Importing Keras 3 does not change ``tf.keras``: tf_keras stays the
training Keras.
"""

import importlib
import json
import os
import zipfile

import numpy as np

from tfdeploy import _tfmot
from tfdeploy._deprecated import moved
from tfdeploy._keras import is_keras3_model, keras
from tfdeploy._walk import leaf_layers, producer
from tfdeploy.bridge._convert import Converter, Side, node_call
from tfdeploy.bridge._layers import SHARED_LAYERS, TO_KERAS2, TO_KERAS3
from tfdeploy.errors import ArtifactError, ModelTypeError, VerificationError

KERAS2 = Side(keras, "tf_keras.src.layers", lists_single_outputs=True)
ATOL = 1e-5


def _keras3():
    return Side(importlib.import_module("keras"), "keras.src.layers", lists_single_outputs=False)


def is_keras3_file(path):
    """True when ``path`` is a ``.keras`` archive written by Keras 3 (reads its metadata only)."""
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("metadata.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False
    return str(meta.get("keras_version", "")).startswith("3.")


def random_inputs(model, batch=2, seed=0):
    """Seeded random inputs for ``model`` (integers stay below the smallest Embedding size)."""
    rng = np.random.default_rng(seed)
    vocab = min([int(layer.input_dim) for layer in leaf_layers(model)
                 if type(layer).__name__ == "Embedding"] or [10])
    inputs = []
    for tensor in model.inputs:
        shape = [batch] + [8 if d is None else int(d) for d in tensor.shape[1:]]
        dtype = np.dtype(getattr(tensor.dtype, "name", tensor.dtype))
        if dtype.kind in "iu":
            inputs.append(rng.integers(0, vocab, shape).astype(dtype))
        elif dtype.kind == "f":
            inputs.append(rng.standard_normal(shape).astype(dtype))
        else:
            raise ModelTypeError(
                f"Input {tensor.name!r} has dtype {dtype}; the bridge can only check numeric "
                "inputs. Pass verify=False and compare the models on your own data.")
    return inputs


def _consumers(model):
    """``{input index: first layer object reading that input}`` (None when unknown)."""
    config = model.get_config()
    entries = config.get("layers", [])
    if isinstance(model, _keras3().keras.Sequential) or isinstance(model, keras.Sequential):
        first = [e for e in entries if e["class_name"] != "InputLayer"]
        return {0: model.get_layer(first[0]["config"]["name"]) if first else None}
    names = [producer(t) for t in model.inputs]
    names = [getattr(n, "name", n) for n in names]
    out = {}
    for entry in entries:
        if entry["class_name"] == "InputLayer":
            continue
        for node in entry.get("inbound_nodes", []):
            first = _walk_refs(node_call(node)[0])[:1]  # the call's first tensor argument
            for i, name in enumerate(names):
                if i not in out and first and first[0][0] == name:
                    out[i] = model.get_layer(entry.get("name") or entry["config"]["name"])
    return out


def _walk_refs(value):
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[0], str):
        return [value]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _walk_refs(v)]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _walk_refs(v)]
    return []


def _sample(layer, shape, dtype, rng):
    """Inputs in the range ``layer`` expects, or None when it says nothing about it."""
    kind = type(layer).__name__
    if kind == "Rescaling":  # real inputs map to [0, 1] (or [-1, 1] with a negative offset)
        scale = np.asarray(layer.scale, np.float64)
        offset = np.asarray(layer.offset, np.float64)
        lo, hi = (np.minimum(offset, 0.0) - offset) / scale, (1.0 - offset) / scale
        lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
        return (lo + (hi - lo) * rng.random(shape)).astype(dtype)
    if kind == "Normalization" and not getattr(layer, "invert", False):
        mean = np.asarray(layer.mean, np.float64)
        std = np.sqrt(np.asarray(layer.variance, np.float64))
        return (mean + std * rng.standard_normal(shape)).astype(dtype)
    if kind == "Embedding":
        ids = rng.integers(1 if layer.mask_zero else 0, int(layer.input_dim), shape)
        if layer.mask_zero and len(shape) == 2:  # padded sequences: trailing zeros
            lengths = rng.integers(1, shape[1] + 1, shape[0])
            ids[np.arange(shape[1])[None, :] >= lengths[:, None]] = 0
        return ids.astype(dtype)
    if hasattr(layer, "layers") and getattr(layer, "inputs", None):  # a nested model
        inner = _consumers(layer).get(0)
        return _sample(inner, shape, dtype, rng) if inner is not None else None
    return None


def realistic_inputs(model, batch=4, seed=1):
    """Seeded inputs in the range the model's first layers expect.

    An input read first by ``Rescaling`` gets values that map to [0, 1] (pixels
    0-255 for ``1/255``), one read by ``Normalization`` is drawn from its mean
    and variance, one read by ``Embedding`` gets valid token ids (padded with
    trailing zeros when ``mask_zero``); any other input is standard normal.
    """
    rng = np.random.default_rng(seed)
    consumers = _consumers(model)
    base = random_inputs(model, batch=batch, seed=seed)
    out = []
    for i, (tensor, default) in enumerate(zip(model.inputs, base)):
        layer = consumers.get(i)
        sample = _sample(layer, default.shape, default.dtype, rng) if layer is not None \
            else None
        out.append(default if sample is None else sample)
    return out


def max_abs_diff(a, b, inputs):
    """Largest absolute difference between the outputs of models ``a`` and ``b``."""
    x = inputs[0] if len(inputs) == 1 else inputs
    ya, yb = _flat(a(x, training=False)), _flat(b(x, training=False))
    if len(ya) != len(yb):
        raise VerificationError(f"The models return {len(ya)} and {len(yb)} outputs.")
    return max(float(np.max(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64))))
               for p, q in zip(ya, yb))


def _flat(value):
    if isinstance(value, dict):
        return [t for k in sorted(value) for t in _flat(value[k])]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flat(v)]
    return [value]


def _verify(source, target, atol):
    """Compare on standard-normal inputs and on inputs in the model's real range."""
    worst = 0.0
    for what, inputs in (("random", random_inputs(source)),
                         ("real-range", realistic_inputs(source))):
        diff = max_abs_diff(source, target, inputs)
        if not diff <= atol:
            raise VerificationError(
                f"The bridged model {target.name!r} differs from the original by {diff:.3g} "
                f"(max abs) on {what} inputs, over the tolerance {atol:g}. Please report the "
                "model; pass verify=False only to inspect it.",
                failures=[{"output": "all", "inputs": what, "max_abs_diff": diff,
                           "atol": atol}])
        worst = max(worst, diff)
    return worst


def _rebuild(model, source, target, direction, verify, atol):
    if not isinstance(model, source.keras.Model):
        raise ModelTypeError(f"Expected a Keras model, received {type(model).__name__!r}.")
    if not source.is_graph(model):
        raise ModelTypeError(
            f"Model {model.name!r} ({type(model).__name__}) is subclassed; its layers and calls "
            "live in Python code the bridge cannot read. Rebuild it with the functional API "
            "(keras.Model(inputs, outputs)) or as a keras.Sequential.")
    if not model.built or not getattr(model, "inputs", None):
        raise ModelTypeError(
            f"Model {model.name!r} has not been built yet; give its first layer an input shape "
            "(keras.Input(...)) or call model.build(input_shape) first.")
    converter = Converter(source, target, direction)
    out = converter.model(model)
    converter.copy_weights()
    if verify:
        _verify(model, out, atol)
    return out


def load_keras3(path):
    """Load a Keras 3 ``.keras`` file with Keras 3 (no compile)."""
    if not os.path.exists(path):
        raise ArtifactError(f"Keras model {path!r} does not exist.")
    try:
        return _keras3().keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for unreadable files
        raise ArtifactError(
            f"Could not load the Keras 3 model {path!r} ({exc}). Custom layers need "
            "custom_objects; the bridge itself translates built-in layers only.") from exc


def to_keras2(model_or_path, verify=True, atol=ATOL):
    """Rebuild a Keras 3 model as an equivalent Keras 2 (``tf_keras``) model.

    Every layer is re-created from its translated config (the built-in layers
    listed in `SHARED_LAYERS`, nested Sequential/functional models, and the
    ``x + c`` / ``x * c`` operations Keras 3 records), its weights are copied
    after checking their count, shapes and names, and with ``verify`` the two
    models' outputs are compared on seeded random inputs.

    Args:
        model_or_path: a built Keras 3 Sequential or functional model, or the
            path of a ``.keras`` file saved by Keras 3.
        verify: compare outputs on random inputs. Defaults to True.
        atol: largest allowed absolute difference. Defaults to 1e-5.

    Returns:
        A new tf_keras ``Model`` with the same layer names and weights.

    Raises:
        UnsupportedLayerError: a layer (named, with its class) or option that
            has no Keras 2 equivalent.
        ModelTypeError: not a Keras 3 model, a subclassed or unbuilt model.
        VerificationError: the outputs differ by more than ``atol``.
        ArtifactError: the file cannot be read.

    Example:
        >>> import keras                      # Keras 3
        >>> k3 = keras.applications.MobileNetV2((96, 96, 3), weights=None)
        >>> k2 = tfdeploy.bridge.to_keras2(k3)  # ready for td.compress.prune(k2, ...)
    """
    model = model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        model = load_keras3(os.fspath(model_or_path))
    if not is_keras3_model(model):
        raise ModelTypeError(
            f"to_keras2 expects a Keras 3 model or .keras file, received "
            f"{type(model).__module__}.{type(model).__name__}.")
    return _rebuild(model, _keras3(), KERAS2, TO_KERAS2, verify, atol)


def to_keras3(model, verify=True, atol=ATOL):
    """Rebuild a plain Keras 2 (tf_keras) model as an equivalent Keras 3 model.

    For models you compressed with tfdeploy and want to keep using in Keras 3:
    strip them first (`tfdeploy.compress.strip`); training wrappers (pruning,
    clustering, quantization-aware) have no Keras 3 form.

    Args:
        model: a built tf_keras Sequential or functional model of built-in layers.
        verify: compare outputs on random inputs. Defaults to True.
        atol: largest allowed absolute difference. Defaults to 1e-5.

    Returns:
        A new Keras 3 ``keras.Model``.

    Raises:
        ModelTypeError: not a tf_keras model, or one still holding tfmot wrappers.
        UnsupportedLayerError: a layer with no Keras 3 equivalent (named).
        VerificationError: the outputs differ by more than ``atol``.
    """
    if not isinstance(model, keras.Model):
        raise ModelTypeError(
            f"to_keras3 expects a Keras 2 (tf_keras) model, received "
            f"{type(model).__module__}.{type(model).__name__}.")
    wrapped = [layer.name for layer in leaf_layers(model) if _tfmot.is_training_wrapper(layer)]
    if wrapped:
        raise ModelTypeError(
            f"Model {model.name!r} still holds training wrappers ({', '.join(wrapped[:3])}"
            f"{', ...' if len(wrapped) > 3 else ''}); call tfdeploy.compress.strip(model) first. "
            "Quantization-aware models keep their wrappers for the TFLite converter: export them "
            "with tfdeploy.export.tflite instead.")
    return _rebuild(model, KERAS2, _keras3(), TO_KERAS3, verify, atol)


__all__ = ["to_keras2", "to_keras3", "is_keras3_file", "load_keras3",
           "max_abs_diff", "random_inputs", "realistic_inputs", "SHARED_LAYERS", "ATOL"]

__getattr__ = moved(__name__, {"load_model": "tfdeploy.model_io",
                               "check_model": "tfdeploy.model_io"})
