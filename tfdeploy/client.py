"""A small client for TF Serving's REST and gRPC APIs (works with tfdeploy serve or the real one).

    rest = RestClient("localhost:8501")
    rest.predict("digits", instances=images.tolist())        # -> {"predictions": [...]}
    grpc_client = GrpcClient("localhost:8500")
    grpc_client.predict("digits", {"images": images})         # -> {"probabilities": ndarray, ...}

Both raise ``ServingError`` (with ``code`` and ``http_status``) when the server answers an error.
"""

import base64
import json
import urllib.error
import urllib.request

import numpy as np

from tfdeploy.serving.status import HTTP_STATUS, ServingError

_BY_HTTP = {}
for _code, _http in HTTP_STATUS.items():
    _BY_HTTP.setdefault(_http, _code)


def b64(data):
    """``{"b64": ...}`` for binary values in REST requests."""
    return {"b64": base64.b64encode(bytes(data)).decode("ascii")}


def _path(name, version=None, label=None):
    if version is not None and label is not None:
        raise ValueError("Pass version or label, not both.")
    path = f"/v1/models/{name}"
    if version is not None:
        path += f"/versions/{int(version)}"
    elif label is not None:
        path += f"/labels/{label}"
    return path


class RestClient:
    """TF Serving REST client on urllib (JSON in, JSON out).

    Args:
        address: "host:port" (scheme optional). Defaults to "localhost:8501".
        timeout: seconds per request. Defaults to 30.
    """

    def __init__(self, address="localhost:8501", timeout=30.0):
        self.base = address if "://" in address else f"http://{address}"
        self.timeout = timeout

    def request(self, method, path, body=None):
        """Send one request; return the decoded JSON, raise ServingError on an error answer."""
        data = json.dumps(body).encode("utf-8") if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw).get("error", raw.decode("utf-8", "replace"))
            except (ValueError, AttributeError):
                message = raw.decode("utf-8", "replace")
            raise ServingError(_BY_HTTP.get(exc.code, "UNKNOWN"), message) from None

    def status(self, name, version=None, label=None):
        return self.request("GET", _path(name, version, label))

    def metadata(self, name, version=None, label=None):
        return self.request("GET", _path(name, version, label) + "/metadata")

    def predict(self, name, instances=None, inputs=None, signature_name=None, version=None,
                label=None):
        """Row (``instances``) or columnar (``inputs``) predict; numpy arrays are accepted."""
        if (instances is None) == (inputs is None):
            raise ValueError("Pass exactly one of instances= (row format) or inputs= (columnar).")
        body = {"instances": _jsonable(instances)} if instances is not None \
            else {"inputs": _jsonable(inputs)}
        if signature_name:
            body["signature_name"] = signature_name
        return self.request("POST", _path(name, version, label) + ":predict", body)

    def _examples(self, api, name, examples, context, signature_name, version, label):
        body = {"examples": _jsonable(examples)}
        if context is not None:
            body["context"] = _jsonable(context)
        if signature_name:
            body["signature_name"] = signature_name
        return self.request("POST", _path(name, version, label) + f":{api}", body)

    def classify(self, name, examples, context=None, signature_name=None, version=None,
                 label=None):
        """``examples``: list of ``{feature: value or list}``; returns ``{"results": ...}``."""
        return self._examples("classify", name, examples, context, signature_name, version, label)

    def regress(self, name, examples, context=None, signature_name=None, version=None,
                label=None):
        return self._examples("regress", name, examples, context, signature_name, version, label)


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return b64(value)
    return value


class GrpcClient:
    """TF Serving gRPC client on the tensorflow-serving-api stubs.

    Args:
        address: "host:port". Defaults to "localhost:8500".
        timeout: seconds per call. Defaults to 30.
    """

    def __init__(self, address="localhost:8500", timeout=30.0, max_message_bytes=64 << 20):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self._grpc = grpc
        self.channel = grpc.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)])
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_service = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.timeout = timeout

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _spec(spec, name, version, label, signature_name=None):
        spec.name = name
        if version is not None and label is not None:
            raise ValueError("Pass version or label, not both.")
        if version is not None:
            spec.version.value = int(version)
        if label is not None:
            spec.version_label = label
        if signature_name:
            spec.signature_name = signature_name

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except self._grpc.RpcError as exc:
            code = exc.code().name if exc.code() is not None else "UNKNOWN"
            raise ServingError(code if code in HTTP_STATUS else "UNKNOWN", exc.details()) from None

    def predict(self, name, inputs, signature_name=None, version=None, label=None,
                output_filter=None):
        """``inputs``: ``{name: array}``; returns ``{output: ndarray}``."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, name, version, label, signature_name)
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        request.output_filter.extend(output_filter or [])
        response = self._call(self.prediction.Predict, request)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    @staticmethod
    def _input(request, examples, context):
        import tensorflow as tf

        def example(obj):
            if isinstance(obj, tf.train.Example):
                return obj
            feats = {}
            for k, v in obj.items():
                vals = list(np.ravel(v)) if isinstance(v, (list, tuple, np.ndarray)) else [v]
                if all(isinstance(x, (bytes, str)) for x in vals):
                    feats[k] = tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[x.encode() if isinstance(x, str) else x for x in vals]))
                elif all(isinstance(x, (int, np.integer)) and not isinstance(x, bool)
                         for x in vals):
                    feats[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=vals))
                else:
                    feats[k] = tf.train.Feature(float_list=tf.train.FloatList(value=vals))
            return tf.train.Example(features=tf.train.Features(feature=feats))

        if context is None:
            request.input.example_list.examples.extend(example(e) for e in examples)
        else:
            request.input.example_list_with_context.context.CopyFrom(example(context))
            request.input.example_list_with_context.examples.extend(example(e) for e in examples)

    def classify(self, name, examples, context=None, signature_name=None, version=None,
                 label=None):
        """Returns ``[[(label, score), ...] per example]``."""
        from tensorflow_serving.apis import classification_pb2

        request = classification_pb2.ClassificationRequest()
        self._spec(request.model_spec, name, version, label, signature_name)
        self._input(request, examples, context)
        response = self._call(self.prediction.Classify, request)
        return [[(c.label, c.score) for c in cl.classes]
                for cl in response.result.classifications]

    def regress(self, name, examples, context=None, signature_name=None, version=None,
                label=None):
        """Returns ``[value per example]``."""
        from tensorflow_serving.apis import regression_pb2

        request = regression_pb2.RegressionRequest()
        self._spec(request.model_spec, name, version, label, signature_name)
        self._input(request, examples, context)
        response = self._call(self.prediction.Regress, request)
        return [r.value for r in response.result.regressions]

    def metadata(self, name, version=None, label=None):
        """Returns ``(version, {signature key: SignatureDef})``."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, name, version, label)
        response = self._call(self.prediction.GetModelMetadata, request)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        return response.model_spec.version.value, dict(sig_map.signature_def)

    def status(self, name, version=None, label=None):
        """Returns ``[(version, state name, error code name, message)]``."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, name, version, label)
        response = self._call(self.model_service.GetModelStatus, request)
        states = get_model_status_pb2.ModelVersionStatus.State
        enum = type(response).DESCRIPTOR.fields_by_name["model_version_status"].message_type \
            .fields_by_name["status"].message_type.fields_by_name["error_code"].enum_type
        return [(s.version, states.Name(s.state), enum.values_by_number[s.status.error_code].name,
                 s.status.error_message) for s in response.model_version_status]


__all__ = ["RestClient", "GrpcClient", "b64"]
