"""The Open Inference Protocol's (V2) REST routes in the OpenAPI document (``openapi``).

Schemas follow the protocol's REST spec (KServe's ``rest_predict_v2.yaml``): tensors as
``name``, ``shape``, ``datatype`` and ``data``; ``{"error": "..."}`` for errors. An infer
answer with binary outputs (Triton's binary tensor data extension) is
``application/octet-stream``: the JSON header, then the outputs' bytes.
"""

from tfdeploy.serving import v2_tensors

_JSON = "application/json"
DATATYPES = sorted(v2_tensors.NUMPY)


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


_PARAMETERS = {"type": "object", "description": "Protocol parameters (a value is a string, "
                                                "number or boolean)."}

SCHEMAS = {
    "V2ServerLive": {"type": "object", "required": ["live"],
                     "properties": {"live": {"type": "boolean"}}},
    "V2ServerReady": {"type": "object", "required": ["ready"],
                      "properties": {"ready": {"type": "boolean"}}},
    "V2ModelReady": {"type": "object", "required": ["name", "ready"],
                     "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}},
    "V2ServerMetadata": {
        "type": "object", "required": ["name", "version", "extensions"],
        "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                       "extensions": {"type": "array", "items": {"type": "string"}}}},
    "V2TensorMetadata": {
        "type": "object", "required": ["name", "datatype", "shape"],
        "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                       "shape": {"type": "array", "items": {"type": "integer"},
                                 "description": "-1 marks a dimension of any size."}}},
    "V2ModelMetadata": {
        "type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
        "properties": {"name": {"type": "string"},
                       "versions": {"type": "array", "items": {"type": "string"}},
                       "platform": {"type": "string"},
                       "inputs": {"type": "array", "items": _ref("V2TensorMetadata")},
                       "outputs": {"type": "array", "items": _ref("V2TensorMetadata")}}},
    "V2InputTensor": {
        "type": "object", "required": ["name", "shape", "datatype"],
        "description": "An input: 'data' holds its elements (flat or nested, row-major), or "
                       "parameters.binary_data_size its byte count in the binary part of the "
                       "body (Inference-Header-Content-Length).",
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string", "enum": DATATYPES},
            "parameters": _PARAMETERS,
            "data": _ref("Tensor"),
        }},
    "V2RequestedOutput": {
        "type": "object", "required": ["name"],
        "properties": {"name": {"type": "string"},
                       "parameters": {"type": "object", "properties": {
                           "binary_data": {"type": "boolean"}}}}},
    "V2InferRequest": {
        "type": "object", "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object", "properties": {
                "signature_name": {"type": "string",
                                   "description": "Defaults to 'serving_default'."},
                "binary_data_output": {"type": "boolean"}}},
            "inputs": {"type": "array", "minItems": 1, "items": _ref("V2InputTensor")},
            "outputs": {"type": "array", "items": _ref("V2RequestedOutput"),
                        "description": "The outputs to answer (default: all)."},
        }},
    "V2OutputTensor": {
        "type": "object", "required": ["name", "shape", "datatype"],
        "properties": {"name": {"type": "string"},
                       "shape": {"type": "array", "items": {"type": "integer"}},
                       "datatype": {"type": "string"},
                       "parameters": {"type": "object", "properties": {
                           "binary_data_size": {"type": "integer"}}},
                       "data": {"type": "array", "items": {"anyOf": [
                           {"type": "number", "nullable": True}, {"type": "string"},
                           {"type": "boolean"}]}}}},
    "V2InferResponse": {
        "type": "object", "required": ["model_name", "outputs"],
        "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"},
                       "id": {"type": "string"}, "parameters": _PARAMETERS,
                       "outputs": {"type": "array", "items": _ref("V2OutputTensor")}}},
}

# Request examples fit the tfdeploy test model tf2 (y = 0.5 * x + 2).
_INFER_EXAMPLE = {"inputs": [{"name": "x", "shape": [3], "datatype": "FP32",
                              "data": [1.0, 2.0, 5.0]}]}


def paths(model_names, responses, params):
    """The V2 path items; ``responses(schema, description)`` and ``params(model_names,
    selector, labels)`` are the document's (the same errors and ``name`` parameter)."""
    out = {
        "/v2": {"get": {"operationId": "v2ServerMetadata", "summary": "Server metadata.",
                        "tags": ["v2"],
                        "responses": responses("V2ServerMetadata", "Name, version, "
                                                                   "extensions.")}},
        "/v2/health/live": {"get": {"operationId": "v2ServerLive", "tags": ["v2"],
                                    "summary": "Liveness (Kubernetes livenessProbe).",
                                    "responses": responses("V2ServerLive", "Alive.")}},
        "/v2/health/ready": {"get": {
            "operationId": "v2ServerReady", "tags": ["v2"],
            "summary": "Readiness: every served model has an available version "
                       "(Kubernetes readinessProbe; 400 while loading, as the Open "
                       "Inference Protocol's 4xx for not ready and Triton's 400).",
            "responses": responses("V2ServerReady", "Ready.")}},
    }
    for suffix, selector in (("", None), ("/versions/{version}", "version")):
        p = params(model_names, selector, ())
        tail = f" ({selector} given)" if selector else " (latest version)"
        title = (selector or "").title()
        out[f"/v2/models/{{name}}{suffix}"] = {"get": {
            "operationId": f"v2ModelMetadata{title}", "tags": ["v2"], "parameters": p,
            "summary": "Model metadata from its signature" + tail + ".",
            "responses": responses("V2ModelMetadata", "Inputs and outputs.")}}
        out[f"/v2/models/{{name}}{suffix}/ready"] = {"get": {
            "operationId": f"v2ModelReady{title}", "tags": ["v2"], "parameters": p,
            "summary": "Model readiness" + tail + ".",
            "responses": responses("V2ModelReady", "Ready.")}}
        infer = responses("V2InferResponse", "The outputs; application/octet-stream when "
                                             "some are binary (the JSON header is the first "
                                             "Inference-Header-Content-Length bytes).")
        infer["200"]["content"]["application/octet-stream"] = {
            "schema": {"type": "string", "format": "binary"}}
        out[f"/v2/models/{{name}}{suffix}/infer"] = {"post": {
            "operationId": f"v2ModelInfer{title}", "tags": ["v2"], "parameters": p,
            "summary": "Inference" + tail + ".",
            "requestBody": {"required": True, "content": {_JSON: {
                "schema": _ref("V2InferRequest"), "example": _INFER_EXAMPLE}}},
            "responses": infer}}
    return out
