"""The classic image-classification CNN used by the worked example."""

from tfdeploy._keras import keras
from tfdeploy.errors import ModelTypeError


def _width(filters, multiplier):
    return max(1, int(round(filters * multiplier)))


def build_cnn(input_shape=(32, 32, 1), num_classes=10, width=1.0, dropout=0.0,
              rescale=True, name="cnn"):
    """Build the classic CNN: Conv 32-64, pool, Conv 128-256, pool, Conv 512-256, Flatten,
    Dense 256, Dense ``num_classes`` softmax.

    The model takes raw pixel values (0-255) and rescales them to [0, 1] in its
    first layer, so every exported artifact takes raw pixels too.

    Args:
        input_shape: ``(height, width, channels)``. Defaults to ``(32, 32, 1)``.
        num_classes: number of classes. Defaults to 10.
        width: multiplier on every filter/unit count (0.25 trains in seconds on a
            laptop CPU). Defaults to 1.0.
        dropout: dropout rate before the classifier. Defaults to 0.0.
        rescale: include the ``Rescaling(1/255)`` input layer. Defaults to True.
        name: model name. Defaults to "cnn".

    Returns:
        An uncompiled ``keras.Model`` (Keras 2 / tf_keras).

    Example:
        >>> model = build_cnn((32, 32, 1), num_classes=10, width=0.25)
    """
    if len(tuple(input_shape)) != 3:
        raise ModelTypeError(
            f"input_shape must be (height, width, channels), received {input_shape!r}.")
    if int(num_classes) < 2:
        raise ModelTypeError(f"num_classes must be at least 2, received {num_classes!r}.")
    if not width > 0:
        raise ModelTypeError(f"width must be positive, received {width!r}.")
    if min(input_shape[:2]) < 4:
        raise ModelTypeError(
            f"input_shape {input_shape!r} is too small for two 2x2 poolings; use at least 4x4.")
    w = lambda f: _width(f, width)  # noqa: E731
    L = keras.layers
    inputs = keras.Input(tuple(input_shape), name="images")
    x = L.Rescaling(1.0 / 255.0, name="rescale")(inputs) if rescale else inputs
    x = L.Conv2D(w(32), 3, padding="same", activation="relu", name="conv1")(x)
    x = L.Conv2D(w(64), 3, padding="same", activation="relu", name="conv2")(x)
    x = L.MaxPooling2D(2, name="pool1")(x)
    x = L.Conv2D(w(128), 3, padding="same", activation="relu", name="conv3")(x)
    x = L.Conv2D(w(256), 3, padding="same", activation="relu", name="conv4")(x)
    x = L.MaxPooling2D(2, name="pool2")(x)
    x = L.Conv2D(w(512), 3, padding="same", activation="relu", name="conv5")(x)
    x = L.Conv2D(w(256), 3, padding="same", activation="relu", name="conv6")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(w(256), activation="relu", name="dense1")(x)
    if dropout:
        x = L.Dropout(dropout, name="dropout")(x)
    outputs = L.Dense(int(num_classes), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)
