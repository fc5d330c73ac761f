"""Image augmentation as Keras preprocessing layers, applied in the ``tf.data`` pipeline only.

The layers run in the input pipeline (``dataset.map``), never inside the
model, so nothing of them reaches an exported SavedModel / TFLite / ONNX file.
They work on raw 0-255 pixels, as `tfdeploy.data.image_dataset` yields them.
"""

from tfdeploy._keras import keras, tf
from tfdeploy.errors import DataError

FLIPS = ("horizontal", "vertical", "horizontal_and_vertical", None)


def augmentation_layers(flip="horizontal", rotation=0.1, zoom=0.1, contrast=0.1, seed=0):
    """A ``keras.Sequential`` of random flip, rotation, zoom and contrast layers.

    Args:
        flip: "horizontal", "vertical", "horizontal_and_vertical" or None (no
            flip; right for digits and text). Defaults to "horizontal".
        rotation: maximum rotation as a fraction of a full turn (0 for none).
            Defaults to 0.1.
        zoom: maximum zoom in or out as a fraction of the size (0 for none).
            Defaults to 0.1.
        contrast: maximum contrast change factor (0 for none). Defaults to 0.1.
        seed: random seed of every layer. Defaults to 0.

    Returns:
        A ``keras.Sequential`` (possibly empty) to call with ``training=True``.

    Raises:
        DataError: an unknown flip mode or a negative/too large factor.
    """
    if flip not in FLIPS:
        raise DataError(f"Unrecognized flip={flip!r}. Supported values are: {list(FLIPS)}.")
    for name, value in (("rotation", rotation), ("zoom", zoom), ("contrast", contrast)):
        if not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise DataError(f"{name} must be a factor in [0, 1), received {value!r}.")
    L = keras.layers
    layers = []
    if flip:
        layers.append(L.RandomFlip(flip, seed=seed, name="random_flip"))
    if rotation:
        layers.append(L.RandomRotation(rotation, fill_mode="constant", seed=seed,
                                       name="random_rotation"))
    if zoom:
        layers.append(L.RandomZoom(zoom, fill_mode="constant", seed=seed, name="random_zoom"))
    if contrast:
        layers.append(L.RandomContrast(contrast, seed=seed, name="random_contrast"))
    return keras.Sequential(layers, name="augmentation")


def augment(dataset, flip="horizontal", rotation=0.1, zoom=0.1, contrast=0.1, seed=0):
    """Return ``dataset`` with random augmentation applied to its images on every pass.

    Args:
        dataset: a batched ``tf.data.Dataset`` of ``(images, labels)`` (e.g.
            from `tfdeploy.data.image_dataset`); its ``class_names`` and
            ``num_examples`` attributes are kept.
        flip, rotation, zoom, contrast, seed: see `augmentation_layers`.

    Returns:
        A ``tf.data.Dataset`` of ``(augmented images, labels)``.

    Example:
        >>> train = augment(image_dataset("data/digits/train"), flip=None)
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise DataError(f"augment needs a tf.data.Dataset, received {type(dataset).__name__}.")
    layers = augmentation_layers(flip, rotation, zoom, contrast, seed)

    def apply(images, labels):
        return layers(images, training=True), labels

    out = dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    for attr in ("class_names", "num_examples"):
        if hasattr(dataset, attr):
            setattr(out, attr, getattr(dataset, attr))
    return out
