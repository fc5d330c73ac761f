"""The OpenAPI 3 document of the REST API, served at ``GET /v1/openapi.json``.

The Open Inference Protocol's (V2) routes join it from ``openapi_v2``.

It describes TF Serving's V1 routes as ``tfdeploy serve`` answers them: model status,
metadata, predict (row ``instances`` and columnar ``inputs``, named or unnamed inputs,
``{"b64": ...}`` for binary strings), classify and regress (``examples`` + ``context``), and
``{"error": "..."}`` for every 4xx/5xx answer. ``name`` lists the models the server holds
when the document is fetched, so generated clients and fuzzers (schemathesis) reach them.
"""

import copy

import tfdeploy
from tfdeploy.serving import openapi_v2

OPENAPI_PATH = "/v1/openapi.json"
_JSON = "application/json"


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


# A tensor in JSON: a scalar, {"b64": ...}, or nested lists of them (TF Serving's json_tensor).
# Nesting is spelt out to a fixed depth, so generators never recurse without end.
_SCALAR = {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"},
                     _ref("B64")]}


# In answers, a non-finite float is written as the bare token NaN, Infinity or -Infinity, as
# TF Serving writes it. That is not strict JSON and no JSON Schema number holds it; parsers that
# read such a token as null see a "nullable" number.
_OUT_SCALAR = {"anyOf": [{"type": "number", "nullable": True}, {"type": "string"},
                         {"type": "boolean"}, _ref("B64")]}


def _nested(depth, scalar="Scalar"):
    schema = _ref(scalar)
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


