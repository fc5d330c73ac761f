"""TF Serving's gRPC services (PredictionService, ModelService) on grpcio, and the Open
Inference Protocol's ``inference.GRPCInferenceService`` (``grpc_v2``) on the same port.

Uses the request/response messages and service descriptors of
tensorflow-serving-api, so any TF Serving gRPC client works unchanged.
"""

import logging
import time

import grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, inference_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc, regression_pb2)

# (the servicer base classes keep the generated method names; registration is _add_service)

from tfdeploy.serving import grpc_v2, inference
from tfdeploy.serving.dataplane import DataPlane
from tfdeploy.serving.status import ServingError, invalid

log = logging.getLogger("tfdeploy.serving")
SIGNATURE_DEF_FIELD = "signature_def"


def _spec(model_spec):
    """``(name, version, label)`` of a ModelSpec."""
    if not model_spec.name:
        raise invalid("Missing ModelSpec name")
    version = model_spec.version.value if model_spec.HasField("version") else None
    return model_spec.name, version, model_spec.version_label or None


def _fill_spec(out, name, version, signature_name=None):
    out.name = name
    out.version.value = version
    if signature_name is not None:
        out.signature_name = signature_name


class _Base:
    def __init__(self, plane, metrics=None, max_tensor_bytes=64 << 20, allowed_roots=None):
        self.plane = plane if isinstance(plane, DataPlane) else DataPlane(plane)
        self.repository = self.plane.repository
        self.metrics = metrics if metrics is not None else self.plane.metrics
        self.max_tensor_bytes, self.allowed_roots = max_tensor_bytes, allowed_roots

    def _call(self, api, request, context, fn):
        name = request.model_spec.name if hasattr(request, "model_spec") else ""
        return self.call(api, name, "GRPC", context, lambda deadline: fn(request, deadline))

    def call(self, api, name, protocol, context, fn):
        """``fn(deadline)`` as one RPC: a ServingError aborts with its code, anything else
        with INTERNAL, and the request is recorded under ``protocol``."""
        start, code = time.perf_counter(), "OK"
        try:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded")
            return fn(None if remaining is None else time.monotonic() + remaining)
        except ServingError as exc:
            code = exc.code
            context.abort(getattr(grpc.StatusCode, exc.code), exc.message)
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, grpc.RpcError) or type(exc).__name__ == "_AbortionError":
                raise
            code = "INTERNAL"
            log.exception("gRPC %s failed", api)
            context.abort(grpc.StatusCode.INTERNAL, f"Internal error: {exc}")
        finally:
            self.plane.record(name, api, protocol, code, time.perf_counter() - start)


class PredictionServicer(_Base, prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService``."""

    def Predict(self, request, context):  # noqa: N802
        return self._call("predict", request, context, self._predict)

    def Classify(self, request, context):  # noqa: N802
        return self._call("classify", request, context, self._classify)

    def Regress(self, request, context):  # noqa: N802
        return self._call("regress", request, context, self._regress)

    def GetModelMetadata(self, request, context):  # noqa: N802
        return self._call("GetModelMetadata", request, context, self._metadata)

    def MultiInference(self, request, context):  # noqa: N802
        return self._call("MultiInference", request, context, self._multi_inference)

    def _predict(self, request, deadline):
        name, version, label = _spec(request.model_spec)
        plane, sig = self.plane, request.model_spec.signature_name
        with plane.model(name, version, label) as servable:
            check = plane.shape_check(servable, sig)
            inputs = {k: inference.tensor_to_ndarray(k, v, self.max_tensor_bytes, check)
                      for k, v in request.inputs.items()}
            key, outputs = plane.infer(servable, sig, inputs, list(request.output_filter) or None,
                                       deadline)
        response = predict_pb2.PredictResponse()
        _fill_spec(response.model_spec, name, servable.version, key)
        for k, v in outputs.items():
            inference.ndarray_to_tensor(v, response.outputs[k])
        return response

    def _classify(self, request, deadline):
        name, version, label = _spec(request.model_spec)
        examples = inference.serialized_examples(request.input)
        with self.plane.model(name, version, label) as servable:
            key, results = self.plane.classify(servable, request.model_spec.signature_name,
                                               examples, deadline)
        response = classification_pb2.ClassificationResponse()
        _fill_spec(response.model_spec, name, servable.version, key)
        _fill_classifications(response.result, results)
        return response

    def _regress(self, request, deadline):
        name, version, label = _spec(request.model_spec)
        examples = inference.serialized_examples(request.input)
        with self.plane.model(name, version, label) as servable:
            key, results = self.plane.regress(servable, request.model_spec.signature_name,
                                              examples, deadline)
        response = regression_pb2.RegressionResponse()
        _fill_spec(response.model_spec, name, servable.version, key)
        for value in results:
            response.result.regressions.add(value=value)
        return response

    def _multi_inference(self, request, deadline):
        tasks = [(t.model_spec.name, t.model_spec.signature_name, t.method_name)
                 for t in request.tasks]
        inference.check_multi_inference(tasks)
        _, version, label = _spec(request.tasks[0].model_spec)
        examples = inference.serialized_examples(request.input)
        served, results = self.plane.multi_inference(tasks, examples, version, label, deadline)
        response = inference_pb2.MultiInferenceResponse()
        for (method, key, rows), task in zip(results, request.tasks):
            out = response.results.add()
            if method == inference.CLASSIFY_METHOD:
                _fill_classifications(out.classification_result, rows)
            else:
                for value in rows:
                    out.regression_result.regressions.add(value=value)
            _fill_spec(out.model_spec, task.model_spec.name, served, key)
        return response

    def _metadata(self, request, deadline):
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise invalid(f"Metadata field {field} is not supported")
        name, version, label = _spec(request.model_spec)
        servable = self.plane.metadata(name, version, label)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for k, v in servable.signature_defs.items():
            sig_map.signature_def[k].CopyFrom(v)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _fill_spec(response.model_spec, name, servable.version)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(sig_map)
        return response


class ModelServicer(_Base, model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService`` (GetModelStatus)."""

    def GetModelStatus(self, request, context):  # noqa: N802
        return self._call("GetModelStatus", request, context, self._status)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        from tensorflow_serving.apis import model_management_pb2

        from tfdeploy.serving.repository import check_allowed_roots, configs_from_proto

        def reload(req, deadline):
            try:
                configs = configs_from_proto(req.config)
            except ValueError as exc:
                raise invalid(str(exc)) from exc
            check_allowed_roots(configs, self.allowed_roots)
            try:
                self.repository.reload(configs)
            except ServingError:
                raise
            except ValueError as exc:
                raise invalid(str(exc)) from exc
            response = model_management_pb2.ReloadConfigResponse()
            response.status.error_code = _error_code_value("OK")
            return response
        return self._call("HandleReloadConfigRequest", request, context, reload)

    def _status(self, request, deadline):
        name, version, label = _spec(request.model_spec)
        response = get_model_status_pb2.GetModelStatusResponse()
        state_enum = get_model_status_pb2.ModelVersionStatus.State
        for s in self.plane.status(name, version, label):
            out = response.model_version_status.add(version=s.version,
                                                    state=state_enum.Value(s.state))
            out.status.error_code = _error_code_value(s.error_code)
            out.status.error_message = s.error_message
        return response


class _Unparsable:
    """Stands for request bytes that are not a valid message (grpcio would answer INTERNAL)."""

    def __init__(self, error):
        self.error = error


def _safe_parser(message_class):
    def parse(data):
        try:
            return message_class.FromString(data)
        except Exception as exc:  # noqa: BLE001  (DecodeError, invalid UTF-8, ...)
            return _Unparsable(exc)
    return parse


def _add_service(server, service_name, servicer, methods):
    """Register ``servicer`` like the generated ``add_*_to_server``, but a request that
    cannot be parsed is INVALID_ARGUMENT (the client's fault), not grpcio's INTERNAL."""
    handlers = {}
    for method, (request_class, response_class) in methods.items():
        behavior = getattr(servicer, method)

        def guarded(request, context, behavior=behavior, request_class=request_class):
            if isinstance(request, _Unparsable):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"Could not parse the request as "
                              f"{request_class.DESCRIPTOR.full_name}: {request.error}")
            return behavior(request, context)
        handlers[method] = grpc.unary_unary_rpc_method_handler(
            guarded, request_deserializer=_safe_parser(request_class),
            response_serializer=response_class.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_name,
                                                                          handlers),))


