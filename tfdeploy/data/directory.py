"""Read an image directory tree (``root/<class>/*.png``) as a ``tf.data`` pipeline."""

import os

import numpy as np

from tfdeploy._keras import tf
from tfdeploy.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_MAGIC = {
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".bmp": (b"BM",),
    ".gif": (b"GIF87a", b"GIF89a"),
}
COLOR_MODES = ("grayscale", "rgb")


def scan_directory(directory):
    """List the images of a class-per-folder tree and check it thoroughly.

    Args:
        directory: a folder holding one sub-folder per class.

    Returns:
        ``(paths, labels, class_names)``: file paths, integer labels, and the
        sorted class folder names.

    Raises:
        DataError: the folder is missing or empty, has no class folders, a class
            folder holds no images, or a file is not a readable image.
    """
    if not os.path.isdir(directory):
        raise DataError(
            f"Image directory {directory!r} does not exist. Expected a folder with one "
            "sub-folder per class (e.g. DIR/train/<class>/*.png); run "
            "`tfdeploy.data.write_digits(DIR)` for the bundled example.")
    class_names = sorted(
        d for d in os.listdir(directory)
        if os.path.isdir(os.path.join(directory, d)) and not d.startswith("."))
    if not class_names:
        raise DataError(
            f"Image directory {directory!r} has no class sub-folders. Put each class's "
            "images in their own folder: DIR/<class>/*.png.")
    paths, labels, bad, empty = [], [], [], []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(directory, name)
        found = 0
        for fname in sorted(os.listdir(class_dir)):
            full = os.path.join(class_dir, fname)
            if fname.startswith(".") or os.path.isdir(full):
                continue
            ext = os.path.splitext(fname)[1].lower()
            if ext not in IMAGE_EXTENSIONS:
                bad.append(f"{full} (extension {ext or 'none'!r} is not an image)")
                continue
            with open(full, "rb") as f:
                head = f.read(8)
            if not any(head.startswith(m) for m in _MAGIC[ext]):
                bad.append(f"{full} (not a valid {ext[1:].upper()} file)")
                continue
            paths.append(full)
            labels.append(label)
            found += 1
        if not found:
            empty.append(name)
    if bad:
        shown = "\n  ".join(bad[:10]) + (f"\n  ... and {len(bad) - 10} more" if len(bad) > 10
                                         else "")
        raise DataError(
            f"Found {len(bad)} file(s) that are not readable images in {directory!r}:\n  "
            f"{shown}\nRemove them or move them out of the class folders. Supported: "
            f"{', '.join(IMAGE_EXTENSIONS)}.")
    if empty:
        raise DataError(
            f"Class folder(s) {empty} in {directory!r} contain no images. Add images or "
            "remove the empty folders.")
    return paths, np.asarray(labels, dtype=np.int64), class_names


SUBSETS = ("training", "validation")


def stratified_split(labels, validation_split, seed=0):
    """``(train_indices, validation_indices)``: a seeded split, stratified by label.

    Each class gives ``round(n * validation_split)`` of its ``n`` samples (at
    least one, and at least one left for training) to validation, chosen by a
    permutation seeded with ``seed``, so the same labels, fraction and seed
    always give the same split.

    Raises:
        DataError: ``validation_split`` is not in (0, 1), or a class has fewer
            than two samples (it cannot be on both sides).
    """
    if not isinstance(validation_split, (int, float)) or not 0 < validation_split < 1:
        raise DataError(f"validation_split must be a fraction in (0, 1) such as 0.2, received "
                        f"{validation_split!r}.")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        if idx.size < 2:
            raise DataError(f"Class {int(label)} has {idx.size} sample(s): a validation split "
                            "needs at least 2 per class. Add images, or give a separate "
                            "validation directory.")
        n_val = min(idx.size - 1, max(1, int(round(idx.size * validation_split))))
        order = rng.permutation(idx)
        val.extend(order[:n_val].tolist())
        train.extend(order[n_val:].tolist())
    return sorted(train), sorted(val)


