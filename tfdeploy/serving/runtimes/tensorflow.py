"""TensorFlow runtime: the version's SavedModel, every signature, through ``tf.saved_model.load``.

This is what TF Serving runs. TensorFlow's threads are process-wide
(``tf.config.threading``), so ``num_threads`` is only recorded here; a signature
function is safe to call from several threads at once.
"""

from tfdeploy.errors import ArtifactError, MissingDependencyError
from tfdeploy.serving.runtimes.base import Runtime

SERVE_TAG = "serve"


class TensorFlowRuntime(Runtime):
    """Run a version's SavedModel (tag ``serve``); every signature key is callable.

    Args:
        version_dir: the version directory.
        artifact: the SavedModel entry of ``read_artifacts(version_dir)`` (its first).
        num_threads: recorded only (TensorFlow's thread pools are per process).
    """

    name = "tensorflow"
    formats = ("saved_model",)

    def __init__(self, version_dir, artifact, num_threads=None):
        super().__init__(version_dir, artifact, num_threads)
        try:
            import tensorflow as tf
        except ImportError as exc:
            raise MissingDependencyError(
                "The tensorflow runtime needs tensorflow, a dependency of tfdeploy; "
                "`pip install tensorflow` (or reinstall tfdeploy).") from exc
        self._tf = tf
        self.path = artifact.get("path") or version_dir
        try:
            self._loaded = tf.saved_model.load(self.path, tags=[SERVE_TAG])
        except (OSError, ValueError, RuntimeError, tf.errors.OpError) as exc:
            raise ArtifactError(
                f"SavedModel {self.path!r} cannot be loaded ({str(exc).splitlines()[0]}); "
                "re-export the version.") from exc
        self._functions = dict(self._loaded.signatures)

    @property
    def signature_keys(self):
        return frozenset(self._functions)

    def call(self, key, feeds):
        """Call signature ``key``; TensorFlow's errors (``tf.errors.OpError``) pass through."""
        if key not in self._functions:
            raise ArtifactError(f"SavedModel {self.path!r} has no signature {key!r}; it has "
                                f"{sorted(self._functions)}.")
        tf = self._tf
        result = self._functions[key](**{k: tf.constant(v) for k, v in feeds.items()})
        return {k: v.numpy() for k, v in result.items()}

    def close(self):
        self._functions = {}
        self._loaded = None