def _fill_classifications(result, rows):
    for row in rows:
        c = result.classifications.add()
        for lbl, score in row:
            c.classes.add(label=lbl, score=score)


def _error_code_value(name):
    from tensorflow_serving.apis import status_pb2

    enum = status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type
    value = enum.values_by_name.get(name) or enum.values_by_name["UNKNOWN"]
    return value.number


def make_grpc_server(repository, metrics, host, port, max_message_bytes=64 << 20, workers=16,
                     maximum_concurrent_rpcs=None, allowed_roots=None):
    """A grpc.Server with both services bound to ``host:port``; returns ``(server, port)``.

    ``workers`` threads run RPCs; ``maximum_concurrent_rpcs`` (default ``4 * workers``)
    bounds the RPCs accepted at once, the rest are refused with RESOURCE_EXHAUSTED.
    A tensor's declared size is checked against ``max_message_bytes`` before it is
    decoded.
    """
    from concurrent import futures

    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes),
               ("grpc.so_reuseport", 0)]
    from tensorflow_serving.apis import model_management_pb2

    server = grpc.server(futures.ThreadPoolExecutor(workers, "tfdeploy-grpc"), options=options,
                         maximum_concurrent_rpcs=maximum_concurrent_rpcs or 4 * workers)
    _add_service(server, "tensorflow.serving.PredictionService",
                 PredictionServicer(repository, metrics, max_message_bytes), {
                     "Classify": (classification_pb2.ClassificationRequest,
                                  classification_pb2.ClassificationResponse),
                     "Regress": (regression_pb2.RegressionRequest,
                                 regression_pb2.RegressionResponse),
                     "Predict": (predict_pb2.PredictRequest, predict_pb2.PredictResponse),
                     "MultiInference": (inference_pb2.MultiInferenceRequest,
                                        inference_pb2.MultiInferenceResponse),
                     "GetModelMetadata": (get_model_metadata_pb2.GetModelMetadataRequest,
                                          get_model_metadata_pb2.GetModelMetadataResponse)})
    _add_service(server, "tensorflow.serving.ModelService",
                 ModelServicer(repository, metrics, max_message_bytes, allowed_roots), {
                     "GetModelStatus": (get_model_status_pb2.GetModelStatusRequest,
                                        get_model_status_pb2.GetModelStatusResponse),
                     "HandleReloadConfigRequest": (model_management_pb2.ReloadConfigRequest,
                                                   model_management_pb2.ReloadConfigResponse)})
    grpc_v2.add_inference_service(
        server, _Base(repository, metrics, max_message_bytes), _add_service)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:   # grpcio >= 1.6x raises instead of returning 0
        bound = 0
    if bound == 0:
        raise OSError(f"Could not bind the gRPC port {host}:{port} (is it in use?).")
    return server, bound
