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
        self._read_details()
        self.resizes = 0

    def _read_details(self):
        """Cache what every call needs from the interpreter's tensor details (building them
        costs more than a small model's call); re-read after a resize."""
        interp = self._interpreter
        d = interp.get_input_details()[0]
        self._input_name, self._input_index = d["name"], d["index"]
        self._input_shape = tuple(int(v) for v in d["shape"])
        self._input_dtype = np.dtype(d["dtype"])
        self._batch = self._input_shape[0]
        self._quantize = None
        if self._input_dtype.kind in "iu":
            scale, zero = d["quantization"]
            info = np.iinfo(self._input_dtype)
            self._quantize = (float(scale), float(zero), info.min, info.max)
        self._output_specs = []
        for o in interp.get_output_details():
            scale, zero = o["quantization"]
            dequantize = np.dtype(o["dtype"]).kind in "iu" and bool(scale)
            self._output_specs.append((o["name"], o["index"],
                                       (float(scale), float(zero)) if dequantize else None))

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
            shape = list(self._input_shape)
            shape[0] = batch
            self._interpreter.resize_tensor_input(self._input_index, shape, strict=False)
            self._interpreter.allocate_tensors()
            self._read_details()
            self.resizes += 1

    def _quantized(self, x):
        scale, zero, low, high = self._quantize
        if scale:
            x = np.divide(x, scale, dtype=np.float32)
            x += zero
            np.rint(x, out=x)
        else:
            x = np.array(x, dtype=np.float32)
        np.clip(x, low, high, out=x)
        return x.astype(self._input_dtype)

    def run(self, x):
        """Return ``{output_name: float array}`` for a batch ``x``."""
        x = check_batch(self._input_name, x)
        expected = self._input_shape[1:]
        if x.ndim != len(self._input_shape) or x.shape[1:] != expected:
            raise ArtifactError(
                f"Input shape {x.shape} does not match the model's input "
                f"{(None, *expected)}; resize or reshape the batch.")
        self._resize(x.shape[0])
        if self._quantize is not None:
            x = self._quantized(x)
        elif x.dtype != self._input_dtype or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=self._input_dtype)
        interp = self._interpreter
        interp.set_tensor(self._input_index, x)
        interp.invoke()
        out = {}
        for name, index, dequantize in self._output_specs:
            y = interp.get_tensor(index)
            if dequantize is not None:
                y = (y.astype(np.float32) - dequantize[1]) * dequantize[0]
            out[name] = y
        return out

    def predict(self, x):
        """Return the first output for a batch ``x`` as a float array."""
        return next(iter(self.run(x).values())).astype(np.float32)
