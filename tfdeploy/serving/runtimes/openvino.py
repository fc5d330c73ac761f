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

    def __init__(self, version_dir, artifact, num_threads=None, instances=None,
                 performance_hint="LATENCY", num_streams=None):
        self.performance_hint, self.num_streams = performance_hint, num_streams
        super().__init__(version_dir, artifact, num_threads, instances)

    def _open(self, threads):
        from tfdeploy.runtime.openvino import OpenVINORunner, import_openvino

        import_openvino()   # MissingDependencyError naming tfdeploy[openvino]
        return OpenVINORunner(self.path, num_threads=threads,
                              performance_hint=self.performance_hint,
                              num_streams=self.num_streams)

    def describe(self):
        runner = self._runners[0] if self._runners else None
        return {**super().describe(), "device": "CPU",
                "precision_hint": runner.precision_hint if runner else None,
                "performance_hint": self.performance_hint, "num_streams": self.num_streams,
                "infer_requests": runner.requests_created if runner else 0}
