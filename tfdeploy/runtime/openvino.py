"""Run a ``.onnx`` file with OpenVINO on the CPU (optional extra ``tfdeploy[openvino]``).

The model is read and compiled once; each call takes an infer request from a small
pool (one per concurrent caller), so calls from several threads run side by side.
Float models run in f32 (``INFERENCE_PRECISION_HINT``): OpenVINO otherwise picks
bf16 on CPUs with AMX, which would break float parity with the SavedModel.

Every runner compiles on one ``openvino.Core`` for the whole process (`shared_core`), as
OpenVINO recommends: each Core has its own CPU plugin, and each plugin gives the thread that
creates it an alternate signal stack (one that holds AMX state) and, when it is destroyed,
unmaps that stack and puts back the one it replaced. Plugins destroyed in another order than
they were made leave the thread's signal stack pointing at unmapped memory, so the next
signal handled on that thread (a server's SIGTERM) ended the process with SIGSEGV, or wrote
its frame over memory in use.
"""

import os
import queue
import threading

import numpy as np

from tfdeploy.errors import ArtifactError, MissingDependencyError
from tfdeploy.runtime._inputs import check_batch

INSTALL_HINT = "pip install 'tfdeploy[openvino]'"


def import_openvino():
    """The ``openvino`` module, or MissingDependencyError naming the extra to install."""
    try:
        import openvino
    except ImportError as exc:
        raise MissingDependencyError(
            f"The OpenVINO runtime needs the openvino package, which is not installed; "
            f"`{INSTALL_HINT}`.") from exc
    return openvino


_core = None
_core_lock = threading.Lock()


def shared_core():
    """The process's one ``openvino.Core``, made on first use and kept until exit.

    Its CPU plugin, and the alternate signal stack the plugin installed on the thread that
    first compiled a model, live as long as the process, so no runner's end can leave a thread
    with a signal stack that was unmapped (see the module docstring).
    """
    global _core
    ov = import_openvino()   # (each time: MissingDependencyError wherever it is missing)
    with _core_lock:
        if _core is None:
            _core = ov.Core()
        return _core


class OpenVINORunner:
    """Compile a ``.onnx`` model with OpenVINO (CPU, dynamic batch) and predict.

    Args:
        path: the ``.onnx`` file.
        num_threads: ``INFERENCE_NUM_THREADS``; None lets OpenVINO choose. Defaults to None.
        precision_hint: ``INFERENCE_PRECISION_HINT`` ("f32", "bf16"). Defaults to "f32".
        performance_hint: ``PERFORMANCE_HINT`` ("LATENCY": one stream, every thread on
            one request; "THROUGHPUT": several streams); None lets OpenVINO choose.
            Defaults to None.
        num_streams: ``NUM_STREAMS``; None lets OpenVINO choose. Defaults to None.
    """

    format = "onnx"
    engine = "openvino"

    def __init__(self, path, num_threads=None, precision_hint="f32", performance_hint=None,
                 num_streams=None):
        core = shared_core()   # MissingDependencyError naming the extra when not installed
        if not os.path.isfile(path):
            raise ArtifactError(f"ONNX file {path!r} does not exist.")
        config = {"INFERENCE_PRECISION_HINT": precision_hint}
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = int(num_threads)
        if performance_hint:
            config["PERFORMANCE_HINT"] = performance_hint
        if num_streams:
            config["NUM_STREAMS"] = int(num_streams)
        try:
            self._compiled = core.compile_model(core.read_model(path), "CPU", config)
        except Exception as exc:  # OpenVINO raises its own RuntimeError subclasses
            raise ArtifactError(
                f"{path!r} is not a model OpenVINO can compile ({str(exc).splitlines()[0]}). "
                "Re-export it with tfdeploy.export.onnx.") from exc
        self.path = path
        self.num_threads = num_threads
        self.precision_hint = precision_hint
        self.performance_hint = performance_hint
        self.num_streams = num_streams
        self._requests = queue.SimpleQueue()
        self.requests_created = 0

    @property
    def inputs(self):
        return [_port(p) for p in self._compiled.inputs]

    @property
    def outputs(self):
        return [_port(p) for p in self._compiled.outputs]

    def run(self, x):
        """Return ``{output_name: array}``; ``x`` is an array (single input) or a dict."""
        specs = self.inputs
        if not isinstance(x, dict):
            if len(specs) != 1:
                raise ArtifactError(
                    f"This model takes inputs {[s[0] for s in specs]}; pass a dict.")
            x = {specs[0][0]: x}
        feeds = {}
        for name, shape, dtype in specs:
            if name not in x:
                raise ArtifactError(f"Missing input {name!r}; the model takes "
                                    f"{[s[0] for s in specs]}.")
            value = check_batch(name, np.asarray(x[name], dtype=dtype))
            if value.ndim != len(shape) or any(
                    e != -1 and e != v for e, v in zip(shape[1:], value.shape[1:])):
                raise ArtifactError(
                    f"Input {name!r} has shape {value.shape}, the model expects {shape} "
                    "(-1: any size).")
            feeds[name] = value
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
            self.requests_created += 1
        try:
            # infer() copies the outputs out of the request's buffers (share_outputs=False),
            # so the arrays stay valid once the request serves another caller
            result = request.infer(feeds, share_outputs=False)
            out = {port.get_any_name(): result[port] for port in self._compiled.outputs}
        finally:
            self._requests.put(request)
        return out

    def predict(self, x):
        """Return the first output for a batch ``x`` as a float array."""
        return next(iter(self.run(x).values())).astype(np.float32)


def _port(port):
    """``(name, shape, dtype name)`` of a compiled model's input or output."""
    return (port.get_any_name(), _dims(port.get_partial_shape()),
            port.get_element_type().to_dtype().name)


def _dims(partial_shape):
    return tuple(d.get_length() if d.is_static else -1 for d in partial_shape)
