"""One loaded model version: its SignatureDefs and the functions that run them."""

import os
import threading
import time

import numpy as np

from tfdeploy.serving.status import ServingError, deadline_exceeded, invalid

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
SERVE_TAG = "serve"

# tensorflow::error::Code numbers -> canonical names (the same order as grpc.StatusCode).
_CODE_NAMES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
               "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
               "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
               "UNAUTHENTICATED"]


def read_signature_defs(path):
    """Return the SignatureDef map of the MetaGraph tagged ``serve`` in ``path/saved_model.pb``.

    Raises:
        ServingError: FAILED_PRECONDITION when there is no saved_model.pb or no ``serve`` graph.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    pb = os.path.join(path, "saved_model.pb")
    if not os.path.isfile(pb):
        raise ServingError("NOT_FOUND", f"Could not find SavedModel .pb at supplied export "
                                        f"directory path: {path}")
    saved = saved_model_pb2.SavedModel()
    with open(pb, "rb") as f:
        saved.ParseFromString(f.read())
    tagsets = []
    for meta in saved.meta_graphs:
        tagsets.append(sorted(meta.meta_info_def.tags))
        if SERVE_TAG in meta.meta_info_def.tags:
            return meta.signature_def
    raise ServingError("NOT_FOUND", f"Could not find meta graph def matching supplied tags: "
                                    f"{{ {SERVE_TAG} }}. Available tags: {tagsets}")


def tf_error_code(exc):
    """The canonical code name of a ``tf.errors.OpError`` (UNKNOWN otherwise)."""
    code = getattr(exc, "error_code", 2)
    return _CODE_NAMES[code] if isinstance(code, int) and 0 < code < len(_CODE_NAMES) else "UNKNOWN"


class Servable:
    """A SavedModel version loaded with ``tf.saved_model.load`` (``serve`` tag).

    Args:
        name: model name.
        version: integer version.
        path: the version directory.
    """

    def __init__(self, name, version, path, method_name_check=False):
        import tensorflow as tf

        self.name, self.version, self.path = name, int(version), path
        self.method_name_check = method_name_check
        self._refs, self._retired = 0, False
        self._ref_lock = threading.Lock()
        self._drained = threading.Event()
        self.signature_defs = read_signature_defs(path)
        self._tf = tf
        self._loaded = tf.saved_model.load(path, tags=[SERVE_TAG])
        self._functions = dict(self._loaded.signatures)
        self._input_dtypes = {}   # signature key -> {input: tf.DType}
        self.batcher = None  # set by the repository when batching is enabled
        self.on_run = None   # optional f(seconds) called after every model run (metrics)
        self.recent_call_seconds = 0.0   # moving average of model-call times

    # -- reference counting (see ModelRepository.serve) ---------------------------------------
    def acquire(self):
        """Take a reference for one request; False once the version is being unloaded."""
        with self._ref_lock:
            if self._retired:
                return False
            self._refs += 1
            return True

    def release(self):
        with self._ref_lock:
            self._refs -= 1
            if self._retired and self._refs == 0:
                self._drained.set()

    def retire(self):
        """No new references from now on; ``wait_drained`` returns once the last is gone."""
        with self._ref_lock:
            self._retired = True
            if self._refs == 0:
                self._drained.set()

    def wait_drained(self, timeout=None):
        return self._drained.wait(timeout)

    def release_model(self):
        """Drop the loaded TF objects (after unloading) so they can be collected."""
        self._loaded = None
        self._functions = {}

    # -- signatures -------------------------------------------------------------------------
    def signature(self, signature_name):
        """Return ``(key, SignatureDef)``; "" means serving_default."""
        key = signature_name or DEFAULT_SIGNATURE
        if key not in self.signature_defs or key not in self._functions:
            raise ServingError(
                "FAILED_PRECONDITION",
                f'Serving signature name: "{key}" not found in signature def')
        return key, self.signature_defs[key]

    def input_dtypes(self, signature_name):
        """``{input_key: tf.DType}`` of a signature (computed once per signature)."""
        key, sig = self.signature(signature_name)
        dtypes = self._input_dtypes.get(key)
        if dtypes is None:
            dtypes = self._input_dtypes[key] = {
                k: self._tf.dtypes.as_dtype(v.dtype) for k, v in sig.inputs.items()}
        return dtypes

    # -- running ----------------------------------------------------------------------------
    def run(self, signature_name, inputs, output_filter=None, deadline=None):
        """Run a signature on ``{input_key: ndarray}``; return ``(key, {output_key: ndarray})``.

        Inputs are checked against the SignatureDef (names and dtypes) first; shapes are
        checked by the model's own function, so a bad request is an INVALID_ARGUMENT.
        ``deadline`` (``time.monotonic()``): work not started by then is dropped with
        DEADLINE_EXCEEDED (a model run already started finishes).
        """
        key, sig = self.signature(signature_name)
        expected, sent = set(sig.inputs), set(inputs)
        if expected != sent:
            raise invalid(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")
        wanted = list(output_filter or sig.outputs)
        for alias in wanted:
            if alias not in sig.outputs:
                raise invalid(f"output tensor alias not found in signature: {alias} Outputs "
                              f"expected to be in the set {{{','.join(sorted(sig.outputs))}}}.")
        if len(set(wanted)) != len(wanted):
            raise invalid("duplicate output tensor alias in output_filter")
        dtypes = self.input_dtypes(key)
        feeds = {}
        for name in sig.inputs:
            feeds[name] = self._check_input(name, dtypes[name], inputs[name])
        if deadline is not None and time.monotonic() >= deadline:
            raise deadline_exceeded()
        if self.batcher is not None:
            outputs = self.batcher.run(key, feeds, deadline)
        else:
            outputs = self.call(key, feeds)
        return key, {k: outputs[k] for k in wanted}

    def call(self, key, feeds):
        """Call signature ``key`` on already checked numpy feeds; ``{output: ndarray}``."""
        tf = self._tf
        fn = self._functions[key]
        start = time.perf_counter()
        try:
            result = fn(**{k: tf.constant(v) for k, v in feeds.items()})
            result = {k: v.numpy() for k, v in result.items()}
        except tf.errors.OpError as exc:
            raise ServingError(tf_error_code(exc), exc.message) from exc
        except (TypeError, ValueError) as exc:
            raise invalid(str(exc)) from exc
        seconds = time.perf_counter() - start
        recent = self.recent_call_seconds
        self.recent_call_seconds = seconds if recent == 0 else 0.8 * recent + 0.2 * seconds
        if self.on_run is not None:
            self.on_run(seconds)
        return result

    def _check_input(self, name, dtype, value):
        tf = self._tf
        array = np.asarray(value)
        if dtype == tf.string:
            if array.dtype.kind not in "OSU":
                raise invalid(f"Expects arg '{name}' to be string but {array.dtype} is provided")
            array = array.astype(object)
        elif array.dtype != np.dtype(dtype.as_numpy_dtype):
            # TF Serving does not convert: a client must send the signature's dtype.
            got = "string" if array.dtype.kind in "OSU" else tf.dtypes.as_dtype(array.dtype).name
            raise invalid(f"Expects arg '{name}' to be {dtype.name} but {got} is provided")
        # Shapes are the graph's to check, as in TF Serving (its Session::Run feeds any shape:
        # a signature whose TensorInfo says [-1, 1] runs on [2, 2] when its ops allow it, and
        # an op that cannot take the shape fails with INVALID_ARGUMENT, a 400).
        return array
