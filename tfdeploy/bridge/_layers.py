"""Translate one layer's config between Keras 3 and Keras 2 (tf_keras).

A direction (`TO_KERAS2`, `TO_KERAS3`) says which layer classes cross, which
config keys are renamed, which keys exist on one side only (dropped only while
they hold the value the other side behaves like), and how activations map:
a name both sides compute identically crosses as it is; one the target lacks
or computes differently (``hard_sigmoid`` differs: Keras 3 clips ``x/6+0.5``,
Keras 2 clips ``0.2x+0.5``) becomes a few built-in layers that compute it.
Anything else is an `UnsupportedLayerError` naming the layer and its class.
"""

from tfdeploy.errors import UnsupportedLayerError

# Built-in layers both Keras versions have with the same math and weights.
SHARED_LAYERS = frozenset("""
    Dense EinsumDense Conv1D Conv2D Conv3D Conv1DTranspose Conv2DTranspose Conv3DTranspose
    DepthwiseConv1D DepthwiseConv2D SeparableConv1D SeparableConv2D
    BatchNormalization LayerNormalization GroupNormalization UnitNormalization
    MaxPooling1D MaxPooling2D MaxPooling3D AveragePooling1D AveragePooling2D AveragePooling3D
    GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D
    GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D
    Dropout SpatialDropout1D SpatialDropout2D SpatialDropout3D GaussianNoise GaussianDropout
    AlphaDropout ActivityRegularization
    Activation ReLU Softmax LeakyReLU ELU PReLU
    Rescaling Normalization CenterCrop Resizing Embedding
    Add Subtract Multiply Average Maximum Minimum Concatenate Dot
    Reshape Flatten Permute RepeatVector Identity Masking
    ZeroPadding1D ZeroPadding2D ZeroPadding3D Cropping1D Cropping2D Cropping3D
    UpSampling1D UpSampling2D UpSampling3D
    MultiHeadAttention Attention AdditiveAttention GRU LSTM SimpleRNN
    Bidirectional TimeDistributed
""".split())
# Wrappers whose config holds the wrapped layer's serialized config under these keys.
_WRAPPED = ("layer", "backward_layer")

# Keys that exist on one side only, with the values at which the other side
# computes the same thing (`ANY`: the key never changes inference).
ANY = object()
_KERAS3_ONLY = {
    "quantization_config": (None,), "lora_rank": (None,), "lora_alpha": ANY,
    "rms_scaling": (False,), "use_gate": (False,), "sliding_window": (None,), "seed": ANY,
    "zero_output_for_mask": ANY, "optional": (False,), "synchronized": (False,),
    "pad_to_aspect_ratio": (False,), "fill_mode": ("constant",), "fill_value": (0.0,),
    "antialias": (False,),
}
_KERAS2_ONLY = {
    "groups": (1,), "time_major": (False,), "input_length": ANY, "batch_input_shape": ANY,
    "query_shape": ANY, "key_shape": ANY, "value_shape": ANY, "implementation": ANY,
    "unroll": (False,), "ragged": (False,), "sparse": (False,),
    "renorm": (False,), "renorm_clipping": (None,), "renorm_momentum": ANY,
    "virtual_batch_size": (None,), "adjustment": (None,), "fused": ANY,
    "sparse_input": (False,), "crop_to_aspect_ratio": (False,),
}
# Keys one class has on one side only (Keras 2 separable/depthwise convs keep an unused
# ``kernel_*``; Keras 3 spatial dropout takes no ``trainable``).
_UNUSED_KERNEL = {"kernel_initializer": ANY, "kernel_regularizer": (None,),
                  "kernel_constraint": (None,)}
