"""A small JSON model card written beside every exported artifact.

It records where the artifact came from (the Keras model, its size), what was
done to it (every technique in the model's history, with its parameters and
what it measurably left in the weights, then the overall kernel sparsity) and
any metrics the caller passes, so a deployed file explains itself.
"""

import datetime
import json

from tfdeploy._keras import tf
from tfdeploy.compress.report import measured_history
from tfdeploy.compress.sparsity import model_sparsity
from tfdeploy._json import write_json

CARD_FILE = "model_card.json"
SCHEMA = "tfdeploy-model-card/1"


def compression_history(model):
    """Every technique applied to ``model`` (see `tfdeploy.compress.history`), in order,
    each with ``step`` (its name), parameters, layers and measured ``result``; then the
    overall measured kernel sparsity."""
    steps = [{"step": entry["technique"], **entry} for entry in measured_history(model)]
    steps.append({"step": "measured", "kernel_sparsity": round(model_sparsity(model), 6)})
    return steps


def build(model, fields=None, extra=None):
    """Return the card as a dict: base facts, then ``fields``, then the caller's ``extra``."""
    from tfdeploy import __version__

    card = {
        "schema": SCHEMA,
        "name": model.name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tfdeploy_version": __version__,
        "tensorflow_version": tf.__version__,
        "source": {
            "keras_model": model.name,
            "params": int(model.count_params()),
            "inputs": [{"name": n, "shape": list(t.shape)}
                       for n, t in zip(model.input_names, model.inputs)],
            "outputs": [{"name": n, "shape": list(t.shape)}
                        for n, t in zip(model.output_names, model.outputs)],
        },
        "compression": compression_history(model),
        "metrics": {},
    }
    card.update(fields or {})
    for key, value in (extra or {}).items():
        if key == "compression" and isinstance(value, list):
            card["compression"] = list(value) + card["compression"]
        elif isinstance(value, dict) and isinstance(card.get(key), dict):
            card[key] = {**card[key], **value}
        else:
            card[key] = value
    return card


def write(path, model, fields=None, extra=None):
    """Write the card for ``model`` to ``path`` (atomically); returns the dict written."""
    card = build(model, fields, extra)
    write_json(path, card)
    return card


def card_path(artifact_path):
    """Where the card of an artifact lives: inside a SavedModel, else ``<file>.card.json``."""
    import os

    if os.path.isdir(artifact_path):
        return os.path.join(artifact_path, "assets.extra", CARD_FILE)
    return os.path.splitext(artifact_path)[0] + ".card.json"


def read(artifact_path):
    """Load the card of an artifact (see `card_path`)."""
    with open(card_path(artifact_path)) as f:
        return json.load(f)


def saved_model_fields(module, version, class_names, warmup):
    return {"artifact": {"format": "saved_model", "version": version,
                         "signatures": sorted(module.signature_functions()),
                         "class_names": list(class_names) if class_names else None,
                         "warmup_requests": bool(warmup)}}

