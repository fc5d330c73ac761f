"""Rebuild a Sequential/functional model in the other Keras, layer by layer.

The source model's config gives the graph (Keras 3 writes each call as
``{"args", "kwargs"}`` with ``__keras_tensor__`` references; Keras 2 as lists
of ``[layer, node, tensor, kwargs]``); the source layer objects give the
weights. Each layer is re-created from its translated config (`_layers`),
called on the rebuilt tensors, and its weights copied after checking count,
shape and variable name. Nested models are rebuilt recursively.
"""

import numpy as np

from tfdeploy._walk import is_graph_network, tracked_layers
from tfdeploy.bridge._layers import SHARED_LAYERS, translate, weight_name
from tfdeploy.errors import ModelTypeError, UnsupportedLayerError

# Keras 3 ops recorded in a functional graph (``x + 3.0``) -> the layer that computes them.
_OPS = {"Add", "Subtract", "Multiply", "Divide", "TrueDivide"}
_MERGE = {"Add": "Add", "Subtract": "Subtract", "Multiply": "Multiply"}


class Side:
    """One Keras version: its module, model classes and layer package prefix."""

    def __init__(self, keras, layer_module, lists_single_outputs):
        self.keras = keras
        self.layer_module = layer_module
        self.lists_single_outputs = lists_single_outputs  # Keras 2 configs write [[name, 0, 0]]

    def is_model(self, obj):
        return isinstance(obj, self.keras.Model)

    def is_sequential(self, obj):
        return isinstance(obj, self.keras.Sequential)

    def is_graph(self, obj):
        if self.is_sequential(obj):
            return True
        return type(obj).__name__ == "Functional" or is_graph_network(obj)

    def node_offset(self, obj):
        """Index of ``obj``'s first call in a config (Keras 2 skips a nested model's own node)."""
        if not self.lists_single_outputs or not self.is_model(obj) or not self.is_graph(obj):
            return 0
        tracked = tracked_layers(obj)
        return int(not tracked or type(tracked[0]).__name__ == "InputLayer")

    def is_builtin(self, obj):
        return (type(obj).__module__ or "").startswith(self.layer_module)


class _ImplicitMask:
    """Keras 3's ``NotEqual(ids, 0)``: the padding mask an ``Embedding(mask_zero=True)``
    computes, recorded as an op and passed on as ``mask=``. Keras 2 carries that mask on the
    Embedding's output by itself, so the call that received it just leaves the kwarg out."""

    def __init__(self, name):
        self.name = name


class _Ref(tuple):
    """``(layer name, node index, tensor index)`` of a tensor in the source graph."""


def _is_history(value):
    return (isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value[1:]))