_CLASS_ONLY = {
    **{(c, "trainable"): ANY for c in ("SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D")},
    **{(c, k): v for c in ("SeparableConv1D", "SeparableConv2D", "DepthwiseConv1D",
                           "DepthwiseConv2D") for k, v in _UNUSED_KERNEL.items()},
    ("MultiHeadAttention", "softmax_robust_masking"): (False,),
}
# Keras 3 takes an int axis where Keras 2 writes a one-element list.
_INT_AXIS = {"BatchNormalization"}

# Activations both compute identically, by source name -> target name.
_SAME = ("relu", "sigmoid", "tanh", "softmax", "linear", "elu", "selu", "softplus",
         "softsign", "exponential", "mish", "gelu", "swish")


def _hard_sigmoid(layers, x, name, scale):
    # clip(scale * x + 0.5, 0, 1), from built-in layers both versions share
    x = layers.Rescaling(scale, offset=0.5, name=f"{name}_scale")(x)
    return layers.ReLU(max_value=1.0, name=f"{name}_clip")(x)


def _expand_hard_silu(layers, x, name):
    return layers.Multiply(name=name)([x, _hard_sigmoid(layers, x, name, 1.0 / 6.0)])


_EXPAND_TO_KERAS2 = {
    "relu6": lambda layers, x, name: layers.ReLU(max_value=6.0, name=name)(x),
    "hard_sigmoid": lambda layers, x, name: _hard_sigmoid(layers, x, name, 1.0 / 6.0),
    "hard_silu": _expand_hard_silu,
    "hard_swish": _expand_hard_silu,
    "leaky_relu": lambda layers, x, name: layers.LeakyReLU(0.2, name=name)(x),
}
_EXPAND_TO_KERAS3 = {
    "hard_sigmoid": lambda layers, x, name: _hard_sigmoid(layers, x, name, 0.2),
}


# Variables Keras 3 names differently (Keras 2 name used for the comparison).
_WEIGHT_NAMES = {"DepthwiseConv1D": {"kernel": "depthwise_kernel"},
                 "DepthwiseConv2D": {"kernel": "depthwise_kernel"}}


def weight_name(class_name, name):
    """A variable's name as Keras 2 spells it (DepthwiseConv2D: ``depthwise_kernel``)."""
    return _WEIGHT_NAMES.get(class_name, {}).get(name, name)


class Direction:
    """How configs change on the way from one Keras to the other."""

    def __init__(self, name, only_source, renames, same, expand, construct=()):
        self.name = name
        self.only_source = only_source
        self.renames = renames
        self.same = dict(same)
        self.expand = expand
        self.construct = frozenset(construct)  # built with cls(**config), not from_config


TO_KERAS2 = Direction("Keras 3 -> Keras 2", _KERAS3_ONLY,
                      {"LeakyReLU": {"negative_slope": "alpha"}},
                      [(a, a) for a in _SAME] + [("silu", "swish")], _EXPAND_TO_KERAS2,
                      construct={"MultiHeadAttention"})  # its from_config wants build shapes
TO_KERAS3 = Direction("Keras 2 -> Keras 3", _KERAS2_ONLY,
                      {"LeakyReLU": {"alpha": "negative_slope"}},
                      [(a, a) for a in _SAME], _EXPAND_TO_KERAS3)


def _unsupported(name, class_name, why):
    return UnsupportedLayerError(
        f"Layer {name!r} ({class_name}) cannot be bridged: {why}. tfdeploy translates "
        "built-in Keras layers only (see tfdeploy.bridge.SHARED_LAYERS); rebuild this part "
        "with built-in layers, or build the model with `tfdeploy.keras` (tf_keras).",
        layer=name, class_name=class_name)


