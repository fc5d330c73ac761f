"""Low-rank factorisation: replace a Dense or 1x1 Conv2D kernel by two thinner layers (SVD).

``W (in x out) ~= A (in x r) @ B (r x out)`` from the truncated SVD, with the
rank ``r`` the smallest that keeps ``energy`` of the squared singular values.
A layer is only factorised when ``r * (in + out) < in * out`` (it really gets
smaller). The result is an ordinary Keras model you can fine-tune.
"""

import numpy as np

from tfdeploy.model_io import check_model
from tfdeploy._keras import keras
from tfdeploy.compress.graph import flatten, rebuild
from tfdeploy.compress.history import record
from tfdeploy.compress.selection import resolve
from tfdeploy.compress.strip import strip
from tfdeploy.errors import CompressionError

L = keras.layers


def _matrix(layer):
    if type(layer) is L.Dense:
        return layer.get_weights()[0]
    if type(layer) is L.Conv2D and tuple(layer.kernel_size) == (1, 1) and layer.groups == 1 \
            and tuple(layer.dilation_rate) == (1, 1):
        return layer.get_weights()[0][0, 0]
    return None


def _why_not(layer):
    if _matrix(layer) is None:
        return f"low-rank handles Dense and 1x1 Conv2D, not {type(layer).__name__}" + (
            f" {layer.kernel_size}" if hasattr(layer, "kernel_size") else "")
    return None


def svd_rank(matrix, energy):
    """``(rank, kept_energy)``: smallest rank keeping ``energy`` of sum(s^2)."""
    s = np.linalg.svd(matrix, compute_uv=False)
    cumulative = np.cumsum(s ** 2) / max(float(np.sum(s ** 2)), 1e-30)
    rank = int(min(np.searchsorted(cumulative, energy - 1e-12) + 1, s.size))
    return rank, float(cumulative[rank - 1])


def low_rank(model, energy=0.9, layers=None):
    """Factorise Dense / 1x1 Conv2D kernels by truncated SVD; returns a new model.

    Args:
        model: a built Keras 2 Sequential or functional model (nested allowed).
        energy: fraction of the squared singular values to keep, in (0, 1].
            Defaults to 0.9.
        layers: which layers (see `Select`); None tries every Dense and 1x1
            Conv2D. Layers where the factorisation would not save parameters
            are left out (see `report`). Defaults to None.

    Returns:
        A new ``keras.Model``; ``model._tfdeploy_low_rank`` maps each
        factorised layer to ``{"rank", "full_rank", "energy", "rel_error"}``
        (``rel_error`` = ||W - AB||_F / ||W||_F, read back from the new weights).

    Raises:
        CompressionError: energy outside (0, 1], or a chosen layer that is not a
            Dense / 1x1 Conv2D.

    Example:
        >>> smaller = low_rank(model, energy=0.9, layers=["dense1"])
    """
    model = check_model(model, graph=True)
    if not isinstance(energy, (int, float)) or not 0.0 < float(energy) <= 1.0:
        raise CompressionError(
            f"energy must be a fraction in (0, 1] of the singular-value energy to keep, "
            f"received {energy!r}.")
    source = model
    model = strip(model)
    work = flatten(model)
    chosen, skipped = resolve(work, layers, _why_not, "low-rank factorisation")
    plans, info = {}, {}
    for layer in work.layers:
        if layer.name not in chosen:
            continue
        w = _matrix(layer)
        rank, kept = svd_rank(w, float(energy))
        n_in, n_out = w.shape
        if rank * (n_in + n_out) >= n_in * n_out:
            skipped[layer.name] = (f"rank {rank} of {min(n_in, n_out)} for {energy:.0%} energy "
                                   "would not save parameters")
            continue
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        root = np.sqrt(s[:rank])
        a, b = u[:, :rank] * root, root[:, None] * vt[:rank]
        plans[layer.name] = (a, b)
        rel = float(np.linalg.norm(w - a @ b) / max(np.linalg.norm(w), 1e-30))
        info[layer.name] = {"rank": rank, "full_rank": int(min(n_in, n_out)), "energy": kept,
                            "rel_error": rel}
    if not plans:
        raise CompressionError(
            f"No layer of model {model.name!r} gets smaller at energy={energy}: {skipped}. "
            "Lower the energy or choose wider layers.")
    pending = []

    def replace(layer):
        if layer.name not in plans:
            return None
        a, b = plans[layer.name]
        config = layer.get_config()
        rank = a.shape[1]
        if type(layer) is L.Dense:
            first = L.Dense(rank, use_bias=False, name=f"{layer.name}_lr_a")
            second_config = dict(config, name=f"{layer.name}_lr_b")
            second = L.Dense.from_config(second_config)
            pending.append((first, [a]))
            pending.append((second, [b] + layer.get_weights()[1:]))
        else:
            first = L.Conv2D(rank, 1, strides=layer.strides, padding=layer.padding,
                             use_bias=False, name=f"{layer.name}_lr_a")
            second_config = dict(config, name=f"{layer.name}_lr_b", strides=(1, 1))
            second = L.Conv2D.from_config(second_config)
            pending.append((first, [a[None, None]]))
            pending.append((second, [b[None, None]] + layer.get_weights()[1:]))
        return lambda *args, **kwargs: second(first(*args))

    out = rebuild(work, replace)
    for new, weights in pending:
        new.set_weights(weights)
    object.__setattr__(out, "_tfdeploy_low_rank", info)  # plain dict, not tracked by Keras
    record(out, "low_rank", [f"{n}_lr_{p}" for n in plans for p in "ab"], skipped,
           source=source, detail=f"SVD keeping {float(energy):.0%} energy",
           params={"energy": float(energy), "factorised": info})
    return out
