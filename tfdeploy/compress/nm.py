"""N:M structured sparsity (e.g. 2:4): at most N non-zero weights in every M consecutive ones.

The groups run along the input-channel axis of the kernel as TFLite stores it
(``[out, h, w, in]`` for Conv2D, ``[out, in]`` for Dense), the layout sparse
kernels on hardware with 2:4 support expect. tfmot computes the mask once, at
the first training step, from the trained weights; fine-tuning then recovers
accuracy with the pattern fixed.
"""

import numpy as np

from tfdeploy.model_io import check_model
from tfdeploy._keras import keras, tfmot
from tfdeploy._walk import leaf_layers
from tfdeploy.compress.graph import flatten
from tfdeploy.compress.prune import _refuse_wrapped, why_not_prunable, wrap_for_pruning
from tfdeploy.compress.history import notes, record
from tfdeploy.compress.selection import resolve
from tfdeploy.compress.distribute import check_scope
from tfdeploy.compress.sparsity import kernel, unwrap
from tfdeploy.errors import CompressionError


def _check_n_m(n, m):
    if not (isinstance(n, int) and isinstance(m, int)) or not 0 < n < m:
        raise CompressionError(
            f"N:M sparsity needs integers 0 < n < m (e.g. n=2, m=4 for 2:4), received n={n!r}, "
            f"m={m!r}.")


def _why_not(m):
    def why_not(layer):
        reason = why_not_prunable(layer)
        if reason is not None:
            return reason
        if type(layer) not in (keras.layers.Conv2D, keras.layers.Dense):
            return f"N:M sparsity supports Conv2D and Dense, not {type(layer).__name__}"
        c_in = int(layer.kernel.shape[-2])
        if c_in % m:
            return f"{c_in} input channel(s) is not a multiple of m={m}"
        return None

    return why_not


def prune_n_m(model, n=2, m=4, layers=None):
    """Wrap a model for N:M structured pruning; returns a new model, the input is untouched.

    In each group of ``m`` consecutive input-channel weights (per output
    channel and kernel position) the ``m - n`` smallest are zeroed at the first
    training step, and stay zero while you fine-tune with
    ``model.fit(..., callbacks=tfdeploy.compress.callbacks(model))``. Call
    `strip` afterwards and check the result with `n_m_pattern`.

    Args:
        model: a built Keras 2 Sequential or functional model (nested allowed).
        n: non-zero weights kept per group. Defaults to 2.
        m: group size. Defaults to 4.
        layers: which layers (see `Select`); None takes every Conv2D/Dense
            whose input channels are a multiple of ``m`` and reports the others
            (e.g. a first conv on a 1-channel image) as left out. Defaults to None.

    Returns:
        A new ``keras.Model`` with pruning wrappers on the chosen layers.

    Raises:
        CompressionError: bad n/m, an explicitly chosen layer that cannot take
            the pattern, or nothing to prune.

    Example:
        >>> sparse = prune_n_m(model, 2, 4, layers=Select(skip_last=True))
    """
    model = check_model(model, graph=True)
    check_scope(model, "prune_n_m")
    _check_n_m(n, m)
    _refuse_wrapped(model)
    work = flatten(model)
    chosen, skipped = resolve(work, layers, _why_not(m), f"{n}:{m} pruning")
    schedule = tfmot().sparsity.keras.ConstantSparsity(1.0 - n / m, begin_step=0, frequency=1)
    out = wrap_for_pruning(work, chosen, pruning_schedule=schedule, sparsity_m_by_n=(m - n, m))
    record(out, "n_m", chosen, skipped, source=model, detail=f"{n}:{m}",
           params={"n": n, "m": m})
    return out


def _groups(kernel, m):
    kernel = np.asarray(kernel)
    if kernel.ndim == 4:
        rows = np.transpose(kernel, (3, 0, 1, 2)).reshape(-1, kernel.shape[2])
    elif kernel.ndim == 2:
        rows = kernel.T
    else:
        raise CompressionError(f"N:M groups need a rank-2 or rank-4 kernel, got {kernel.shape}.")
    if rows.shape[1] % m:
        raise CompressionError(
            f"Kernel input channels ({rows.shape[1]}) are not a multiple of m={m}.")
    return rows.reshape(rows.shape[0], -1, m)


def n_m_fraction(kernel, n=2, m=4, layout="keras"):
    """Fraction of M-groups of ``kernel`` that hold at most N non-zeros (1.0 = pattern holds).

    Args:
        kernel: a Keras kernel (``[h, w, in, out]`` or ``[in, out]``), or with
            ``layout="tflite"`` a tensor read from a .tflite file
            (``[out, h, w, in]`` / ``[out, in]``: groups along the last axis).
        n: non-zeros allowed per group. Defaults to 2.
        m: group size. Defaults to 4.
        layout: "keras" or "tflite". Defaults to "keras".
    """
    _check_n_m(n, m)
    if layout == "tflite":
        kernel = np.asarray(kernel)
        if kernel.shape[-1] % m:
            raise CompressionError(f"Last axis ({kernel.shape[-1]}) is not a multiple of m={m}.")
        groups = kernel.reshape(-1, m)
    elif layout == "keras":
        groups = _groups(kernel, m).reshape(-1, m)
    else:
        raise CompressionError(f"Unrecognized layout={layout!r}. Supported: ['keras', 'tflite'].")
    return float(np.mean(np.count_nonzero(groups, axis=-1) <= n))


def n_m_pattern(model, n=2, m=4):
    """Return ``{layer: fraction of groups with at most n non-zeros}`` for the N:M-pruned layers.

    Reads the (stripped or wrapped) kernels; 1.0 means every group obeys N:M.
    Layers are the ones `prune_n_m` chose (every eligible layer if the model
    carries no record).
    """
    chosen = notes(model).get("n_m", {}).get("layers")
    out = {}
    for layer in leaf_layers(model):
        inner = unwrap(layer)
        if isinstance(inner, keras.layers.InputLayer):
            continue
        if chosen is not None and inner.name not in chosen:
            continue
        if chosen is None and _why_not(m)(inner) is not None:
            continue
        out[inner.name] = n_m_fraction(kernel(layer), n, m)
    return out
