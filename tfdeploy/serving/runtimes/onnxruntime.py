"""ONNX Runtime runtime: a ``.onnx`` file in an ``onnxruntime`` CPU session.

``num_threads`` sets the session's intra-op threads. ``InferenceSession.run`` is
thread-safe, but concurrent calls on one session share its intra-op pool and wait for each
other's threads; so, as LiteRT, a call alone runs on the first session with ``num_threads``
threads and calls that overlap it on one-thread sessions (`FileRuntime`'s mixed pool). At 8
concurrent callers in process (MobileNetV2 int8, 2 cores, load ~4): one shared two-thread
session 130 calls/s at 6.4 ms of CPU per call, this pool (a two-thread and a one-thread
session) 159 at 6.3 ms, two one-thread sessions 207 at 4.4 ms.
"""

from tfdeploy.errors import MissingDependencyError
from tfdeploy.serving.runtimes.base import FileRuntime


class ONNXRuntime(FileRuntime):
    """Run a version's ``.onnx`` artifact with onnxruntime (see `FileRuntime`)."""

    name = "onnxruntime"
    formats = ("onnx",)
    thread_safe = False

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
