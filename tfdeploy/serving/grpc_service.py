"""TF Serving's gRPC services (PredictionService, ModelService) on grpcio.

Uses the request/response messages and service descriptors of
tensorflow-serving-api, so any TF Serving gRPC client works unchanged.
"""

import logging
import time

import grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from tfdeploy.serving import inference
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
    def __init__(self, repository, metrics):
        self.repository, self.metrics = repository, metrics

    def _call(self, api, request, context, fn):
        start, code = time.perf_counter(), "OK"
        name = request.model_spec.name if hasattr(request, "model_spec") else ""
        try:
            return fn(request)
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
            model = name if name in self.repository.model_names else ""
            self.metrics.request_done(model, api, "GRPC", code, time.perf_counter() - start)


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

    def _predict(self, request):
        name, version, label = _spec(request.model_spec)
        servable = self.repository.get(name, version, label)
        inputs = {k: inference.tensor_to_ndarray(k, v) for k, v in request.inputs.items()}
        key, outputs = servable.run(request.model_spec.signature_name, inputs,
                                    list(request.output_filter) or None)
        response = predict_pb2.PredictResponse()
        _fill_spec(response.model_spec, name, servable.version, key)
        for k, v in outputs.items():
            response.outputs[k].CopyFrom(inference.ndarray_to_tensor(v))
        return response

    def _classify(self, request):
        name, version, label = _spec(request.model_spec)
        servable = self.repository.get(name, version, label)
        key, results = inference.classify(servable, request.model_spec.signature_name,
                                          inference.serialized_examples(request.input))
        response = classification_pb2.ClassificationResponse()
        _fill_spec(response.model_spec, name, servable.version, key)
        for row in results:
            c = response.result.classifications.add()
            for lbl, score in row:
                c.classes.add(label=lbl, score=score)
        return response

    def _regress(self, request):
        name, version, label = _spec(request.model_spec)
        servable = self.repository.get(name, version, label)
        key, results = inference.regress(servable, request.model_spec.signature_name,
                                         inference.serialized_examples(request.input))
        response = regression_pb2.RegressionResponse()
        _fill_spec(response.model_spec, name, servable.version, key)
        for value in results:
            response.result.regressions.add(value=value)
        return response

    def _metadata(self, request):
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise invalid(f"Metadata field {field} is not supported")
        name, version, label = _spec(request.model_spec)
        servable = self.repository.get(name, version, label)
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

        from tfdeploy.serving.repository import configs_from_proto

        def reload(req):
            try:
                configs = configs_from_proto(req.config)
                self.repository.reload(configs)
            except ValueError as exc:
                raise invalid(str(exc)) from exc
            response = model_management_pb2.ReloadConfigResponse()
            response.status.error_code = _error_code_value("OK")
            return response
        return self._call("HandleReloadConfigRequest", request, context, reload)

    def _status(self, request):
        name, version, label = _spec(request.model_spec)
        response = get_model_status_pb2.GetModelStatusResponse()
        state_enum = get_model_status_pb2.ModelVersionStatus.State
        for s in self.repository.status(name, version, label):
            out = response.model_version_status.add(version=s.version,
                                                    state=state_enum.Value(s.state))
            out.status.error_code = _error_code_value(s.error_code)
            out.status.error_message = s.error_message
        return response


def _error_code_value(name):
    from tensorflow_serving.apis import status_pb2

    enum = status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type
    value = enum.values_by_name.get(name) or enum.values_by_name["UNKNOWN"]
    return value.number


def make_grpc_server(repository, metrics, host, port, max_message_bytes=64 << 20, workers=16):
    """A grpc.Server with both services bound to ``host:port``; returns ``(server, port)``."""
    from concurrent import futures

    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes),
               ("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(workers, "tfdeploy-grpc"), options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(repository, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(repository, metrics), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"Could not bind the gRPC port {host}:{port} (is it in use?).")
    return server, bound
