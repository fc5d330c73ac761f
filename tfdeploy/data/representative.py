"""Representative (calibration) data for full-integer quantization."""

import itertools

import numpy as np

from tfdeploy._keras import tf
from tfdeploy.errors import DataError


def representative_data(data, num_samples=200):
    """Return a TFLite ``representative_dataset`` generator function.

    Args:
        data: a ``tf.data.Dataset`` of ``(images, labels)`` or of images, or a
            numpy array of inputs. Batches are split into single samples.
        num_samples: how many samples to yield. Defaults to 200.

    Returns:
        A zero-argument callable yielding ``[array of shape (1, ...)]``: float32,
        or int32 for integer inputs (token ids).
    """
    if int(num_samples) <= 0:
        raise DataError(f"num_samples must be positive, received {num_samples!r}.")

    def samples():
        if isinstance(data, np.ndarray):
            for row in data:
                yield row
            return
        if not isinstance(data, tf.data.Dataset):
            raise DataError(
                "representative data must be a tf.data.Dataset or a numpy array, received "
                f"{type(data).__name__}.")
        for item in data:
            batch = item[0] if isinstance(item, (tuple, list)) else item
            for row in np.asarray(batch):
                yield row

    def generator():
        n = 0
        for row in itertools.islice(samples(), int(num_samples)):
            n += 1
            row = np.asarray(row)
            # token ids (text models) stay integers; everything else is float32
            dtype = np.int32 if row.dtype.kind in "iu" else np.float32
            yield [row.astype(dtype)[None, ...]]
        if n == 0:
            raise DataError("The representative dataset yielded no samples.")

    return generator
