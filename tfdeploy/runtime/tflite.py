"""Run a ``.tflite`` file with the LiteRT interpreter (``ai_edge_litert``)."""

import os

import numpy as np

from tfdeploy.errors import ArtifactError
from tfdeploy.runtime._inputs import check_batch


class TFLiteRunner:
    """Load a ``.tflite`` model and predict with ``ai_edge_litert``.

    Quantized (int8/uint8) inputs are quantized with the tensor's scale and zero
    point, and quantized outputs dequantized, so callers always pass and get
    float values. Input tensors are resized (and re-allocated) only when a batch's
    size differs from the previous one (``resizes`` counts them). An interpreter is
    not thread-safe: callers running from several threads serialize calls.

    Args:
        path: the ``.tflite`` file.
        num_threads: interpreter threads; None lets LiteRT choose. Defaults to None.
    """

    format = "tflite"

    def __init__(self, path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        if not os.path.isfile(path):
            raise ArtifactError(f"TFLite file {path!r} does not exist.")
        self.path = path
        self.num_threads = num_threads
        try:
            self._interpreter = Interpreter(model_path=path, num_threads=num_threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ArtifactError(
                f"{path!r} is not a valid TFLite model ({exc}). Re-export it with "
                "tfdeploy.export.tflite.") from exc
        # the converter leaves a free batch dimension at 1: resize only when a batch differs
        self._batch = int(self._interpreter.get_input_details()[0]["shape"][0])
        self.resizes = 0

    @property
    def inputs(self):
        return [(d["name"], tuple(int(v) for v in d["shape_signature"]), np.dtype(d["dtype"]).name)
                for d in self._interpreter.get_input_details()]

    @property
    def outputs(self):
        return [(d["name"], tuple(int(v) for v in d["shape_signature"]), np.dtype(d["dtype"]).name)
                for d in self._interpreter.get_output_details()]

    def _resize(self, batch):
        if batch != self._batch:
            detail = self._interpreter.get_input_details()[0]
            shape = list(detail["shape"])
            shape[0] = batch
            self._interpreter.resize_tensor_input(detail["index"], shape, strict=False)
            self._interpreter.allocate_tensors()
            self._batch = batch
            self.resizes += 1

    def run(self, x):
        """Return ``{output_name: float array}`` for a batch ``x``."""
        detail = self._interpreter.get_input_details()[0]
        x = check_batch(detail["name"], x)
        expected = tuple(int(d) for d in detail["shape"][1:])
        if x.ndim != len(detail["shape"]) or tuple(x.shape[1:]) != expected:
            raise ArtifactError(
                f"Input shape {x.shape} does not match the model's input "
                f"{(None, *expected)}; resize or reshape the batch.")
        self._resize(x.shape[0])
        detail = self._interpreter.get_input_details()[0]
        dtype = np.dtype(detail["dtype"])
        if dtype.kind in "iu":
            scale, zero = detail["quantization"]
            if scale:
                x = np.round(x / scale + zero)
            info = np.iinfo(dtype)
            x = np.clip(x, info.min, info.max)
        self._interpreter.set_tensor(detail["index"], x.astype(dtype))
        self._interpreter.invoke()
        out = {}
        for d in self._interpreter.get_output_details():
            y = self._interpreter.get_tensor(d["index"])
            scale, zero = d["quantization"]
            if np.dtype(d["dtype"]).kind in "iu" and scale:
                y = (y.astype(np.float32) - zero) * scale
            out[d["name"]] = y
        return out

    def predict(self, x):
        """Return the first output for a batch ``x`` as a float array."""
        return next(iter(self.run(x).values())).astype(np.float32)
