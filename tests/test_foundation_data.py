"""Bundled digits → image directory → tf.data, and clear errors for bad directories."""

import os
import shutil

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import DataError


def _count(root):
    return sum(len(files) for _, _, files in os.walk(root))


def test_digits_tree_layout(digits_dir):
    for split in ("train", "test"):
        classes = sorted(os.listdir(os.path.join(digits_dir, split)))
        assert classes == [str(i) for i in range(10)]
    n_train = _count(os.path.join(digits_dir, "train"))
    n_test = _count(os.path.join(digits_dir, "test"))
    assert n_train + n_test == 1797
    assert 340 <= n_test <= 380
    png = os.path.join(digits_dir, "train", "3", sorted(os.listdir(
        os.path.join(digits_dir, "train", "3")))[0])
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_write_digits_is_idempotent(digits_dir):
    stamp = os.path.getmtime(os.path.join(digits_dir, "train", "0"))
    td.data.write_digits(digits_dir)
    assert os.path.getmtime(os.path.join(digits_dir, "train", "0")) == stamp


def test_image_dataset_shapes_and_values(digits_dir):
    ds = td.data.image_dataset(os.path.join(digits_dir, "test"), image_size=(24, 20),
                               batch_size=16)
    assert ds.class_names == [str(i) for i in range(10)]
    x, y = td.data.to_numpy(ds)
    assert x.shape == (ds.num_examples, 24, 20, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() > 200.0  # raw pixels, not rescaled
    assert set(np.unique(y)) == set(range(10))
    first = next(iter(ds))[0]
    assert first.shape[0] == 16


def test_rgb_mode(digits_dir):
    ds = td.data.image_dataset(os.path.join(digits_dir, "test"), color_mode="rgb")
    x, _ = next(iter(ds))
    assert x.shape[1:] == (32, 32, 3)
    assert np.allclose(x[..., 0], x[..., 2])


def test_representative_data_yields_single_samples(train_ds):
    gen = td.data.representative_data(train_ds, num_samples=7)
    items = list(gen())
    assert len(items) == 7
    assert items[0][0].shape == (1, 32, 32, 1) and items[0][0].dtype == np.float32


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist.*write_digits"):
        td.data.image_dataset(str(tmp_path / "nope"))


def test_empty_directory(tmp_path):
    with pytest.raises(DataError, match="has no class sub-folders"):
        td.data.image_dataset(str(tmp_path))


def _small_tree(digits_dir, tmp_path):
    root = tmp_path / "tree"
    for c in ("0", "1"):
        shutil.copytree(os.path.join(digits_dir, "test", c), root / c)
    return root


def test_class_folder_without_images(digits_dir, tmp_path):
    root = _small_tree(digits_dir, tmp_path)
    (root / "7").mkdir()
    with pytest.raises(DataError, match=r"Class folder\(s\) \['7'\].*contain no images"):
        td.data.image_dataset(str(root))


def test_non_image_file(digits_dir, tmp_path):
    root = _small_tree(digits_dir, tmp_path)
    (root / "1" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="notes.txt.*not an image"):
        td.data.image_dataset(str(root))


def test_corrupt_image_file(digits_dir, tmp_path):
    root = _small_tree(digits_dir, tmp_path)
    (root / "0" / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match="broken.png.*not a valid PNG"):
        td.data.image_dataset(str(root))


def test_bad_options(digits_dir):
    with pytest.raises(DataError, match="Unrecognized color_mode='cmyk'"):
        td.data.image_dataset(os.path.join(digits_dir, "test"), color_mode="cmyk")
    with pytest.raises(DataError, match="image_size"):
        td.data.image_dataset(os.path.join(digits_dir, "test"), image_size=(0, 32))
