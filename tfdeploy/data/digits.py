"""scikit-learn's bundled digits set written out as an image directory tree."""

import os

import numpy as np

from tfdeploy.errors import DataError

DEFAULT_DIR = os.path.join("data", "digits")
_MARKER = ".tfdeploy-digits"


def write_digits(directory=DEFAULT_DIR, test_fraction=0.2, seed=0, overwrite=False):
    """Write the bundled digits (1,797 8x8 images, 10 classes) as PNG files.

    The layout is ``DIR/train/<class>/*.png`` and ``DIR/test/<class>/*.png``,
    the same as any user's image directory, so the rest of tfdeploy reads it
    with `tfdeploy.data.image_dataset`. Pixels are scaled from scikit-learn's
    0-16 range to 0-255. The split is stratified and fixed by ``seed``. Writing
    is skipped when the tree is already complete (unless ``overwrite``).

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
    rng = np.random.default_rng(seed)
    for label in range(10):
        idx = np.flatnonzero(digits.target == label)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        for split, part in (("test", idx[:n_test]), ("train", idx[n_test:])):
            class_dir = os.path.join(directory, split, str(label))
            os.makedirs(class_dir, exist_ok=True)
            for i in part:
                Image.fromarray(images[i]).save(
                    os.path.join(class_dir, f"{i:04d}.png"))
    with open(marker, "w") as f:
        f.write(stamp + "\n")
    return directory
