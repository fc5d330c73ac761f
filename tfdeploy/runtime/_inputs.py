"""Checks every runner applies to a batch before running it."""

import numpy as np

from tfdeploy.errors import EmptyBatchError


def check_batch(name, value):
    """Raise `EmptyBatchError` for a batch without samples; returns ``value`` as an array."""
    value = np.asarray(value)
    if value.ndim == 0 or value.shape[0] == 0:
        raise EmptyBatchError(
            f"Input {name!r} holds no samples (shape {value.shape}); a runner needs a batch of "
            "at least one sample, shaped (batch, ...). Skip the call for empty batches.")
    return value
