"""What each compression technique did, per layer and per technique, read from the weights.

Wrappers record their decisions in the model's technique history
(`tfdeploy.compress.history`); `strip` and the other wrappers carry it forward,
so the report of a final model lists every technique applied along the way.
The numbers (parameters, sparsity, unique values, widths, ranks) are read from
the weights themselves, not the record: `report` per layer, `measured_history`
per technique (what ``model_card.json`` lists).
"""

import numpy as np

from tfdeploy._keras import keras
from tfdeploy._table import render
from tfdeploy._walk import leaf_layers
from tfdeploy import _tfmot
from tfdeploy.compress.history import carry, history, notes, record  # noqa: F401 (re-export)
from tfdeploy.compress.nm import n_m_fraction
from tfdeploy.compress.slim import channel_widths
from tfdeploy.compress.sparsity import is_model_weight, kernel, model_sparsity, unwrap
from tfdeploy.compress.wrappers import is_quantization_aware

TECHNIQUES = ("distilled", "pruned", "n_m", "clustered", "quantized", "slimmed", "low_rank")
note = record  # the name wrappers used before the history had its own module


def _params(layer):
    return int(sum(np.prod(w.shape) for w in layer.weights if is_model_weight(w)))


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
        return render(head, lines, rule_sep="  ",
                      title=f"Compression report: {self.model_name}")

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
    recorded = notes(model)
    rows = []
    for layer in leaf_layers(model):
        inner = unwrap(layer)
        if isinstance(layer, keras.layers.InputLayer) or _tfmot.is_quantize_layer(inner):
            continue
        values = kernel(layer)
        params = _params(layer)
        row = {"layer": inner.name, "type": type(inner).__name__, "params": params,
               "sparsity": None if values is None else float(np.mean(values == 0)),
               "unique": None if values is None else int(np.unique(values).size),
               "left_out": {}}
        live = {"pruned": _tfmot.is_prune_wrapper(layer),
                "quantized": _tfmot.is_quantize_wrapper(layer),
                "clustered": _tfmot.is_cluster_wrapper(layer)}
        for technique in TECHNIQUES:
            entry = recorded.get(technique, {})
            row[technique] = bool(live.get(technique)) or inner.name in entry.get("layers", [])
            shown = params or inner.name in entry.get("params", {}).get("float_fallback", ())
            if not row[technique] and shown and inner.name in entry.get("skipped", {}):
                row["left_out"][technique] = entry["skipped"][inner.name]
        rows.append(row)
    return Report(rows, model.name)


def _present(model):
    return {unwrap(layer).name: layer for layer in leaf_layers(model)}


def _measure(entry, model, layers):
    technique, params = entry["technique"], entry.get("params", {})
    named = [n for n in entry.get("layers", []) if n in layers]
    if technique == "pruned":
        return {"sparsity": model_sparsity(model, layers=named),
                "layer_sparsity": {n: float(np.mean(kernel(layers[n]) == 0)) for n in named
                                   if kernel(layers[n]) is not None}}
    if technique == "n_m":
        n, m = params.get("n", 2), params.get("m", 4)
        return {"n_m_fraction": {name: n_m_fraction(kernel(layers[name]), n, m)
                                 for name in named}}
    if technique == "clustered":
        return {"unique_weights": {name: int(np.unique(kernel(layers[name])).size)
                                   for name in named if kernel(layers[name]) is not None}}
    if technique == "slimmed":
        widths = channel_widths(model)
        return {"widths": {name: widths[name] for name in named if name in widths}}
    if technique == "low_rank":
        return {"rank": {name[:-len("_lr_a")]: int(kernel(layers[name]).shape[-1])
                         for name in named if name.endswith("_lr_a")}}
    if technique == "quantized":
        return {"quantization_aware": is_quantization_aware(model),
                "sparsity": model_sparsity(model)}
    if technique == "distilled":
        return {"params": int(model.count_params())}
    return {}


def measured_history(model):
    """The technique history of ``model``, each entry with ``result`` read from its weights.

    ``result`` holds what the technique left measurably in the model now: the
    sparsity of the pruned layers, the N:M fraction, distinct values per clustered
    kernel, channel widths of slimmed layers, ranks of factorised layers; and
    ``missing_layers`` names recorded layers a later stage removed or renamed.

    Returns:
        A list of dicts (JSON-serialisable), oldest technique first.
    """
    layers = _present(model)
    out = []
    for entry in history(model):
        entry = dict(entry)
        entry["result"] = _measure(entry, model, layers)
        missing = [n for n in entry.get("layers", []) if n not in layers]
        if missing:
            entry["result"]["missing_layers"] = missing
        out.append(entry)
    return out
