"""scikit-learn's bundled digits set written out as an image directory tree."""

import contextlib
import os
import shutil

import numpy as np

from tfdeploy.errors import DataError

DEFAULT_DIR = os.path.join("data", "digits")
_MARKER = ".tfdeploy-digits"


def split_indices(images, labels, test_fraction, seed):
    """``{"train": [...], "test": [...]}`` sample indices, stratified by label.

    Identical images are one group that goes to one side, so no image content is
    ever in both splits (the bundled digits hold no duplicates today; this keeps
    the promise if a data set does).
    """
    rng = np.random.default_rng(seed)
    out = {"train": [], "test": []}
    for label in np.unique(labels):
        groups = {}
        for i in np.flatnonzero(labels == label):
            groups.setdefault(images[i].tobytes(), []).append(int(i))
        keys = list(groups)
        order = rng.permutation(len(keys))
        n_test = int(round(len(keys) * test_fraction))
        for rank, k in enumerate(order):
            out["test" if rank < n_test else "train"].extend(groups[keys[k]])
    return {split: sorted(idx) for split, idx in out.items()}


def write_digits(directory=DEFAULT_DIR, test_fraction=0.2, seed=0, overwrite=False):
    """Write the bundled digits (1,797 8x8 images, 10 classes) as PNG files.

    The layout is ``DIR/train/<class>/*.png`` and ``DIR/test/<class>/*.png``,
    the same as any user's image directory, so the rest of tfdeploy reads it
    with `tfdeploy.data.image_dataset`. Pixels are scaled from scikit-learn's
    0-16 range to 0-255. The split is stratified and fixed by ``seed``; no image
    is in both splits. Writing is skipped when the tree is already complete for
    the same ``test_fraction`` and ``seed`` (unless ``overwrite``); otherwise the
    new ``train/`` and ``test/`` trees are written aside and replace the old ones
    whole, so files of an earlier split never linger.

    Args:
        directory: where to write. Defaults to ``data/digits``.
        test_fraction: share of each class that goes to ``test/``. Defaults to 0.2.
        seed: seed of the split. Defaults to 0.
        overwrite: rewrite even if a complete tree exists. Defaults to False.

    Returns:
        The directory path.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be between 0 and 1, received {test_fraction}.")
    marker = os.path.join(directory, _MARKER)
    stamp = f"test_fraction={test_fraction} seed={seed}"
    if not overwrite and os.path.exists(marker):
        with open(marker) as f:
            if f.read().strip() == stamp:
                return directory
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    splits = split_indices(images, digits.target, test_fraction, seed)
    os.makedirs(directory, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove(marker)  # from here until the end the tree is incomplete
    staging = os.path.join(directory, f".staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    for split, indices in splits.items():
        for i in indices:
            class_dir = os.path.join(staging, split, str(digits.target[i]))
            os.makedirs(class_dir, exist_ok=True)
            Image.fromarray(images[i]).save(os.path.join(class_dir, f"{i:04d}.png"))
    for split in splits:
        final = os.path.join(directory, split)
        old = os.path.join(directory, f".old-{split}-{os.getpid()}")
        if os.path.exists(final):
            os.rename(final, old)
        os.rename(os.path.join(staging, split), final)
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    with open(marker, "w") as f:
        f.write(stamp + "\n")
    return directory