_SCHEMAS = {
    "Error": {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {"type": "string",
                                 "description": "What was wrong with the request."}},
    },
    "B64": {
        "type": "object", "required": ["b64"], "additionalProperties": False,
        "description": "A binary string, base64-encoded (DT_STRING tensors and features).",
        "properties": {"b64": {"type": "string", "format": "byte"}},
    },
    "Scalar": _SCALAR,
    "Tensor": {
        "description": "A tensor: a scalar or nested lists of scalars, one level per "
                       "dimension (ragged lists are refused).",
        "anyOf": [_nested(d) for d in range(5)] + [{"type": "array"}],
    },
    "OutputScalar": _OUT_SCALAR,
    "OutputTensor": {
        "description": "An output tensor, as 'Tensor'; a non-finite float is written NaN, "
                       "Infinity or -Infinity (as TF Serving writes it).",
        "anyOf": [_nested(d, "OutputScalar") for d in range(5)] + [{"type": "array"}],
    },
    "NamedOutputs": {
        "type": "object", "description": "A tensor per signature output name.",
        "additionalProperties": _ref("OutputTensor"),
    },
    "NamedTensors": {
        "type": "object", "description": "A tensor per signature input or output name.",
        "additionalProperties": _ref("Tensor"),
    },
    "PredictRequest": {
        "type": "object",
        "description": "Exactly one of 'instances' (row format: one item per example, "
                       "a tensor or an object of named tensors) or 'inputs' (columnar format: "
                       "a tensor or an object of named tensors, each holding the whole batch).",
        "properties": {
            "signature_name": {"type": "string",
                               "description": "Defaults to 'serving_default'."},
            "instances": {"type": "array", "minItems": 1,
                          "items": {"anyOf": [_ref("Tensor"), _ref("NamedTensors")]}},
            "inputs": {"anyOf": [_ref("Tensor"), _ref("NamedTensors")]},
        },
        "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
    },
    "PredictResponse": {
        "type": "object",
        "description": "'predictions' answers the row format (a list with one item per "
                       "example; objects of named outputs when there are several), 'outputs' "
                       "the columnar format.",
        "properties": {
            "predictions": {"type": "array",
                            "items": {"anyOf": [_ref("OutputTensor"), _ref("NamedOutputs")]}},
            "outputs": {"anyOf": [_ref("OutputTensor"), _ref("NamedOutputs")]},
        },
        "oneOf": [{"required": ["predictions"]}, {"required": ["outputs"]}],
    },
    "Feature": {
        "description": "A tf.train.Feature: integers and booleans become int64_list, decimals "
                       "float_list, strings and {\"b64\": ...} bytes_list; one kind per list.",
        "anyOf": [_ref("Scalar"), {"type": "array", "items": _ref("Scalar")}],
    },
    "Example": {
        "type": "object", "description": "A tf.train.Example: a feature per name.",
        "additionalProperties": _ref("Feature"),
    },
    "ExamplesRequest": {
        "type": "object", "required": ["examples"],
        "description": "tf.Examples to classify or regress; 'context' holds features shared "
                       "by every example (an example's own value wins).",
        "properties": {
            "signature_name": {"type": "string",
                               "description": "Defaults to 'serving_default'."},
            "context": _ref("Example"),
            "examples": {"type": "array", "minItems": 1, "items": _ref("Example")},
        },
    },
    "ClassifyResponse": {
        "type": "object", "required": ["results"], "additionalProperties": False,
        "properties": {"results": {
            "type": "array", "description": "Per example, its [label, score] pairs.",
            "items": {"type": "array", "items": {
                "type": "array", "minItems": 2, "maxItems": 2,
                "items": {"anyOf": [{"type": "string"},
                                    {"type": "number", "nullable": True}]}}}}},
    },
    "RegressResponse": {
        "type": "object", "required": ["results"], "additionalProperties": False,
        "properties": {"results": {"type": "array", "items": {"type": "number", "nullable": True},
                                   "description": "One value per example."}},
    },
    "StatusResponse": {
        "type": "object", "required": ["model_version_status"], "additionalProperties": False,
        "properties": {"model_version_status": {"type": "array", "items": {
            "type": "object", "required": ["version", "state", "status"],
            "properties": {
                "version": {"type": "string", "pattern": "^-?[0-9]+$"},
                "state": {"type": "string",
                          "enum": ["UNKNOWN", "START", "LOADING", "AVAILABLE", "UNLOADING",
                                   "END"]},
                "status": {"type": "object", "required": ["error_code", "error_message"],
                           "properties": {"error_code": {"type": "string"},
                                          "error_message": {"type": "string"}}},
            }}}},
    },
    "TensorInfo": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "dtype": {"type": "string", "example": "DT_FLOAT"},
            "tensor_shape": {"type": "object", "properties": {
                "dim": {"type": "array", "items": {"type": "object", "properties": {
                    "size": {"type": "string", "description": "-1 when unknown."},
                    "name": {"type": "string"}}}},
                "unknown_rank": {"type": "boolean"}}},
        },
    },
    "SignatureDef": {
        "type": "object",
        "properties": {
            "inputs": {"type": "object", "additionalProperties": _ref("TensorInfo")},
            "outputs": {"type": "object", "additionalProperties": _ref("TensorInfo")},
            "method_name": {"type": "string", "example": "tensorflow/serving/predict"},
        },
    },
    "MetadataResponse": {
        "type": "object", "required": ["model_spec", "metadata"],
        "properties": {
            "model_spec": {"type": "object", "required": ["name", "version"], "properties": {
                "name": {"type": "string"}, "signature_name": {"type": "string"},
                "version": {"type": "string", "pattern": "^-?[0-9]+$"}}},
            "metadata": {"type": "object", "required": ["signature_def"], "properties": {
                "signature_def": {"type": "object", "properties": {
                    "signature_def": {"type": "object",
                                      "additionalProperties": _ref("SignatureDef")}}}}},
        },
    },
}

_ERRORS = {
    "400": "The request is malformed or does not fit the signature (INVALID_ARGUMENT, "
           "FAILED_PRECONDITION).",
    "404": "No such model, version or signature (NOT_FOUND).",
    "4XX": "Another client error: 413 body too large, 429 too many requests, 431 headers too "
           "large.",
    "5XX": "A server-side failure: 500 internal, 501 unimplemented, 503 unavailable (loading, "
           "draining, at the connection limit), 504 deadline exceeded "
           "(--rest_api_timeout_in_ms).",
}


def _responses(ok_schema, ok_description):
    responses = {"200": {"description": ok_description,
                         "content": {_JSON: {"schema": _ref(ok_schema)}}}}
    for code, description in _ERRORS.items():
        responses[code] = {"description": description,
                           "content": {_JSON: {"schema": _ref("Error")}}}
    return responses


