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


#: What a SavedModel is made of: the graph, its fingerprint, the variables and the assets.
#: A version directory in TF Serving's layout also holds ``assets.extra`` (warmup records, the
#: verification set, the artifact manifest) and the other artifacts exported beside it
#: (``model_*.tflite``, ``model_*.onnx``); none of those is the SavedModel's size.
_SAVED_MODEL_PARTS = ("saved_model.pb", "saved_model.pbtxt", "fingerprint.pb", "variables",
                      "assets")


def _files(path):
    """The files ``path`` stands for, sorted: itself, a directory's files, or for a SavedModel
    directory only the SavedModel's own files (`_SAVED_MODEL_PARTS`)."""
    if not os.path.isdir(path):
        return [path]
    tops = sorted(os.listdir(path))
    if "saved_model.pb" in tops or "saved_model.pbtxt" in tops:
        tops = [t for t in tops if t in _SAVED_MODEL_PARTS]
    out = []
    for top in tops:
        full = os.path.join(path, top)
        if os.path.isdir(full):
            out += [os.path.join(d, f) for d, _, files in sorted(os.walk(full))
                    for f in sorted(files)]
        else:
            out.append(full)
    return out


def path_bytes(path):
    """Size of a file, or the total size of a directory's files (of a SavedModel directory:
    the SavedModel's own files, not the artifacts and ``assets.extra`` beside them)."""
    return sum(os.path.getsize(f) for f in _files(path))


def gzip_bytes(path):
    """Size after gzip (level 9) of a file, or of a directory's files concatenated (of a
    SavedModel directory: the SavedModel's own files, as `path_bytes`)."""
    data = b"".join(open(f, "rb").read() for f in _files(path))
    return len(gzip.compress(data, compresslevel=9))
