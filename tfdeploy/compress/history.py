"""The technique history: what was applied to a model, in order, kept in one place.

Every wrapper (`prune`, `prune_n_m`, `cluster`, `quantize`, `slim`, `low_rank`,
`distill`) appends one entry to the model it returns; `strip`, `copy_model`,
`flatten`, `with_policy`/`to_float32` and every later wrapper carry the history
forward, so the final model lists every technique applied along the way::

    [{"technique": "pruned", "params": {"target_sparsity": 0.8, ...},
      "layers": ["conv2", "dense"], "skipped": {"conv1": "..."}, "detail": "80% magnitude"},
     {"technique": "quantized", "params": {"preserve": "sparsity", ...}, ...}]

The history is plain JSON. It lives on the model object (``_tfdeploy_history``,
not tracked by Keras), and survives saving when the model is saved with
`tfdeploy.model_io.save_model` and read back with `tfdeploy.model_io.load_model`
(`tfdeploy._history` stores it inside the ``.keras`` zip, in the ``.h5`` file's
attributes, or beside a SavedModel's ``saved_model.pb``).
`tfdeploy.compress.report.measured_history` adds what each technique measurably
left in the weights; `tfdeploy.export` writes that into ``model_card.json``.
"""

from tfdeploy._deprecated import moved
from tfdeploy._history import history, set_history


def carry(source, target):
    """Give ``target`` the history of ``source`` (``target`` keeps none of its own that
    ``source`` lacks ahead of it); returns ``target``."""
    own = history(target)
    before = history(source)
    extra = own[len(before):] if own[:len(before)] == before else own
    return set_history(target, before + [e for e in extra if e not in before])


def record(model, technique, chosen, skipped, source=None, detail=None, params=None):
    """Append one technique to ``model``'s history (after ``source``'s, when given)."""
    if source is not None:
        carry(source, model)
    entry = {"technique": technique, "params": dict(params or {}), "layers": list(chosen),
             "skipped": dict(skipped), "detail": detail}
    return set_history(model, history(model) + [entry])


def notes(model):
    """``{technique: last entry}`` over the history (the per-technique view `report` uses)."""
    out = {}
    for entry in history(model):
        out[entry["technique"]] = entry
    return out


__getattr__ = moved(__name__, {name: "tfdeploy.model_io" for name in (
    "load_model", "save_model", "read_history", "write_history", "HISTORY_FILE")})
