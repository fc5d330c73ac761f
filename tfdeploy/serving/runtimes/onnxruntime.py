"""ONNX Runtime runtime: a ``.onnx`` file in an ``onnxruntime`` CPU session.

``num_threads`` sets the session's intra-op threads. ``InferenceSession.run`` is
thread-safe, so concurrent calls share one session.
"""

from tfdeploy.errors import MissingDependencyError
from tfdeploy.serving.runtimes.base import FileRuntime


class ONNXRuntime(FileRuntime):
    """Run a version's ``.onnx`` artifact with onnxruntime (see `FileRuntime`)."""

    name = "onnxruntime"
    formats = ("onnx",)
    thread_safe = True

    def __init__(self, version_dir, artifact, num_threads=None, instances=None, spinning=False):
        self.spinning = spinning
        super().__init__(version_dir, artifact, num_threads, instances)

    def _open(self, threads):
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError(
                "The onnxruntime runtime needs onnxruntime, a dependency of tfdeploy; "
                "`pip install onnxruntime` (or reinstall tfdeploy).") from exc
        from tfdeploy.runtime.onnx import ONNXRunner

        return ONNXRunner(self.path, num_threads=threads, spinning=self.spinning)

    def describe(self):
        return {**super().describe(), "providers": ["CPUExecutionProvider"],
                "spinning": self.spinning}
