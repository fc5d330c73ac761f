"""How much of a training step waits for the input pipeline, measured side by side."""

import time

from tfdeploy._keras import keras, tf
from tfdeploy.errors import DataError


def _copy(model, loss, optimizer):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.compile(optimizer, loss)
    return clone


def input_pipeline_share(model, dataset, steps=None, loss="sparse_categorical_crossentropy",
                         optimizer="adam"):
    """Time one pass of training from ``dataset`` and from the same batches held in memory.

    A copy of ``model`` (same weights; ``model`` is not trained) first runs one
    warm-up pass (tracing, and filling a ``cache()``), then one timed pass over
    ``steps`` batches from the pipeline and one over the identical batches
    already in memory. The difference is the time the steps waited for input:
    ``share = max(0, 1 - compute_seconds / fit_seconds)``. ``input_seconds`` is
    the pipeline alone (iterated without training).

    Args:
        model: a built Keras 2 model.
        dataset: a finite ``tf.data.Dataset`` of ``(x, y)`` batches.
        steps: batches per pass; None uses the whole dataset. Defaults to None.
        loss: loss of the copy. Defaults to "sparse_categorical_crossentropy".
        optimizer: optimizer of the copy. Defaults to "adam".

    Returns:
        A dict: ``steps``, ``fit_seconds``, ``compute_seconds``, ``input_seconds``,
        ``share`` (the input pipeline's fraction of step time).

    Raises:
        DataError: an empty or infinite dataset.
    """
    n = int(dataset.cardinality()) if steps is None else int(steps)
    if n <= 0:
        raise DataError("input_pipeline_share needs a finite, non-empty dataset (or steps=N).")
    data = dataset.take(n)
    batches = list(data)
    if not batches:
        raise DataError("The dataset yielded no batches.")
    n = len(batches)
    in_memory = _replay(batches)
    copy = _copy(model, loss, optimizer)
    copy.fit(data, epochs=1, verbose=0)  # warm-up: tracing, cache filling
    start = time.perf_counter()
    for _ in data:
        pass
    input_seconds = time.perf_counter() - start
    start = time.perf_counter()
    copy.fit(data, epochs=1, verbose=0)
    fit_seconds = time.perf_counter() - start
    copy.fit(in_memory, epochs=1, verbose=0)  # trace for the in-memory element spec
    start = time.perf_counter()
    copy.fit(in_memory, epochs=1, verbose=0)
    compute_seconds = time.perf_counter() - start
    return {"steps": n, "fit_seconds": round(fit_seconds, 4),
            "compute_seconds": round(compute_seconds, 4),
            "input_seconds": round(input_seconds, 4),
            "share": round(max(0.0, 1.0 - compute_seconds / fit_seconds), 4)}


def _replay(batches):
    """A dataset that yields exactly ``batches`` (already decoded tensors), in order."""
    stacked = [tf.concat([b[i] for b in batches], axis=0) for i in range(len(batches[0]))]
    sizes = [int(b[0].shape[0]) for b in batches]
    if len(set(sizes[:-1])) > 1:
        raise DataError("Batches of different sizes (other than the last) cannot be replayed.")
    return tf.data.Dataset.from_tensor_slices(tuple(stacked)).batch(sizes[0]).cache()
