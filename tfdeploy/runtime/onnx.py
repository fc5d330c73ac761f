"""Run a ``.onnx`` file with onnxruntime (CPU)."""

import os

import numpy as np

from tfdeploy.errors import ArtifactError, MissingDependencyError
from tfdeploy.runtime._inputs import check_batch

_NP = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
       "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
       "tensor(uint8)": "uint8", "tensor(string)": "object", "tensor(bool)": "bool"}


class ONNXRunner:
    """Load an ONNX model in an onnxruntime ``InferenceSession`` and predict.

    Args:
        path: the ``.onnx`` file.
        num_threads: intra-op threads; None lets onnxruntime choose. Defaults to None.
        spinning: whether the intra-op threads spin waiting for work between calls
            (``session.intra_op.allow_spinning``); None keeps onnxruntime's default
            (they spin). Defaults to None.
    """

    format = "onnx"

    def __init__(self, path, num_threads=None, spinning=None):
        try:
            import onnxruntime
        except ImportError as exc:
            raise MissingDependencyError(
                "Running .onnx files needs onnxruntime; `pip install onnxruntime`.") from exc
        if not os.path.isfile(path):
            raise ArtifactError(f"ONNX file {path!r} does not exist.")
        options = onnxruntime.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        if spinning is not None:
            options.add_session_config_entry("session.intra_op.allow_spinning",
                                             "1" if spinning else "0")
        try:
            self._session = onnxruntime.InferenceSession(
                path, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own pybind types
            raise ArtifactError(
                f"{path!r} is not a valid ONNX model ({str(exc).splitlines()[0]}). Re-export it "
                "with tfdeploy.export.onnx.") from exc
        self.path = path
        self.num_threads = num_threads
        self.spinning = spinning
        self._inputs = self._session.get_inputs()
        meta = self._session.get_modelmeta().custom_metadata_map
        self.metadata = dict(meta)

    @property
    def inputs(self):
        return [(i.name, tuple(d if isinstance(d, int) else -1 for d in i.shape),
                 _NP.get(i.type, i.type)) for i in self._inputs]

    @property
    def outputs(self):
        return [(o.name, tuple(d if isinstance(d, int) else -1 for d in o.shape),
                 _NP.get(o.type, o.type)) for o in self._session.get_outputs()]

    def run(self, x):
        """Return ``{output_name: array}``; ``x`` is an array (single input) or a dict."""
        if not isinstance(x, dict):
            if len(self._inputs) != 1:
                raise ArtifactError(
                    f"This model takes inputs {[i.name for i in self._inputs]}; pass a dict.")
            x = {self._inputs[0].name: x}
        feeds = {}
        for spec in self._inputs:
            if spec.name not in x:
                raise ArtifactError(f"Missing input {spec.name!r}; the model takes "
                                    f"{[i.name for i in self._inputs]}.")
            value = check_batch(spec.name, np.asarray(x[spec.name],
                                                      dtype=_NP.get(spec.type, "float32")))
            expected = [d if isinstance(d, int) else None for d in spec.shape]
            if value.ndim != len(expected) or any(
                    e is not None and e != v for e, v in zip(expected[1:], value.shape[1:])):
                raise ArtifactError(
                    f"Input {spec.name!r} has shape {value.shape}, the model expects "
                    f"{tuple(expected)}.")
            feeds[spec.name] = value
        names = [o.name for o in self._session.get_outputs()]
        return dict(zip(names, self._session.run(names, feeds)))

    def predict(self, x):
        """Return the first output for a batch ``x`` as a float array."""
        return next(iter(self.run(x).values())).astype(np.float32)