def _params(model_names, selector, labels):
    name = {"type": "string", "minLength": 1}
    if model_names:
        name["enum"] = list(model_names)
    params = [{"name": "name", "in": "path", "required": True, "schema": name,
               "description": "The model's name (listed here: the models this server serves "
                              "now; any other name answers 404)."}]
    if selector == "version":
        params.append({"name": "version", "in": "path", "required": True,
                       "schema": {"type": "integer", "format": "int64", "minimum": 0},
                       "description": "A version number (default: the latest served)."})
    elif selector == "label":
        params.append({"name": "label", "in": "path", "required": True,
                       "schema": {"type": "string", "minLength": 1},
                       "description": "A version label from the model config (e.g. "
                                      "'stable')."})
        if labels:
            params[-1]["examples"] = {label: {"value": label} for label in labels}
    return params


_SELECTORS = {"": None, "/versions/{version}": "version", "/labels/{label}": "label"}
# Request examples fit TF Serving's half_plus_two test model (y = 0.5 * x + 2).
_METHODS = {
    "predict": ("PredictRequest", "PredictResponse", "Run a signature on tensors.",
                {"instances": [1.0, 2.0, 5.0]}),
    "classify": ("ExamplesRequest", "ClassifyResponse",
                 "Classify tf.Examples with a classify signature.",
                 {"signature_name": "tensorflow/serving/classify",
                  "examples": [{"x": 1.0}, {"x": 2.0}]}),
    "regress": ("ExamplesRequest", "RegressResponse",
                "Regress tf.Examples with a regress signature.",
                {"signature_name": "tensorflow/serving/regress",
                 "context": {"unused": "shared by every example"},
                 "examples": [{"x": 1.0}, {"x": 2.0}]}),
}


def document(model_names=(), metrics_path=None, labels=()):
    """The OpenAPI 3.0 document (a dict) of the REST API.

    Args:
        model_names: the models served now; they become the ``name`` parameter's enum.
            Defaults to none (any name).
        metrics_path: the Prometheus endpoint's path when it is exposed. Defaults to None.
        labels: the version labels of the models' configs: examples of the ``label``
            parameter. Defaults to none.

    Returns:
        A JSON-serializable dict (``openapi_spec_validator.validate`` accepts it).
    """
    paths = {}
    for suffix, selector in _SELECTORS.items():
        params = _params(model_names, selector, labels)
        tail = f" ({selector} given)" if selector else " (latest version)"
        paths[f"/v1/models/{{name}}{suffix}"] = {"get": {
            "operationId": f"getModelStatus{(selector or '').title()}",
            "summary": "Model status" + tail, "tags": ["model"], "parameters": params,
            "responses": _responses("StatusResponse", "The state of each version.")}}
        paths[f"/v1/models/{{name}}{suffix}/metadata"] = {"get": {
            "operationId": f"getModelMetadata{(selector or '').title()}",
            "summary": "Signature metadata" + tail, "tags": ["model"], "parameters": params,
            "responses": _responses("MetadataResponse", "The model's SignatureDefs.")}}
        for method, (request, response, summary, example) in _METHODS.items():
            paths[f"/v1/models/{{name}}{suffix}:{method}"] = {"post": {
                "operationId": f"{method}{(selector or '').title()}",
                "summary": summary[:-1] + tail + ".", "tags": ["inference"],
                "parameters": params,
                "requestBody": {"required": True,
                                "content": {_JSON: {"schema": _ref(request),
                                                    "example": example}}},
                "responses": _responses(response, "The results.")}}
    paths.update(openapi_v2.paths(model_names, _responses, _params))
    paths[OPENAPI_PATH] = {"get": {
        "operationId": "getOpenApi", "summary": "This document.", "tags": ["server"],
        "responses": {"200": {"description": "The OpenAPI 3 document.",
                              "content": {_JSON: {"schema": {"type": "object"}}}}}}}
    if metrics_path:
        paths[metrics_path] = {"get": {
            "operationId": "getMetrics", "summary": "Prometheus metrics.", "tags": ["server"],
            "responses": {"200": {"description": "Prometheus text format.",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}}}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "tfdeploy serve REST API",
            "version": tfdeploy.__version__,
            "description": "TensorFlow Serving's REST API (V1), and the Open Inference "
                           "Protocol (V2: KServe, Triton) under /v2, as tfdeploy serves them. "
                           "Errors "
                           "answer {\"error\": \"...\"} with TF Serving's HTTP status codes.",
        },
        "tags": [{"name": "model"}, {"name": "inference"}, {"name": "server"}, {"name": "v2"}],
        "paths": paths,
        "components": {"schemas": copy.deepcopy({**_SCHEMAS, **openapi_v2.SCHEMAS})},
    }
