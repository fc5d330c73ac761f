"""Run a SavedModel signature with ``tf.saved_model.load`` (no Keras involved)."""

import os

from tfdeploy.errors import ArtifactError
from tfdeploy.runtime._inputs import check_batch
from tfdeploy.runtime.versions import latest_version_dir

_PRIMARY = ("probabilities", "predictions", "outputs", "scores")


class SavedModelRunner:
    """Load a SavedModel directory and call one of its signatures.

    Args:
        path: a SavedModel directory (holding ``saved_model.pb``), or a TF Serving
            base path (the highest numeric version is loaded).
        signature: signature key. Defaults to "serving_default".
    """

    format = "saved_model"

    def __init__(self, path, signature="serving_default"):
        import tensorflow as tf

        path = saved_model_dir(path)
        try:
            self._loaded = tf.saved_model.load(path)
        except Exception as exc:
            raise ArtifactError(f"Could not load SavedModel {path!r}: {exc}") from exc
        if signature not in self._loaded.signatures:
            raise ArtifactError(
                f"SavedModel {path!r} has no signature {signature!r}; it has "
                f"{sorted(self._loaded.signatures)}.")
        self.path = path
        self._fn = self._loaded.signatures[signature]
        self._input_specs = self._fn.structured_input_signature[1]
        self._tf = tf

    @property
    def inputs(self):
        """``[(name, shape, dtype)]``; -1 marks a free dimension (as for TFLite/ONNX)."""
        return [(k, _dims(s.shape), s.dtype.name) for k, s in self._input_specs.items()]

    @property
    def outputs(self):
        return [(k, _dims(s.shape), s.dtype.name)
                for k, s in self._fn.structured_outputs.items()]

    def run(self, x):
        """Return ``{output_name: array}``; ``x`` is an array (single input) or a dict."""
        if not isinstance(x, dict):
            if len(self._input_specs) != 1:
                raise ArtifactError(
                    f"This signature takes inputs {sorted(self._input_specs)}; pass a dict.")
            x = {next(iter(self._input_specs)): x}
        feeds = {}
        for name, spec in self._input_specs.items():
            if name not in x:
                raise ArtifactError(f"Missing input {name!r}; the signature takes "
                                    f"{sorted(self._input_specs)}.")
            value = check_batch(name, x[name])
            if not spec.shape.is_compatible_with(value.shape):
                raise ArtifactError(
                    f"Input {name!r} has shape {value.shape}, the signature expects "
                    f"{_dims(spec.shape)} (-1: any size).")
            feeds[name] = self._tf.constant(value, dtype=spec.dtype)
        return {k: v.numpy() for k, v in self._fn(**feeds).items()}

    def predict(self, x):
        """Return the primary output (probabilities for tfdeploy classifiers)."""
        out = self.run(x)
        for key in _PRIMARY:
            if key in out:
                return out[key]
        return next(iter(out.values()))


def _dims(shape):
    if shape.rank is None:
        return ()
    return tuple(-1 if d is None else int(d) for d in shape.as_list())


def saved_model_dir(path):
    """The SavedModel directory ``path`` names: itself, or a TF Serving base path's latest
    numeric version holding a ``saved_model.pb``.

    Raises:
        ArtifactError: neither.
    """
    if not os.path.isdir(path):
        raise ArtifactError(f"SavedModel directory {path!r} does not exist.")
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    latest = latest_version_dir(path, has_file="saved_model.pb")
    if latest is not None:
        return latest[1]
    raise ArtifactError(
        f"{path!r} is neither a SavedModel directory (no saved_model.pb) nor a base path with "
        "numeric version directories.")
