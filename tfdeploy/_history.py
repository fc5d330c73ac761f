"""Where a model's technique history is kept: on the model object, and in its saved file.

The history itself (what each compression wrapper records, and how it is carried
from model to model) is `tfdeploy.compress.history`'s; this is its storage, on the
ground floor, so that `tfdeploy.model_io` can save and load it without importing
``compress``. On the object it is ``_tfdeploy_history`` (not tracked by Keras); in
a file, inside the ``.keras`` zip, in the ``.h5`` file's attributes, or beside a
SavedModel's ``saved_model.pb``.
"""

import copy
import json
import os
import zipfile

from tfdeploy._json import plain

_ATTR = "_tfdeploy_history"
HISTORY_FILE = "tfdeploy_history.json"
_H5_ATTR = "tfdeploy_history"


def history(model):
    """The technique history of ``model``: a list of dicts, oldest first (a copy)."""
    return copy.deepcopy(list(getattr(model, _ATTR, None) or []))


def set_history(model, entries):
    """Replace ``model``'s history with ``entries`` (JSON-able dicts); returns model."""
    object.__setattr__(model, _ATTR, json.loads(json.dumps(list(entries), default=plain)))
    return model


def write_history(filepath, entries):
    """Store ``entries`` with a saved model at ``filepath`` (.keras, .h5 or SavedModel dir)."""
    text = json.dumps(list(entries), default=plain)
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
