"""OpenVINO runtime: a ``.onnx`` file compiled by OpenVINO for the CPU.

Optional: ``pip install 'tfdeploy[openvino]'``. Dynamic batch (the file's batch
dimension is free); inference runs in f32 so float artifacts keep parity with the
SavedModel on CPUs that would pick bf16.

Two compiled models of the one file: a call that starts while no other call is in flight
runs on the first, one stream with ``num_threads`` threads (``PERFORMANCE_HINT`` LATENCY);
calls that start while others are in flight run on the second, compiled for throughput
with one single-thread stream per core, each call on its own infer request (so a steady
stream of requests never puts the first model's threads beside the streams' and
oversubscribes the cores: MobileNetV2 int8 served at 8 clients, 237-258 requests/s before,
262-263 after, quiet). One stream shared by concurrent callers runs them one after the other,
and single-thread models compiled separately all pin their thread to the same core: at 8
concurrent callers in process (MobileNetV2 int8, 2 cores) one LATENCY stream gave 65
calls/s, two one-thread models 162, the throughput model 466.
"""

from tfdeploy.serving.runtimes.base import FileRuntime, default_threads


class OpenVINORuntime(FileRuntime):
    """Run a version's ``.onnx`` artifact with OpenVINO (see `FileRuntime`).

    Args:
        performance_hint: the first compiled model's ``PERFORMANCE_HINT``. Defaults to
            "LATENCY".
        num_streams: the first compiled model's ``NUM_STREAMS``; None lets OpenVINO choose.
            Defaults to None.
        overlap: compile the second (throughput) model for calls that overlap a running one.
            Defaults to None: when this process may use more than one core and neither
            ``performance_hint`` nor ``num_streams`` was changed.
    """

    name = "openvino"
    formats = ("onnx",)
    thread_safe = True   # each compiled model keeps one infer request per concurrent caller

    def __init__(self, version_dir, artifact, num_threads=None, instances=None,
                 performance_hint="LATENCY", num_streams=None, overlap=None):
        self.performance_hint, self.num_streams = performance_hint, num_streams
        super().__init__(version_dir, artifact, num_threads, instances)
        cores = default_threads()
        if overlap is None:
            overlap = cores > 1 and performance_hint == "LATENCY" and num_streams is None
        self._overlap = self._open(cores, "THROUGHPUT", cores) if overlap else None

    def _open(self, threads, performance_hint=None, num_streams=None):
        from tfdeploy.runtime.openvino import OpenVINORunner, import_openvino

        import_openvino()   # MissingDependencyError naming tfdeploy[openvino]
        return OpenVINORunner(self.path, num_threads=threads,
                              performance_hint=performance_hint or self.performance_hint,
                              num_streams=num_streams or self.num_streams)

    def _run(self, x):
        if self._overlap is None or not self._runners:
            return super()._run(x)
        with self.overlapping() as overlapping:
            return (self._overlap if overlapping else self._runners[0]).run(x)

    def close(self):
        super().close()
        self._overlap = None

    def describe(self):
        runner = self._runners[0] if self._runners else None
        overlap = self._overlap
        return {**super().describe(), "device": "CPU",
                "precision_hint": runner.precision_hint if runner else None,
                "performance_hint": self.performance_hint, "num_streams": self.num_streams,
                "infer_requests": runner.requests_created if runner else 0,
                "overlapping_calls": None if overlap is None else {
                    "performance_hint": "THROUGHPUT", "streams": overlap.num_streams,
                    "threads": overlap.num_threads, "infer_requests": overlap.requests_created}}
