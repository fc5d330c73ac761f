"""LiteRT runtime: a ``.tflite`` file in ``ai_edge_litert``'s interpreter (XNNPACK).

LiteRT's default op resolver applies the XNNPACK delegate to the float and int8
kernels it covers; ``num_threads`` sets the interpreter's (and XNNPACK's) threads.
Quantized int8 inputs and outputs are (de)quantized by `tfdeploy.runtime.TFLiteRunner`,
which resizes the input only when a batch's size differs from the one before on the same
interpreter. An interpreter is not thread-safe: a call alone runs on the first interpreter,
with ``num_threads`` threads (default: every core this process may use); a call that starts
while others are in flight runs on a one-thread interpreter, created when needed, up to
``instances`` of them (default: one per core), so concurrent requests use every core
(`FileRuntime`'s mixed pool).
"""

from tfdeploy.errors import MissingDependencyError
from tfdeploy.serving.runtimes.base import FileRuntime


class LiteRTRuntime(FileRuntime):
    """Run a version's ``.tflite`` artifact (see `FileRuntime` for the arguments)."""

    name = "litert"
    formats = ("tflite",)
    thread_safe = False

    def _open(self, threads):
        try:
            import ai_edge_litert.interpreter  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError(
                "The LiteRT runtime needs ai-edge-litert, a dependency of tfdeploy; "
                "`pip install ai-edge-litert` (or reinstall tfdeploy).") from exc
        from tfdeploy.runtime.tflite import TFLiteRunner

        return TFLiteRunner(self.path, num_threads=threads)

    @property
    def resizes(self):
        """Input resizes so far, over all interpreters (one per change of batch size)."""
        return sum(r.resizes for r in self._runners)

    def describe(self):
        return {**super().describe(), "delegate": "xnnpack (LiteRT default)",
                "resizes": self.resizes}
