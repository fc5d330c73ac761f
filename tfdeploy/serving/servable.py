"""One loaded model version: its SignatureDefs and the functions that run them."""

import itertools
import logging
import os
import re
import threading
import time

import numpy as np

from tfdeploy.errors import ArtifactError
from tfdeploy.serving.status import ServingError, deadline_exceeded, invalid
from tfdeploy.serving.validation import SignatureValidator, dtype_name, shape_text

log = logging.getLogger("tfdeploy.serving")

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


def read_meta_graph(path):
    """Return the MetaGraphDef tagged ``serve`` in ``path/saved_model.pb``.

    Raises:
        ServingError: NOT_FOUND when there is no saved_model.pb or no ``serve`` graph.
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
            return meta
    raise ServingError("NOT_FOUND", f"Could not find meta graph def matching supplied tags: "
                                    f"{{ {SERVE_TAG} }}. Available tags: {tagsets}")


def read_signature_defs(path):
    """Return the SignatureDef map of the MetaGraph tagged ``serve`` in ``path/saved_model.pb``.

    Raises:
        ServingError: NOT_FOUND when there is no saved_model.pb or no ``serve`` graph.
    """
    return read_meta_graph(path).signature_def


# Kernels whose oneDNN versions read dimensions by layout (``tensor_format.h``) and abort the
# process when given a tensor of another rank, instead of failing the op.
ABORT_PRONE_OPS = frozenset({
    "Conv2D", "Conv3D", "DepthwiseConv2dNative", "Conv2DBackpropInput",
    "Conv3DBackpropInputV2", "DepthwiseConv2dNativeBackpropInput", "_FusedConv2D",
    "_FusedConv3D", "_FusedDepthwiseConv2dNative", "MaxPool", "MaxPoolV2", "MaxPool3D",
    "AvgPool", "AvgPool3D", "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3",
    "_FusedBatchNormEx", "LRN"})


def graph_ops(meta):
    """Every op type in a MetaGraph, function library included."""
    ops = {n.op for n in meta.graph_def.node}
    for fn in meta.graph_def.library.function:
        ops.update(n.op for n in fn.node_def)
    return ops


def needs_isolation(meta, validators):
    """True when validation cannot keep every request away from an abort: some signature
    input is not fully checked (a TF1 graph, an unknown rank) and the graph holds a kernel
    that aborts on a wrong rank under oneDNN."""
    if all(v.fully_checked for v in validators.values()):
        return False
    return bool(graph_ops(meta) & ABORT_PRONE_OPS)


def is_tf2(meta):
    """True for a SavedModel written by ``tf.saved_model.save`` (its signatures are functions
    traced for their declared shapes); False for a TF1 ``SavedModelBuilder`` graph."""
    return len(meta.object_graph_def.nodes) > 0


def tf_error_code(exc):
    """The canonical code name of a ``tf.errors.OpError`` (UNKNOWN otherwise)."""
    code = getattr(exc, "error_code", 2)
    return _CODE_NAMES[code] if isinstance(code, int) and 0 < code < len(_CODE_NAMES) else "UNKNOWN"


# Codes a model's own ops raise when they refuse a request's values or sizes (the input
# passed validation, so only its values or free dimensions can be at fault); oneDNN's
# kernels answer ABORTED ("could not create a descriptor") for sizes they cannot take.
_CLIENT_CODES = {"INVALID_ARGUMENT": "INVALID_ARGUMENT", "OUT_OF_RANGE": "OUT_OF_RANGE",
                 "FAILED_PRECONDITION": "INVALID_ARGUMENT", "ABORTED": "INVALID_ARGUMENT",
                 "RESOURCE_EXHAUSTED": "RESOURCE_EXHAUSTED"}
_PASSED_THROUGH = {"DEADLINE_EXCEEDED", "CANCELLED", "UNAVAILABLE"}
_NODE_REFS = re.compile(r"\s*\[\[\{\{node [^}]*\}\}[^\]]*\]\]|\s*\[Op:[^\]]*\]|,? in file \S+:\d+"
                        r"|\s*\{\{node [^}]*\}\}|\s*\(defined at [^)]*\)")
_ONEDNN_PREFIX = re.compile(r"Compute received an exception:\s*(Status: -?\d+, message: )?")
_incidents = itertools.count(1)


def core_message(message):
    """The part of a TF error message that speaks about the request: no "Graph execution
    error", no "Detected at node ..." with its stack, no node names, op names or source
    files."""
    out, in_stack = [], False
    for line in str(message).splitlines():
        text = line.strip()
        if not text or text.startswith("Graph execution error"):
            continue
        if text.startswith("Detected at node") or text.startswith("Detected unsupported"):
            in_stack = True
            continue
        if in_stack and (line.startswith(" ") or text == "<stack traces unavailable>"):
            continue
        in_stack = False
        out.append(text)
    text = _ONEDNN_PREFIX.sub("", _NODE_REFS.sub("", " ".join(out))).strip()
    return (text[:800] + " ...") if len(text) > 800 else text


def model_error(code, message, feeds, what="The model"):
    """The ServingError to answer when a model run failed with ``code``/``message``.

    Codes the model's ops raise for a request's values or sizes stay 4xx, with the core of
    TF's message and the shapes received; anything else is the server's fault: INTERNAL
    with no detail for the client, the full message in the log under an incident number.
    """
    if code in _CLIENT_CODES:
        shapes = ", ".join(f"{k}: shape {shape_text(np.shape(v))} {dtype_name(v)}"
                           for k, v in sorted(feeds.items()))
        core = core_message(message) or "no detail given"
        if code == "RESOURCE_EXHAUSTED":
            return ServingError(code, f"{what} ran out of resources on this request ({shapes}): "
                                      f"{core}. Send fewer examples per request.")
        return ServingError(_CLIENT_CODES[code],
                            f"{what} could not run on this input ({shapes}): {core}. Check the "
                            "input's values and free (-1) dimensions against the signature.")
    if code in _PASSED_THROUGH:
        return ServingError(code, f"{what} did not finish: {core_message(message)}")
    incident = next(_incidents)
    log.error("%s failed with %s (incident %d): %s", what, code, incident, message)
    return ServingError("INTERNAL", f"{what} failed while running this request ({code}); this "
                                    f"is a server-side error, logged as incident {incident}.")


class Servable:
    """A SavedModel version loaded with ``tf.saved_model.load`` (``serve`` tag).

    Args:
        name: model name.
        version: integer version.
        path: the version directory.
    """

    def __init__(self, name, version, path, method_name_check=False, isolation="none",
                 isolation_env=None, isolation_call_timeout=None):
        self.runtime = None            # a faster runtime for serving_default (select_runtime)
        self.runtime_report = {"policy": "tensorflow", "serving": {
            "runtime": "tensorflow", "artifact": "saved_model"}, "candidates": []}
        import tensorflow as tf

        self.name, self.version, self.path = name, int(version), path
        self.method_name_check = method_name_check
        self._refs, self._retired = 0, False
        self._ref_lock = threading.Lock()
        self._drained = threading.Event()
        meta = read_meta_graph(path)
        self.signature_defs = meta.signature_def
        self.tf2 = is_tf2(meta)
        self.validators = {k: SignatureValidator(v, strict_shapes=self.tf2)
                           for k, v in self.signature_defs.items()}
        # each signature's output aliases, in order (a protobuf map is slow to walk per request)
        self._output_names = {k: list(v.outputs) for k, v in self.signature_defs.items()}
        self.validate = True   # False only to measure what validation costs (benchmarks)
        self._tf = tf
        self.isolated = isolation == "process" or (
            isolation == "auto" and needs_isolation(meta, self.validators))
        self._isolated = self._loaded = None
        if self.isolated:   # the model runs in worker processes; a kernel abort ends only one
            from tfdeploy.serving.isolation import IsolatedModel

            self._isolated = IsolatedModel(path, tags=(SERVE_TAG,), env=isolation_env,
                                           call_timeout=isolation_call_timeout,
                                           name=f"{name} version {self.version}")
            self._functions = dict.fromkeys(self._isolated.signature_keys)
            log.info("Model %s version %d runs in a worker process (--model_isolation=%s)",
                     name, self.version, isolation)
        else:
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

    def close(self):
        """End the worker processes of an isolated model and the chosen runtime (after
        unloading)."""
        if self._isolated is not None:
            self._isolated.close()
        if self.runtime is not None:
            self.runtime.close()

    # -- runtimes -----------------------------------------------------------------------------
    def select_runtime(self, policy, records, threads=None):
        """Serve ``serving_default`` on the runtime ``policy`` names ("tensorflow", "auto",
        "litert", "onnxruntime", "openvino"; see ``selection``), verified and timed on
        ``records`` for "auto"; the choice and its figures go to ``runtime_report``."""
        from tfdeploy.serving import selection

        if policy == "tensorflow" or self._isolated is not None:
            return self.runtime_report
        self.runtime, self.runtime_report = selection.choose(self, policy, records, threads)
        return self.runtime_report

    @property
    def tensorflow_threads(self):
        """The threads TensorFlow gives one call of the SavedModel: its intra-op pool (0 in
        tf.config: every core this process may use)."""
        from tfdeploy.serving.runtimes.base import default_threads

        return self._tf.config.threading.get_intra_op_parallelism_threads() or default_threads()

    def tensorflow_call(self, key, feeds):
        """The SavedModel's own answer (no metrics): the reference artifacts are checked
        against."""
        tf = self._tf
        result = self._functions[key](**{k: tf.constant(v) for k, v in feeds.items()})
        return {k: v.numpy() for k, v in result.items()}

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
    def validator(self, signature_name):
        """The SignatureValidator of a signature ("" means serving_default)."""
        key, _ = self.signature(signature_name)
        return self.validators[key]

    def run(self, signature_name, inputs, output_filter=None, deadline=None):
        """Run a signature on ``{input_key: ndarray}``; return ``(key, {output_key: ndarray})``.

        Inputs are checked against the SignatureDef first (``validation``: names, dtypes,
        and for TF2 SavedModels ranks and static dimensions), so a bad request is an
        INVALID_ARGUMENT before the model sees it. ``deadline`` (``time.monotonic()``): work
        not started by then is dropped with DEADLINE_EXCEEDED (a model run already started
        finishes).
        """
        key, sig = self.signature(signature_name)
        names = self._output_names[key]
        wanted = list(output_filter) if output_filter else names
        if self.validate:
            feeds = self.validators[key].check(inputs)
        else:
            feeds = {k: np.asarray(v) for k, v in inputs.items()}
        if output_filter:
            for alias in wanted:
                if alias not in sig.outputs:
                    raise invalid(f"output tensor alias not found in signature: {alias} Outputs "
                                  f"expected to be in the set {{{','.join(sorted(sig.outputs))}}}.")
            if len(set(wanted)) != len(wanted):
                raise invalid("duplicate output tensor alias in output_filter")
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
        start = time.perf_counter()
        runtime = self.runtime
        try:
            if runtime is not None and key in runtime.signature_keys:
                result = runtime.call(key, feeds)
            elif self._isolated is not None:
                result = self._isolated.call(key, feeds)
            else:
                result = self._functions[key](**{k: tf.constant(v) for k, v in feeds.items()})
                result = {k: v.numpy() for k, v in result.items()}
        except ServingError as exc:   # (from a worker process: its TF error, or its end)
            raise model_error(exc.code, exc.message, feeds) from exc
        except tf.errors.OpError as exc:
            raise model_error(tf_error_code(exc), exc.message, feeds) from exc
        except ArtifactError as exc:   # (a runtime's file went bad after it loaded)
            raise model_error("INTERNAL", str(exc), feeds) from exc
        except (TypeError, ValueError) as exc:
            raise model_error("INVALID_ARGUMENT", str(exc), feeds) from exc
        except RuntimeError as exc:    # (LiteRT / ONNX Runtime / OpenVINO failures)
            raise model_error("INTERNAL", str(exc), feeds) from exc
        seconds = time.perf_counter() - start
        recent = self.recent_call_seconds
        self.recent_call_seconds = seconds if recent == 0 else 0.8 * recent + 0.2 * seconds
        if self.on_run is not None:
            self.on_run(seconds)
        return result