def _refs(value):
    """Replace serialized tensor references with `_Ref` (both Keras formats)."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return _Ref(value["config"]["keras_history"])
        return {k: _refs(v) for k, v in value.items()}
    if _is_history(value):
        return _Ref(value)
    if isinstance(value, (list, tuple)):
        return [_refs(v) for v in value]
    return value


def node_call(node):
    """``(args, kwargs)`` of one serialized call."""
    if isinstance(node, dict):  # Keras 3
        return _refs(node.get("args", [])), _refs(node.get("kwargs", {}))
    tensors, kwargs = [], {}  # Keras 2: [[name, node, tensor, kwargs], ...]
    for entry in node:
        tensors.append(_Ref(entry[:3]))
        if len(entry) > 3 and entry[3]:
            kwargs.update(_refs(entry[3]))
    return [tensors[0] if len(tensors) == 1 else tensors], kwargs


def _resolve(value, tensors):
    if isinstance(value, _Ref):
        return tensors[tuple(value)]
    if isinstance(value, dict):
        return {k: _resolve(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, tensors) for v in value]
    return value


def _flatten(value):
    if isinstance(value, dict):
        return [t for k in sorted(value) for t in _flatten(value[k])]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flatten(v)]
    return [value]


class Converter:
    """Rebuilds models from ``source`` Keras in ``target`` Keras (one conversion)."""

    def __init__(self, source, target, direction):
        self.source, self.target, self.direction = source, target, direction
        self.pairs = []  # (source layer, target layer) with weights to copy

    # -- layers ---------------------------------------------------------------------------
    def _input(self, entry):
        config = entry["config"]
        shape = config.get("batch_shape") or config.get("batch_input_shape")
        for key in ("sparse", "ragged"):
            if config.get(key):
                raise UnsupportedLayerError(
                    f"Input {entry['name']!r} is {key}; the bridge handles dense inputs only.",
                    layer=entry["name"], class_name="InputLayer")
        return self.target.keras.Input(batch_shape=tuple(shape), dtype=config.get("dtype"),
                                       name=config.get("name", entry.get("name")))

    def _op(self, entry, name):
        class_name = entry["class_name"]
        layers = self.target.keras.layers

        def call(*args, **kwargs):
            tensors = [a for a in args if not isinstance(a, (int, float))]
            scalars = [float(a) for a in args if isinstance(a, (int, float))]
            if len(args) != 2 or kwargs:
                raise UnsupportedLayerError(
                    f"Operation {name!r} ({class_name}) has an unsupported call signature.",
                    layer=name, class_name=class_name)
            if len(tensors) == 2:
                if class_name not in _MERGE:
                    raise UnsupportedLayerError(
                        f"Operation {name!r} ({class_name}) of two tensors has no built-in "
                        "layer; use a Keras layer instead.", layer=name, class_name=class_name)
                return getattr(layers, _MERGE[class_name])(name=name)(tensors)
            c, first = scalars[0], not isinstance(args[0], (int, float))
            if class_name == "Add":
                scale, offset = 1.0, c
            elif class_name == "Subtract":
                scale, offset = (1.0, -c) if first else (-1.0, c)
            elif class_name == "Multiply":
                scale, offset = c, 0.0
            elif first:  # x / c
                scale, offset = 1.0 / c, 0.0
            else:
                raise UnsupportedLayerError(
                    f"Operation {name!r} (scalar / tensor) has no built-in layer.",
                    layer=name, class_name=class_name)
            return layers.Rescaling(scale, offset=offset, name=name)(tensors[0])

        return call

    def _not_equal(self, name):
        def call(*args, **kwargs):
            if len(args) != 2 or kwargs or not isinstance(args[1], (int, float)) or args[1] != 0:
                raise UnsupportedLayerError(
                    f"Operation {name!r} (NotEqual) is not the padding mask of an "
                    "Embedding(mask_zero=True); only `ids != 0` passed on as a mask can be "
                    "bridged.", layer=name, class_name="NotEqual")
            return _ImplicitMask(name)

        return call

    def _layer(self, entry, parent):
        """The target layer (or a callable of tensors) for one source layer entry."""
        name, class_name = entry.get("name") or entry["config"].get("name"), entry["class_name"]
        module = entry.get("module") or ""
        if module.startswith("keras.src.ops") and class_name in _OPS:
            return self._op(entry, name)
        if module.startswith("keras.src.ops") and class_name == "NotEqual":
            return self._not_equal(name)
        obj = _get_layer(parent, name)
        if obj is not None and self.source.is_model(obj):
            return self.model(obj)
        if obj is None or not self.source.is_builtin(obj) or type(obj).__name__ != class_name \
                or class_name not in SHARED_LAYERS:
            where = type(obj).__module__ if obj is not None else module
            raise UnsupportedLayerError(
                f"Layer {name!r} ({where}.{class_name}) cannot be bridged: it is not a "
                "built-in layer both Keras versions share. Rebuild it from built-in layers, or "
                "build the model with `tfdeploy.keras` (tf_keras).",
                layer=name, class_name=class_name)
        config, expand = translate(self.direction, class_name, obj.get_config(), name)
        layers = self.target.keras.layers
        if class_name == "Activation" and expand is not None:
            return lambda x: expand(layers, x, name)
        try:
            cls = getattr(layers, class_name)
            layer = cls(**config) if class_name in self.direction.construct else \
                cls.from_config(config)
        except Exception as exc:
            raise UnsupportedLayerError(
                f"Layer {name!r} ({class_name}) cannot be bridged: {self.direction.name} "
                f"rejected its config ({exc}).", layer=name, class_name=class_name) from exc
        if obj.weights:
            self.pairs.append((obj, layer))
        if expand is None:
            return layer
        return lambda *a, **k: expand(layers, layer(*a, **k), f"{name}_activation")

    # -- models ---------------------------------------------------------------------------
    def model(self, src):
        """Rebuild ``src`` (Sequential or functional) and everything nested in it."""
        if not self.source.is_graph(src):
            raise ModelTypeError(
                f"Model {src.name!r} ({type(src).__name__}) nested in the model is subclassed; "
                "the bridge cannot read its calls. Rebuild it with the functional API.")
        config = src.get_config()
        if self.source.is_sequential(src):
            out = self._sequential(src, config)
        else:
            out = self._functional(src, config)
        if not src.trainable:  # setting True would also unfreeze every nested layer
            out.trainable = False
        return out

    def _sequential(self, src, config):
        entries = list(config["layers"])
        if entries and entries[0]["class_name"] == "InputLayer":
            inputs = self._input(entries.pop(0))
        else:
            shape = src.inputs[0].shape
            inputs = self.target.keras.Input(batch_shape=tuple(shape), name=f"{src.name}_input")
        made = [self._layer(e, src) for e in entries]
        if all(isinstance(m, self.target.keras.layers.Layer) for m in made):
            return self.target.keras.Sequential([inputs, *made], name=src.name)
        x = inputs
        for fn in made:
            x = fn(x)
        return self.target.keras.Model(inputs, x, name=src.name)

    def _functional(self, src, config):
        tensors, pending = {}, []
        for entry in config["layers"]:
            if entry["class_name"] == "InputLayer":
                tensors[(entry["name"], 0, 0)] = self._input(entry)
                continue
            fn = self._layer(entry, src)
            offset = self.source.node_offset(_get_layer(src, entry["name"]))
            pending += [(entry["name"], i + offset, node, fn)
                        for i, node in enumerate(entry["inbound_nodes"])]
        while pending:
            waiting = []
            for name, index, node, fn in pending:
                args, kwargs = node_call(node)
                try:
                    args, kwargs = _resolve(args, tensors), _resolve(kwargs, tensors)
                except KeyError:
                    waiting.append((name, index, node, fn))
                    continue
                args, kwargs = _implicit_mask(name, args, kwargs)
                for j, tensor in enumerate(_flatten(fn(*args, **kwargs))):
                    tensors[(name, index, j)] = tensor
            if len(waiting) == len(pending):
                raise ModelTypeError(f"Model {src.name!r}: the bridge could not order the calls "
                                     f"of {[w[0] for w in waiting]}.")
            pending = waiting

        def pick(structure):
            if _is_history(structure):
                return tensors[tuple(structure)]
            if isinstance(structure, dict):
                return {k: pick(v) for k, v in structure.items()}
            return [pick(v) for v in structure]

        inputs, outputs = pick(config["input_layers"]), pick(config["output_layers"])
        if self.source.lists_single_outputs and isinstance(outputs, list) and len(outputs) == 1:
            outputs = outputs[0]
        if isinstance(inputs, list) and len(inputs) == 1:
            inputs = inputs[0]
        return self.target.keras.Model(inputs, outputs, name=src.name)

    # -- weights --------------------------------------------------------------------------
    def copy_weights(self):
        """Copy every paired layer's weights, checking count, shapes and names."""
        for src, dst in self.pairs:
            a, b = src.weights, dst.weights
            kind = type(src).__name__
            names_a = [weight_name(kind, _basename(v)) for v in a]
            names_b = [weight_name(kind, _basename(v)) for v in b]
            shapes_a = [tuple(v.shape) for v in a]
            shapes_b = [tuple(v.shape) for v in b]
            if names_a != names_b or shapes_a != shapes_b:
                raise UnsupportedLayerError(
                    f"Layer {src.name!r} ({type(src).__name__}): its weights do not match the "
                    f"rebuilt layer's ({list(zip(names_a, shapes_a))} vs "
                    f"{list(zip(names_b, shapes_b))}); it cannot be bridged.",
                    layer=src.name, class_name=type(src).__name__)
            dst.set_weights([np.asarray(v.numpy()) for v in a])
            if hasattr(dst, "finalize_state"):  # Normalization: adapted mean/variance
                dst.finalize_state()


def _implicit_mask(name, args, kwargs):
    """Leave out a ``mask=`` that Keras 2 propagates itself; any other use of it fails."""
    if isinstance(kwargs.get("mask"), _ImplicitMask):
        first = args[0] if args else None
        if getattr(first, "_keras_mask", None) is None:
            raise UnsupportedLayerError(
                f"Layer {name!r} receives the padding mask {kwargs['mask'].name!r} on an input "
                "that does not carry it in Keras 2 (no Embedding(mask_zero=True) before it).",
                layer=name, class_name="NotEqual")
        kwargs = {k: v for k, v in kwargs.items() if k != "mask"}
    if any(isinstance(v, _ImplicitMask) for v in _flatten([args, kwargs])):
        raise UnsupportedLayerError(
            f"Layer {name!r} uses a padding mask (NotEqual) as a tensor; only passing it on as "
            "mask= can be bridged.", layer=name, class_name="NotEqual")
    return args, kwargs


def _get_layer(parent, name):
    try:
        return parent.get_layer(name)
    except ValueError:
        return None


def _basename(variable):
    return variable.name.split("/")[-1].split(":")[0]
