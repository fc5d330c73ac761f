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
`save_model` and read back with `load_model` (it is stored inside the ``.keras``
zip, in the ``.h5`` file's attributes, or beside a SavedModel's ``saved_model.pb``).
`tfdeploy.compress.report.measured_history` adds what each technique measurably
left in the weights; `tfdeploy.export` writes that into ``model_card.json``.
"""

import copy
import json
import os
import zipfile

from tfdeploy.bridge import load_model as bridge_load


_ATTR = "_tfdeploy_history"
HISTORY_FILE = "tfdeploy_history.json"
_H5_ATTR = "tfdeploy_history"


def history(model):
    """The technique history of ``model``: a list of dicts, oldest first (a copy)."""
    return copy.deepcopy(list(getattr(model, _ATTR, None) or []))


def set_history(model, entries):
    """Replace ``model``'s history with ``entries`` (JSON-able dicts); returns model."""
    object.__setattr__(model, _ATTR, json.loads(json.dumps(list(entries), default=_plain)))
    return model


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


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, type):
        return value.__name__
    return str(value)


def write_history(filepath, entries):
    """Store ``entries`` with a saved model at ``filepath`` (.keras, .h5 or SavedModel dir)."""
    text = json.dumps(list(entries), default=_plain)
    if os.path.isdir(filepath):
        with open(os.path.join(filepath, HISTORY_FILE), "w") as f:
            f.write(text)
    elif zipfile.is_zipfile(filepath):
        with zipfile.ZipFile(filepath, "a") as archive:
            if HISTORY_FILE not in archive.namelist():
                archive.writestr(HISTORY_FILE, text)
    else:
        import h5py

        with h5py.File(filepath, "a") as f:
            f.attrs[_H5_ATTR] = text


def read_history(filepath):
    """The history stored with a saved model at ``filepath`` ([] when there is none)."""
    text = None
    if os.path.isdir(filepath):
        path = os.path.join(filepath, HISTORY_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                text = f.read()
    elif zipfile.is_zipfile(filepath):
        with zipfile.ZipFile(filepath) as archive:
            if HISTORY_FILE in archive.namelist():
                text = archive.read(HISTORY_FILE).decode()
    else:
        try:
            import h5py

            with h5py.File(filepath, "r") as f:
                text = f.attrs.get(_H5_ATTR)
        except (ImportError, OSError):
            text = None
    return json.loads(text) if text else []


def save_model(model, filepath, **kwargs):
    """``model.save(filepath, **kwargs)``, then store its technique history with it."""
    model.save(filepath, **kwargs)
    write_history(filepath, history(model))
    return filepath


def load_model(filepath):
    """Load a model as `tfdeploy.bridge.load_model` does, and restore its technique history.

    Args:
        filepath: a ``.keras`` / ``.h5`` file or SavedModel directory written by
            `save_model` (or ``model.save``: then the history is empty; a Keras 3
            file is bridged to Keras 2).

    Returns:
        The ``keras.Model`` (uncompiled), with `history` restored.
    """
    return set_history(bridge_load(filepath), read_history(filepath))
