"""The Open Inference Protocol (KServe V2) over REST, on the same port as TF Serving's API.

    GET  /v2/health/live                                    {"live": true}
    GET  /v2/health/ready                                   every served model has a version
    GET  /v2                                                server metadata
    GET  /v2/models/NAME[/versions/V]                       model metadata (from the signature)
    GET  /v2/models/NAME[/versions/V]/ready                 200 when ready, 4xx when not
    POST /v2/models/NAME[/versions/V]/infer                 inference

Inference bodies are the protocol's JSON (tensors as ``name``, ``shape``, ``datatype``,
``data`` flat or nested) or Triton's binary tensor data extension: the JSON header is the
first ``Inference-Header-Content-Length`` bytes of the body, and an input with parameter
``binary_data_size`` takes its bytes from what follows, in input order. Outputs are sent
binary when their ``binary_data`` parameter (or the request's ``binary_data_output``) is
true. The request parameter ``signature_name`` picks a signature (``serving_default``
otherwise). Errors answer ``{"error": "..."}``: 400 for a bad request, 404 for an unknown
model or version, and the data plane's other codes as on /v1.

Like the V1 front end, this only translates: lookup, validation against the signature,
batching, the model call and metrics are the DataPlane's.
"""

import json
import logging
import re
import time
from urllib.parse import unquote

import numpy as np

import tfdeploy
from tfdeploy.runtime.versions import parse_version
from tfdeploy.serving import json_fast, v2_tensors
from tfdeploy.serving.json_fast import FastArray
from tfdeploy.serving.status import ServingError, invalid, not_found
from tfdeploy.serving.validation import TensorSpec

log = logging.getLogger("tfdeploy.serving")
PROTOCOL = "REST_V2"
PLATFORM = "tensorflow_savedmodel"
EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "inference-header-content-length"
_MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(ready|infer))?$")


def infer_model_name(raw_path):
    """The model name of a V2 infer path, or None for any other path."""
    m = _MODEL.match(raw_path)
    if m is None or m.group(3) != "infer":
        return None
    return unquote(m.group(1), errors="replace")


def server_metadata():
    return {"name": "tfdeploy", "version": tfdeploy.__version__, "extensions": EXTENSIONS}


def parse_model_version(plane, name, version):
    """A V2 version string ("" for the latest) as an int or None; NOT_FOUND for one that
    names no version (as MLServer answers), after an unknown model's own NOT_FOUND."""
    if version in (None, ""):
        return None
    number = parse_version(version)
    if number is None:
        plane.status(name)   # an unknown model is the error to name first
        raise not_found(f"Model '{name}' has no version {version[:40]!r}: versions are the "
                        "integers of the model's version directories (see GET "
                        f"/v2/models/{name[:100]}).")
    return number


def server_ready(plane):
    return all(plane.ready(name) for name in plane.model_names)


def model_ready(plane, name, version):
    """True/False for a known model (NOT_FOUND for an unknown one)."""
    plane.status(name)   # NOT_FOUND for an unknown model
    return plane.ready(name, version)


def model_metadata(plane, name, version, signature_name=""):
    """``(name, versions, platform, inputs, outputs)``: tensors as ``(name, datatype,
    shape)`` from the signature (``serving_default`` unless ``signature_name``)."""
    servable = plane.metadata(name, version)
    _, sig = servable.signature(signature_name)
    if version is None:
        versions = [str(s.version) for s in plane.status(name) if s.state == "AVAILABLE"]
    else:
        versions = [str(servable.version)]

    def tensors(infos):
        out = []
        for key in sorted(infos):
            spec = TensorSpec(key, infos[key])
            out.append((key, v2_tensors.datatype_of(spec.dtype),
                        [-1] if spec.shape is None else [int(d) for d in spec.shape]))
        return out
    return name, versions, PLATFORM, tensors(sig.inputs), tensors(sig.outputs)


def infer_inputs(plane, servable, signature_name, tensors, read_data):
    """``{name: ndarray}`` of V2 input tensors ``[(name, datatype, shape, source)]``;
    ``read_data(name, datatype, shape, numel, source)`` materialises one after its name,
    datatype and shape were checked against the signature."""
    validator = servable.validator(signature_name)
    check = plane.shape_check(servable, signature_name)
    inputs = {}
    for name, datatype, shape, source in tensors:
        if not isinstance(name, str):
            raise invalid("Every input needs a string 'name'.")
        if name in inputs:
            raise invalid(f"Input '{name}' is sent twice; send each input once.")
        v2_tensors.check_datatype(name, datatype, validator.specs)
        shape, numel = v2_tensors.check_shape(name, shape)
        if check is not None:
            check(name, shape)
        inputs[name] = read_data(name, datatype, shape, numel, source)
    validator.check_names(inputs)
    return inputs


