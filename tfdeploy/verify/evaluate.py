"""Accuracy and latency of a model or artifact on held-out data."""

import gzip
import os
import time

import numpy as np

from tfdeploy.errors import DataError


def _predict_fn(target):
    if hasattr(target, "predict") and hasattr(target, "run"):
        return target.predict  # a tfdeploy runtime runner
    if hasattr(target, "predict"):
        return lambda x: target.predict(x, verbose=0)  # a Keras model
    raise TypeError(f"Cannot predict with {type(target).__name__}.")


def accuracy(target, x, y, batch_size=64):
    """Top-1 accuracy of a Keras model or a runtime runner on arrays ``x``, ``y``."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y) or not len(x):
        raise DataError(
            f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}.")
    predict = _predict_fn(target)
    preds = [np.argmax(predict(x[i:i + batch_size]), axis=-1)
             for i in range(0, len(x), batch_size)]
    return float(np.mean(np.concatenate(preds) == y))


def latency_ms(target, x, samples=100, warmup=5):
    """Median milliseconds per sample at batch size 1 over ``samples`` inputs."""
    predict = _predict_fn(target)
    x = np.asarray(x)
    for i in range(min(warmup, len(x))):
        predict(x[i:i + 1])
    times = []
    for i in range(min(samples, len(x))):
        start = time.perf_counter()
        predict(x[i:i + 1])
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def path_bytes(path):
    """Size of a file, or the total size of a directory's files."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f))
                   for d, _, files in os.walk(path) for f in files)
    return os.path.getsize(path)


def gzip_bytes(path):
    """Size after gzip (level 9) of a file, or of a directory's files concatenated."""
    if os.path.isdir(path):
        data = b"".join(open(os.path.join(d, f), "rb").read()
                        for d, _, files in sorted(os.walk(path)) for f in sorted(files))
    else:
        with open(path, "rb") as f:
            data = f.read()
    return len(gzip.compress(data, compresslevel=9))
