"""OpenVINO runtime: a ``.onnx`` file compiled once by OpenVINO for the CPU.

Optional: ``pip install 'tfdeploy[openvino]'``. Dynamic batch (the file's batch
dimension is free); each concurrent call uses its own infer request of the one
compiled model. ``num_threads`` sets ``INFERENCE_NUM_THREADS``; inference runs in
f32 so float artifacts keep parity with the SavedModel on CPUs that would pick bf16.
"""

from tfdeploy.serving.runtimes.base import FileRuntime


class OpenVINORuntime(FileRuntime):
    """Run a version's ``.onnx`` artifact with OpenVINO (see `FileRuntime`)."""

    name = "openvino"
    formats = ("onnx",)
    thread_safe = True   # the runner keeps one infer request per concurrent caller

    def _open(self):
        from tfdeploy.runtime.openvino import OpenVINORunner, import_openvino

        import_openvino()   # MissingDependencyError naming tfdeploy[openvino]
        return OpenVINORunner(self.path, num_threads=self.num_threads)

    def describe(self):
        runner = self._runners[0] if self._runners else None
        return {**super().describe(), "device": "CPU",
                "precision_hint": runner.precision_hint if runner else None,
                "infer_requests": runner.requests_created if runner else 0}