def output_names(requested, sig):
    """The output names a request selects (all of the signature's when none), checked."""
    if not requested:
        return sorted(sig.outputs)
    for name in requested:
        if name not in sig.outputs:
            raise invalid(f"Output '{name}' is not an output of the model's signature; its "
                          f"outputs are {sorted(sig.outputs)}.")
    if len(set(requested)) != len(requested):
        raise invalid("An output is requested twice; request each output once.")
    return list(requested)


def _params(obj, what):
    params = obj.get("parameters", {})
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise invalid(f"{what}: 'parameters' must be an object.")
    return params


def _flag(params, key, what):
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise invalid(f"{what}: parameter '{key}' must be true or false.")
    return value


class RestV2:
    """The V2 REST routes, called by ``RestApi`` for paths under ``/v2``.

    Args:
        plane: the DataPlane.
        deadline_seconds: ``--rest_api_timeout_in_ms`` in seconds (None: no deadline).
        parse_body: V1's JSON body parser (``RestApi._parse_body``: orjson with big numeric
            arrays kept raw, and the same words for every JSON error).
    """

    def __init__(self, plane, deadline_seconds=None, parse_body=None):
        self.plane, self.timeout, self.parse_body = plane, deadline_seconds, parse_body

    def handle(self, method, path, read_body, headers=None):
        """``(status, content_type, body[, extra_header_bytes])``."""
        start, model, api, code = time.monotonic(), "", "v2", "OK"
        try:
            model, api, result = self._route(method, path, read_body, headers or {}, start)
        except ServingError as exc:
            code, result = exc.code, (exc.http_status, {"error": exc.message})
        except Exception as exc:  # noqa: BLE001  (never crash the connection)
            log.exception("REST V2 request %s %s failed", method, path)
            code, result = "INTERNAL", (500, {"error": f"Internal error: {exc}"})
        self.plane.record(model, api, PROTOCOL, code, time.monotonic() - start)
        status, payload = result[0], result[1]
        if isinstance(payload, bytes):   # binary answer: (status, body, json_length)
            return status, "application/octet-stream", payload, \
                b"Inference-Header-Content-Length: %d\r\n" % result[2]
        return status, "application/json", json.dumps(payload).encode("utf-8")

    def _route(self, method, path, read_body, headers, start):
        plane = self.plane
        if method == "GET" and path in ("/v2", "/v2/"):
            return "", "ServerMetadata", (200, server_metadata())
        if method == "GET" and path == "/v2/health/live":
            return "", "ServerLive", (200, {"live": True})
        if method == "GET" and path == "/v2/health/ready":
            ready = server_ready(plane)
            if not ready:
                # the Open Inference Protocol answers "not ready" with a 4xx (Triton: 400)
                raise ServingError("FAILED_PRECONDITION", "Not ready: a served model has no "
                                   "available version yet (see GET /v1/models/NAME).")
            return "", "ServerReady", (200, {"ready": True})
        m = _MODEL.match(path)
        if m is None or method not in ("GET", "POST") or (method == "POST") != (m.group(3) ==
                                                                                 "infer"):
            raise not_found(f"Not found: {method} {path[:200]}. The V2 routes are GET /v2, "
                            "/v2/health/live, /v2/health/ready, /v2/models/NAME[/versions/V]"
                            "[/ready] and POST /v2/models/NAME[/versions/V]/infer.")
        name = unquote(m.group(1), errors="replace")
        version = parse_model_version(plane, name, unquote(m.group(2), errors="replace")
                                      if m.group(2) else None)
        if m.group(3) == "ready":
            if not model_ready(plane, name, version):
                known = [s.version for s in plane.status(name)]
                if version is not None and version not in known:
                    raise not_found(f"Model '{name}' has no version {version}; its versions "
                                    f"are {sorted(known)}.")
                what = f"version {version}" if version is not None else "no version"
                raise ServingError("FAILED_PRECONDITION", f"Model '{name}' {what} is not "
                                   "ready yet (loading; see GET /v1/models/NAME).")
            return name, "ModelReady", (200, {"name": name, "ready": True})
        if m.group(3) is None:
            name, versions, platform, inputs, outputs = model_metadata(plane, name, version)
            return name, "ModelMetadata", (200, {
                "name": name, "versions": versions, "platform": platform,
                "inputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in inputs],
                "outputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in outputs]})
        deadline = None if self.timeout is None else start + self.timeout
        return name, "ModelInfer", self._infer(name, version, read_body(), headers, deadline)

    # -- infer --------------------------------------------------------------------------------
    def _infer(self, name, version, raw, headers, deadline):
        header_length = headers.get(HEADER_LENGTH)
        binary = b""
        if header_length is not None:
            try:
                n = int(header_length)
            except ValueError:
                n = -1
            if not 0 <= n <= len(raw):
                raise invalid(f"Inference-Header-Content-Length {header_length[:20]!r} must be "
                              f"an integer from 0 to the body's {len(raw)} bytes.")
            raw, binary = raw[:n], memoryview(raw)[n:]
        body = self.parse_body(raw)
        request_params = _params(body, "The request")
        signature = request_params.get("signature_name", "")
        if not isinstance(signature, str):
            raise invalid("The request: parameter 'signature_name' must be a string.")
        tensors = body.get("inputs")
        if not isinstance(tensors, list) or not tensors or not all(
                isinstance(t, dict) for t in tensors):
            raise invalid("The request needs 'inputs': a list of tensors, each "
                          '{"name", "shape", "datatype", "data"}.')
        requested = body.get("outputs") or []
        if not isinstance(requested, list) or not all(
                isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested):
            raise invalid("'outputs' must be a list of objects, each with a string 'name'.")
        all_binary = _flag(request_params, "binary_data_output", "The request")
        as_binary = {o["name"]: _flag(_params(o, f"Output '{o['name']}'"), "binary_data",
                                      f"Output '{o['name']}'") for o in requested}
        offset = [0]

        def read(tensor_name, datatype, shape, numel, tensor):
            params = _params(tensor, f"Input '{tensor_name}'")
            size = params.get("binary_data_size")
            if size is not None:
                if not isinstance(size, int) or isinstance(size, bool) or size < 0 or \
                        offset[0] + size > len(binary):
                    raise invalid(f"Input '{tensor_name}': binary_data_size {str(size)[:20]} "
                                  f"exceeds the {len(binary) - offset[0]} binary bytes left "
                                  "after the JSON header (Inference-Header-Content-Length).")
                if "data" in tensor:
                    raise invalid(f"Input '{tensor_name}' has both 'data' and "
                                  "binary_data_size; send one.")
                chunk = bytes(binary[offset[0]:offset[0] + size])
                offset[0] += size
                return v2_tensors.from_raw(tensor_name, datatype, shape, numel, chunk)
            if "data" not in tensor:
                raise invalid(f"Input '{tensor_name}' has no 'data' (or binary_data_size).")
            data = tensor["data"]
            if isinstance(data, FastArray):
                array = data.array(None, v2_tensors.NUMPY[datatype]) \
                    if datatype in ("FP32", "FP64", "FP16") else None
                if array is None:
                    data = data.load()
                else:
                    return v2_tensors._shaped(tensor_name, array.reshape(-1), shape, numel)
            if json_fast.holds_fast_arrays(body) and isinstance(data, list):
                data = json_fast.load_all(data)
            return v2_tensors.from_json(tensor_name, datatype, shape, numel, data)

        plane = self.plane
        with plane.model(name, version) as servable:
            key, sig = servable.signature(signature)
            wanted = output_names([o["name"] for o in requested], sig)
            inputs = infer_inputs(plane, servable, signature, [
                (t.get("name"), t.get("datatype"), t.get("shape"), t) for t in tensors], read)
            if offset[0] != len(binary):
                raise invalid(f"{len(binary) - offset[0]} binary bytes follow the JSON header "
                              "that no input's binary_data_size claims.")
            _, outputs = plane.infer(servable, signature, inputs, wanted, deadline)
        return self._answer(name, servable.version, body.get("id"), wanted, outputs,
                            as_binary, all_binary)

    @staticmethod
    def _answer(name, version, request_id, wanted, outputs, as_binary, all_binary):
        response = {"model_name": name, "model_version": str(version)}
        if isinstance(request_id, str) and request_id:
            response["id"] = request_id
        out, blobs = [], []
        for key in wanted:
            array = np.asarray(outputs[key])
            tensor = {"name": key, "datatype": v2_tensors.datatype_of_array(array),
                      "shape": list(array.shape)}
            if as_binary.get(key, all_binary):
                blob = v2_tensors.to_raw(array)
                tensor["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                tensor["data"] = v2_tensors.to_json_data(key, array)
            out.append(tensor)
        response["outputs"] = out
        if not blobs:
            return 200, response
        header = json.dumps(response).encode("utf-8")
        return 200, b"".join([header] + blobs), len(header)
