"""A per-layer report of what each compression technique did, and why layers were left out.

Wrappers record their decisions on the model they return (``note``); `strip`
and the other wrappers carry the record forward, so the report of a final
model lists every technique applied along the way. The numbers (parameters,
sparsity, unique values) are read from the weights themselves, not the record.
"""

import numpy as np

from tfdeploy._keras import keras

TECHNIQUES = ("pruned", "n_m", "clustered", "quantized", "slimmed", "low_rank")
_ATTR = "_tfdeploy_notes"


def notes(model):
    """The compression record carried by ``model`` (a dict; empty when none)."""
    return getattr(model, _ATTR, {}) or {}


def carry(source, target):
    """Copy ``source``'s record onto ``target`` (which must not share it); returns target."""
    record = {k: {kk: (dict(vv) if isinstance(vv, dict) else list(vv) if isinstance(vv, list)
                       else vv) for kk, vv in v.items()} for k, v in notes(source).items()}
    record.update(notes(target))
    object.__setattr__(target, _ATTR, record)
    return target


def note(model, technique, chosen, skipped, source=None, detail=None):
    """Record that ``technique`` was applied to ``chosen`` and why ``skipped`` were not."""
    if source is not None:
        carry(source, model)
    record = dict(notes(model))
    record[technique] = {"layers": list(chosen), "skipped": dict(skipped), "detail": detail}
    object.__setattr__(model, _ATTR, record)
    return model


def _unwrap(layer):
    inner = getattr(layer, "layer", None)
    return inner if isinstance(inner, keras.layers.Layer) else layer


def _leaves(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaves(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            yield layer


def _short(weight):
    return weight.name.split("/")[-1].split(":")[0]


_MODEL_WEIGHTS = ("bias", "gamma", "beta", "moving_mean", "moving_variance", "embeddings")


def is_model_weight(weight):
    """True for a layer's own parameter (kernel, bias, BN statistics), False for the
    training-only variables of wrappers (masks, quantizer ranges, cluster indices)."""
    short = _short(weight)
    return short.endswith("kernel") or short in _MODEL_WEIGHTS


def _params(layer, inner):
    return int(sum(np.prod(w.shape) for w in layer.weights if is_model_weight(w)))


def _kernel(layer):
    """The effective kernel (mask and cluster applied) of a possibly wrapped layer, or None."""
    for weight, mask, _ in getattr(layer, "pruning_vars", []) or []:
        return weight.numpy() * mask.numpy()
    inner = _unwrap(layer)
    if hasattr(layer, "quantize_config"):
        for w in layer.weights:
            if _short(w).endswith("kernel"):
                return w.numpy()
        return None
    for attr in ("kernel", "depthwise_kernel"):
        value = getattr(inner, attr, None)
        if value is not None and hasattr(value, "numpy"):
            return value.numpy()
    return None


class Report:
    """What was done to each layer. ``rows`` is a list of dicts; ``str()`` is a table."""

    def __init__(self, rows, model_name):
        self.rows, self.model_name = rows, model_name

    def to_dict(self):
        """``{layer_name: row}`` (each row a plain dict, JSON-serialisable)."""
        return {row["layer"]: dict(row) for row in self.rows}

    def table(self):
        head = ["layer", "type", "params", "sparsity", "unique", "applied", "left out (why)"]
        lines = []
        for r in self.rows:
            applied = ", ".join(t for t in TECHNIQUES if r[t]) or "-"
            why = "; ".join(f"{t}: {w}" for t, w in r["left_out"].items()) or "-"
            lines.append([r["layer"], r["type"], str(r["params"]),
                          "-" if r["sparsity"] is None else f"{r['sparsity']:.2f}",
                          "-" if r["unique"] is None else str(r["unique"]), applied, why])
        widths = [max(len(h), *(len(row[i]) for row in lines)) if lines else len(h)
                  for i, h in enumerate(head)]
        fmt = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa
        return "\n".join([f"Compression report: {self.model_name}", fmt(head),
                          fmt(["-" * w for w in widths])] + [fmt(row) for row in lines])

    __str__ = table

    def __repr__(self):
        return f"Report({self.model_name!r}, {len(self.rows)} layers)"


def report(model):
    """Return a per-layer `Report` of ``model``: sizes, sparsity, techniques and reasons.

    Args:
        model: any Keras model (wrapped, stripped or plain).

    Returns:
        A `Report`; ``report(model).to_dict()["conv2"]["pruned"]`` is True when
        conv2 was pruned, and ``["left_out"]`` maps each technique that skipped
        the layer to why.

    Example:
        >>> print(report(strip(pruned)))
    """
    record = notes(model)
    rows = []
    for layer in _leaves(model):
        inner = _unwrap(layer)
        if type(inner).__name__ == "QuantizeLayer":
            continue
        kernel = _kernel(layer)
        params = _params(layer, inner)
        row = {"layer": inner.name, "type": type(inner).__name__, "params": params,
               "sparsity": None if kernel is None else float(np.mean(kernel == 0)),
               "unique": None if kernel is None else int(np.unique(kernel).size),
               "left_out": {}}
        live = {"pruned": hasattr(layer, "pruning_vars"),
                "quantized": hasattr(layer, "quantize_config"),
                "clustered": type(layer).__name__ == "ClusterWeights"}
        for technique in TECHNIQUES:
            entry = record.get(technique, {})
            row[technique] = bool(live.get(technique)) or inner.name in entry.get("layers", [])
            shown = params or inner.name in entry.get("float_fallback", ())
            if not row[technique] and shown and inner.name in entry.get("skipped", {}):
                row["left_out"][technique] = entry["skipped"][inner.name]
        rows.append(row)
    return Report(rows, model.name)