def image_dataset(directory, image_size=(32, 32), color_mode="grayscale", batch_size=32,
                  shuffle=False, seed=0, cache=True, prefetch=True, parallel=True,
                  validation_split=None, subset=None):
    """Load ``directory/<class>/*`` images as a batched, prefetched ``tf.data.Dataset``.

    Images are resized to ``image_size`` and yielded as float32 raw pixel values
    in [0, 255] (models built by tfdeploy rescale inside the graph, so exported
    artifacts take raw pixels too). Labels are integer class indices in the
    order of the sorted class folder names.

    Args:
        directory: folder with one sub-folder per class.
        image_size: ``(height, width)``. Defaults to ``(32, 32)``.
        color_mode: "grayscale" (1 channel) or "rgb" (3). Defaults to "grayscale".
        batch_size: batch size. Defaults to 32.
        shuffle: shuffle every epoch. Defaults to False.
        seed: shuffle seed. Defaults to 0.
        cache: keep decoded images in memory after the first epoch. Defaults to True.
        prefetch: prepare the next batches while the model trains on the current
            one (``prefetch(AUTOTUNE)``). Defaults to True.
        parallel: decode and resize images on several threads
            (``map(num_parallel_calls=AUTOTUNE)``). Defaults to True.
            `tfdeploy.data.input_pipeline_share` measures what these three buy.
        validation_split: the fraction of each class held out for validation
            (`stratified_split`, seeded with ``seed``). Needs ``subset``.
            Defaults to None (every image).
        subset: "training" (the images not held out) or "validation" (the
            held-out ones); the two never share a file. Defaults to None.

    Returns:
        A ``tf.data.Dataset`` of ``(images, labels)`` with attribute
        ``class_names`` (list of str) and ``num_examples`` (int).

    Raises:
        DataError: see `scan_directory`; also for a bad ``color_mode`` or size.

    Example:
        >>> train = image_dataset("data/digits/train", image_size=(32, 32))
        >>> val = image_dataset("data/digits/train", validation_split=0.2, subset="validation")
    """
    if color_mode not in COLOR_MODES:
        raise DataError(
            f"Unrecognized color_mode={color_mode!r}. Supported modes are: {list(COLOR_MODES)}.")
    if (len(tuple(image_size)) != 2 or any(int(s) <= 0 for s in image_size)):
        raise DataError(f"image_size must be (height, width) > 0, received {image_size!r}.")
    if int(batch_size) <= 0:
        raise DataError(f"batch_size must be a positive integer, received {batch_size!r}.")
    if (validation_split is None) != (subset is None):
        raise DataError("validation_split and subset go together: pass both (e.g. "
                        "validation_split=0.2, subset='validation') or neither; received "
                        f"validation_split={validation_split!r}, subset={subset!r}.")
    if subset is not None and subset not in SUBSETS:
        raise DataError(f"Unrecognized subset={subset!r}. Supported subsets are: "
                        f"{list(SUBSETS)}.")
    paths, labels, class_names = scan_directory(directory)
    if subset is not None:
        train, val = stratified_split(labels, validation_split, seed)
        keep = train if subset == "training" else val
        paths, labels = [paths[i] for i in keep], labels[keep]
    channels = 1 if color_mode == "grayscale" else 3
    size = tuple(int(s) for s in image_size)

    def load(path, label):
        raw = tf.io.read_file(path)
        image = tf.io.decode_image(raw, channels=channels, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
        image = tf.clip_by_value(image, 0.0, 255.0)
        image.set_shape(size + (channels,))
        return image, label

    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE if parallel else None)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(int(batch_size))
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    ds.class_names = class_names
    ds.num_examples = len(paths)
    return ds


def to_numpy(dataset):
    """Collect a ``(images, labels)`` dataset into two numpy arrays."""
    xs, ys = [], []
    for x, y in dataset:
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
    if not xs:
        raise DataError("The dataset is empty.")
    return np.concatenate(xs), np.concatenate(ys)
