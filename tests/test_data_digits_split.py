"""Re-writing the bundled digits with another split never leaks an image into both sides."""

import hashlib
import os

import tfdeploy as td


def _contents(root, split):
    out = {}
    for directory, _, files in os.walk(os.path.join(root, split)):
        for name in files:
            with open(os.path.join(directory, name), "rb") as f:
                out[hashlib.sha256(f.read()).hexdigest()] = os.path.join(directory, name)
    return out


def test_rewrite_with_another_seed_and_fraction_is_leak_free(tmp_path):
    root = str(tmp_path / "digits")
    td.data.write_digits(root, test_fraction=0.2, seed=0)
    first_test = set(_contents(root, "test"))
    td.data.write_digits(root, test_fraction=0.3, seed=1)
    train, test = _contents(root, "train"), _contents(root, "test")
    assert not set(train) & set(test)          # no image content on both sides
    assert len(train) + len(test) == 1797      # every image once, nothing left over
    assert abs(len(test) / 1797 - 0.3) < 0.01
    assert set(test) != first_test
    files = sum(len(f) for _, _, f in os.walk(root))
    assert files == 1797 + 1                   # the images and the stamp, no staging left
    stamp = os.path.getmtime(os.path.join(root, "train"))
    td.data.write_digits(root, test_fraction=0.3, seed=1)   # same split: nothing rewritten
    assert os.path.getmtime(os.path.join(root, "train")) == stamp


def test_split_keeps_identical_images_on_one_side():
    import numpy as np

    images = np.zeros((40, 2, 2), np.uint8)
    images[:20, 0, 0] = np.arange(20) % 5       # many duplicates within each label
    labels = np.repeat([0, 1], 20)
    images[20:, 0, 1] = np.arange(20) % 4
    split = td.data.digits.split_indices(images, labels, 0.5, seed=3)
    seen = {s: {images[i].tobytes() for i in idx} for s, idx in split.items()}
    assert not seen["train"] & seen["test"]
    assert sorted(split["train"] + split["test"]) == list(range(40))