def _plain(value, where):
    """Serialized sub-objects (initializers, ...) as ``{"class_name", "config"}``."""
    if isinstance(value, dict):
        if "class_name" in value and "config" in value:
            module = value.get("module") or "keras"
            if not module.startswith("keras"):
                raise where(f"its {value['class_name']} comes from {module!r}, not Keras")
            return {"class_name": value["class_name"], "config": _plain(value["config"], where)}
        return {k: _plain(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    return value


def _dtype(value, where):
    if isinstance(value, dict):  # Keras 3 DTypePolicy / Keras 2 Policy
        kind = value.get("class_name", "")
        if kind not in ("DTypePolicy", "FloatDTypePolicy", "Policy"):
            raise where(f"its dtype policy {kind} (e.g. quantized) has no Keras 2 equivalent")
        return value["config"]["name"]
    return value


def activation_of(direction, value, name, class_name):
    """``(name for the target config, expansion or None)`` of an activation value."""
    if value is None:
        return value, None
    if isinstance(value, dict):
        value = value.get("config", {}).get("name", value.get("class_name"))
    if value in direction.same:
        return direction.same[value], None
    if value in direction.expand:
        return "linear", direction.expand[value]
    raise _unsupported(name, class_name, f"activation {value!r} has no equivalent "
                       f"({direction.name})")


def translate(direction, class_name, config, name):
    """The target-side config of one built-in layer, plus an activation expansion.

    Args:
        direction: `TO_KERAS2` or `TO_KERAS3`.
        class_name: the layer class name (the same on both sides).
        config: the layer's ``get_config()``.
        name: the layer name, for messages.

    Returns:
        ``(config, expand)``: ``expand(layers, tensor, name)`` builds the
        activation the target lacks, or None.

    Raises:
        UnsupportedLayerError: a class not in `SHARED_LAYERS`, or an option the
            target cannot express.
    """
    if class_name not in SHARED_LAYERS:
        raise _unsupported(name, class_name, "it is not a built-in layer both Keras versions "
                           "share")

    def where(why):
        return _unsupported(name, class_name, why)

    out = {}
    renames = direction.renames.get(class_name, {})
    for key in _WRAPPED:  # Bidirectional / TimeDistributed: translate the wrapped layer too
        inner = config.get(key)
        if isinstance(inner, dict) and "class_name" in inner:
            inner_class = inner["class_name"]
            inner_config, inner_expand = translate(direction, inner_class, inner["config"],
                                                   f"{name}/{inner_class}")
            if inner_expand is not None:
                raise where(f"its wrapped {inner_class}'s activation has no equivalent")
            out[key] = {"class_name": inner_class, "config": inner_config}
    for key, value in config.items():
        if key in out:
            continue
        neutral = _CLASS_ONLY.get((class_name, key), direction.only_source.get(key))
        if neutral is not None:
            if neutral is ANY or value in neutral or (value is None and None in neutral):
                continue
            raise where(f"option {key}={value!r} exists only on one side ({direction.name})")
        out[renames.get(key, key)] = value
    out = _plain(out, where)
    for key in _WRAPPED:  # Keras 3 resolves a wrapped built-in class by its module
        if direction is TO_KERAS3 and isinstance(out.get(key), dict):
            out[key]["module"] = "keras.layers"
    for key, value in out.items():  # initializer options left at None mean "the default"
        if key.endswith("_initializer") and isinstance(value, dict):
            value["config"] = {k: v for k, v in value["config"].items() if v is not None}
    if class_name in _INT_AXIS and isinstance(out.get("axis"), list) and len(out["axis"]) == 1:
        out["axis"] = out["axis"][0]
    if "dtype" in out:
        out["dtype"] = _dtype(config["dtype"], where)
    expand = None
    if class_name == "Activation":
        out["activation"], expand = activation_of(direction, out["activation"], name,
                                                  class_name)
    elif "activation" in out and class_name not in ("GRU", "LSTM", "SimpleRNN"):
        out["activation"], expand = activation_of(direction, out["activation"], name,
                                                  class_name)
    else:
        for key in ("activation", "recurrent_activation"):
            if key in out:
                out[key], inner = activation_of(direction, out[key], name, class_name)
                if inner is not None:
                    raise where(f"{key} {config[key]!r} inside a recurrent cell has no "
                                "equivalent")
    return out, expand
