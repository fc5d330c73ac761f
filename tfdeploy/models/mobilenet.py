"""MobileNet-family transfer learning: a frozen MobileNet base + pooling + a new softmax head.

The base comes from ``tf_keras.applications`` (V1, V2, V3-Small, V3-Large)
without its classifier. The model takes raw 0-255 pixels: the family's own
preprocessing (``x / 127.5 - 1``) and, for grayscale input, the copy to three
channels are layers inside it, so every exported artifact takes raw pixels
too, like the CNN's. A frozen base is called with ``training=False`` so its
BatchNormalization layers stay in inference mode even after fine-tuning
unfreezes them (see `FineTune`); a base built trainable (from scratch) is
called normally, so its BatchNormalization layers learn.
"""

import os
import re

from tfdeploy._architectures import ARCHITECTURES, architecture  # noqa: F401  (re-exported)
from tfdeploy._keras import keras
from tfdeploy.errors import ModelTypeError, WeightsUnavailableError

#: alpha values with published ImageNet weights, per architecture.
IMAGENET_ALPHAS = {"mobilenet_v1": (0.25, 0.5, 0.75, 1.0),
                   "mobilenet_v2": (0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
                   "mobilenet_v3_small": (0.75, 1.0), "mobilenet_v3_large": (0.75, 1.0)}
_IMAGENET_SIZES = {"mobilenet_v1": (128, 160, 192, 224),
                   "mobilenet_v2": (96, 128, 160, 192, 224)}
MIN_SIZE = 32


def imagenet_weights_file(arch, alpha=1.0, size=224):
    """The file name Keras downloads (and caches in ``~/.keras/models``) for a base without top."""
    arch = architecture(arch)
    if arch == "mobilenet_v1":
        rows = size if size in _IMAGENET_SIZES[arch] else 224
        text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0"}.get(float(alpha), "2_5")
        return f"mobilenet_{text}_{rows}_tf_no_top.h5"
    if arch == "mobilenet_v2":
        rows = size if size in _IMAGENET_SIZES[arch] else 224
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    kind = "small" if arch == "mobilenet_v3_small" else "large"
    return f"weights_mobilenet_v3_{kind}_224_{alpha}_float_no_top_v2.h5"


def _base(arch, shape, alpha, weights):
    apps = keras.applications
    common = dict(input_shape=shape, alpha=alpha, include_top=False, weights=weights)
    if arch == "mobilenet_v1":
        return apps.MobileNet(**common)
    if arch == "mobilenet_v2":
        return apps.MobileNetV2(**common)
    cls = apps.MobileNetV3Small if arch == "mobilenet_v3_small" else apps.MobileNetV3Large
    return cls(include_preprocessing=False, **common)


def _check(arch, input_shape, alpha, weights):
    if len(tuple(input_shape)) != 3 or input_shape[-1] not in (1, 3):
        raise ModelTypeError(
            f"input_shape must be (height, width, 1 or 3), received {input_shape!r}.")
    if min(input_shape[:2]) < MIN_SIZE:
        raise ModelTypeError(
            f"input_shape {input_shape!r} is too small: MobileNets need at least "
            f"{MIN_SIZE}x{MIN_SIZE} pixels. Resize the images (image_size=(32, 32) or larger).")
    if not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ModelTypeError(f"alpha must be a positive width multiplier, received {alpha!r}.")
    if weights == "imagenet":
        if float(alpha) not in IMAGENET_ALPHAS[arch]:
            raise ModelTypeError(
                f"ImageNet weights for {arch} exist for alpha in {list(IMAGENET_ALPHAS[arch])}, "
                f"received alpha={alpha!r}. Pick one of those, or weights=None.")
    elif weights is not None:
        if not isinstance(weights, (str, os.PathLike)):
            raise ModelTypeError(
                f"weights must be None, 'imagenet' or a path to a weights file, received "
                f"{weights!r}.")
        if not os.path.isfile(weights):
            raise WeightsUnavailableError(
                f"Weights file {str(weights)!r} does not exist. Pass the path of a file saved "
                "with `tfdeploy.models.save_base_weights` (or Keras `save_weights`) from a base "
                "of the same architecture, alpha and input channels.")


def _offline_error(arch, alpha, size, exc):
    url = re.search(r"(https?://\S+?\.h5)", str(exc))
    fname = os.path.basename(url.group(1)) if url else imagenet_weights_file(arch, alpha, size)
    cache = os.path.join(os.path.expanduser("~"), ".keras", "models", fname)
    return WeightsUnavailableError(
        f"Could not get the ImageNet weights of {arch} (alpha={alpha}): Keras looks for "
        f"{cache!r} and, when it is missing, downloads {url.group(1) if url else fname}, which "
        f"failed ({exc}). Copy that file to {cache!r}, or pass a local weights file: "
        "weights='path/to/base_weights.h5'.")


def build_mobilenet(input_shape=(96, 96, 3), num_classes=10, arch="mobilenet_v2", alpha=1.0,
                    weights=None, dense=None, dropout=0.2, trainable_base=False, bn_momentum=None,
                    name=None):
    """Build a MobileNet transfer model: frozen base, global average pooling, softmax head.

    Layers: ``images`` (raw 0-255 pixels) -> ``preprocess`` (the family's
    ``x / 127.5 - 1``) -> ``to_rgb`` (grayscale only: one channel copied to
    three) -> the base (called with ``training=False``) -> ``pooling``
    (GlobalAveragePooling2D) -> optional ``head_dense`` (ReLU) ->
    ``head_dropout`` -> ``probabilities`` (softmax).

    Args:
        input_shape: ``(height, width, channels)`` with channels 1 or 3 and
            height/width at least 32. Defaults to ``(96, 96, 3)``.
        num_classes: classes of the new head. Defaults to 10.
        arch: "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small" or
            "mobilenet_v3_large" (or "v1", "v2", "v3_small", "v3_large").
            Defaults to "mobilenet_v2".
        alpha: width multiplier of the base. Defaults to 1.0.
        weights: None (random), "imagenet" (downloaded by Keras or read from
            its cache ``~/.keras/models``), or the path of a weights file of
            the base (see `save_base_weights`). Defaults to None.
        dense: units of an extra Dense (ReLU) layer before the classifier, or
            None for none. Defaults to None.
        dropout: dropout rate before the classifier (0 for none). Defaults to 0.2.
        trainable_base: leave the base trainable and call it without
            ``training=False``, so its BatchNormalization layers learn (training
            from scratch or pretraining). Defaults to False (frozen base, called
            with ``training=False``, for transfer).
        bn_momentum: momentum of the base's BatchNormalization moving
            statistics; None keeps the family's (0.999 for V2/V3, 0.99 for V1),
            which needs thousands of steps to settle. 0.9 suits short runs on
            small datasets. Defaults to None.
        name: model name. Defaults to ``"<arch>_transfer"``.

    Returns:
        An uncompiled ``keras.Model`` (Keras 2) holding the base as a nested model
        (``model.get_layer(base_layer_name(model))``).

    Raises:
        ModelTypeError: unknown architecture, bad shape, alpha or weights argument.
        WeightsUnavailableError: a weights path that does not exist, or ImageNet
            weights that are neither cached nor downloadable (the message names
            the file Keras looks for).

    Example:
        >>> model = build_mobilenet((96, 96, 1), num_classes=5, arch="v2", alpha=0.35)
    """
    arch = architecture(arch)
    input_shape = tuple(int(s) for s in input_shape)
    _check(arch, input_shape, alpha, weights)
    if int(num_classes) < 2:
        raise ModelTypeError(f"num_classes must be at least 2, received {num_classes!r}.")
    if weights is not None and weights != "imagenet":
        weights = os.fspath(weights)
    shape3 = input_shape[:2] + (3,)
    try:
        base = _base(arch, shape3, float(alpha), weights)
    except Exception as exc:  # Keras raises a bare Exception for download failures
        if weights == "imagenet" and "URL fetch failure" in str(exc):
            raise _offline_error(arch, alpha, input_shape[0], exc) from exc
        if weights not in (None, "imagenet"):
            raise WeightsUnavailableError(
                f"Could not load weights file {weights!r} into a {arch} base "
                f"(alpha={alpha}, input {shape3}): {exc}. The file must come from a base of "
                "the same architecture and alpha.") from exc
        raise
    base.trainable = bool(trainable_base)
    if bn_momentum is not None:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = float(bn_momentum)
    L = keras.layers
    inputs = keras.Input(input_shape, name="images")
    x = L.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(inputs)
    if input_shape[-1] == 1:
        x = L.Concatenate(axis=-1, name="to_rgb")([x, x, x])
    x = base(x) if trainable_base else base(x, training=False)
    x = L.GlobalAveragePooling2D(name="pooling")(x)
    if dense:
        x = L.Dense(int(dense), activation="relu", name="head_dense")(x)
    if dropout:
        x = L.Dropout(float(dropout), name="head_dropout")(x)
    outputs = L.Dense(int(num_classes), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name or f"{arch}_transfer")


def base_layer_name(model):
    """The name of the nested base model inside a `build_mobilenet` model."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer.name
    raise ModelTypeError(
        f"Model {model.name!r} holds no nested base model (was it flattened?). Save the base "
        "weights from the model `build_mobilenet` returned.")


def save_base_weights(model, path):
    """Save the weights of a transfer model's base to ``path`` (``.h5``) for `build_mobilenet`.

    Returns:
        ``path``.
    """
    base = model.get_layer(base_layer_name(model))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}.h5"
    base.save_weights(tmp)
    os.replace(tmp, path)
    return path
