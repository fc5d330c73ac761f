"""TF Serving's REST API (HTTP is parsed by ``tfdeploy.serving.httpserver``: httptools).

    GET  /v1/openapi.json                                      this API's OpenAPI 3 document
    GET  /v1/models/NAME[/versions/V | /labels/L]              model status
    GET  /v1/models/NAME[/versions/V | /labels/L]/metadata     signature metadata
    POST /v1/models/NAME[/versions/V | /labels/L]:predict|classify|regress
    /v2/...                                                    the Open Inference Protocol
                                                               (``rest_v2``)

Errors answer ``{"error": "..."}`` with TF Serving's HTTP codes.
"""

import json
import logging
import re
import threading
import time
from urllib.parse import unquote

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from tfdeploy.runtime.versions import parse_version
from tfdeploy.serving import json_fast, openapi, rest_json, rest_v2
from tfdeploy.serving.dataplane import DataPlane
from tfdeploy.serving.status import ServingError, invalid

log = logging.getLogger("tfdeploy.serving")

# TF Serving's own route patterns (http_rest_api_util.cc), matched on the raw (still
# URL-encoded) path; the model name and label are decoded afterwards, as TF Serving does.
_VERSION = r"(?:/versions/([0-9]+)|/labels/([^/:]+))?"
_GET = re.compile(r"(?i)^/v1/models(?:/([^/:]+))?" + _VERSION + r"(?:/(metadata))?$")
_POST = re.compile(r"(?i)^/v1/models/([^/:]+)" + _VERSION + r":(classify|regress|predict)$")

# Lone UTF-16 surrogates can only come from \\uD800-\\uDFFF escapes (UTF-8 bytes cannot
# encode them); only a body holding such an escape is walked.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LONE = re.compile("[\ud800-\udfff]")


def _reject_lone_surrogates(value):
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if _LONE.search(v):
                raise invalid("JSON Value: a string holds a lone UTF-16 surrogate (an unpaired "
                              "\\uD800-\\uDFFF escape); strings must be valid Unicode.")
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


_REFUSED = object()


def _fast_loads(data):
    """orjson's parse (about 4x json's), or _REFUSED for anything it does not take as is.

    orjson refuses NaN/Infinity tokens, numbers past a double, lone surrogates, nesting past
    1024 and invalid UTF-8; those bodies take ``json``'s path, which accepts NaN/Infinity as
    TF Serving does and words every error, so answers and messages do not depend on it.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _REFUSED


class RestApi:
    """The REST front end: routes, JSON conversion, timeouts, body limit, metrics.

    Args:
        plane: the DataPlane (a ModelRepository is wrapped in one).
        metrics: a Metrics registry (always kept; exposed when ``metrics_path`` is set).
        metrics_path: URL path of the Prometheus endpoint, or None to not expose it.
        timeout_ms: ``--rest_api_timeout_in_ms``; <= 0 means no timeout.
        max_body_bytes: the largest request body accepted (413 above it).
    """

    def __init__(self, plane, metrics=None, metrics_path=None, timeout_ms=30000,
                 max_body_bytes=64 << 20):
        self.plane = plane if isinstance(plane, DataPlane) else DataPlane(plane)
        self.metrics = metrics if metrics is not None else self.plane.metrics
        self.metrics_path = metrics_path
        self.timeout = timeout_ms / 1000.0 if timeout_ms and timeout_ms > 0 else None
        self.max_body_bytes = max_body_bytes
        self.v2 = rest_v2.RestV2(self.plane, self.timeout, self._parse_body)
        self._active = 0
        self._idle = threading.Condition()

    # A model call that recently took less than this, with a body of at most INLINE_BODY_BYTES,
    # is run in the HTTP event loop, saving the two thread hand-offs (~0.25 ms) per request;
    # anything else goes to worker threads so the loop keeps serving other connections while
    # it runs: a model not called yet or recently slow, and a large body (decoding and
    # answering it costs time whatever the model).
    INLINE_SECONDS = 0.005
    INLINE_BODY_BYTES = 64 << 10

    def inline(self, method, raw_path, body_bytes=0):
        """True when a request is cheap enough to answer in the HTTP event loop: anything
        but a call of a model that is batched (it waits for its batch), not called yet,
        recently slow, or sent a body over ``INLINE_BODY_BYTES``."""
        if method != "POST":
            return True
        if raw_path.startswith("/v2/"):
            name = rest_v2.infer_model_name(raw_path)
        elif raw_path.lower().startswith("/v1/"):
            m = _POST.match(raw_path)
            name = None if m is None else unquote(m.group(1), errors="replace")
        else:
            return True
        if name is None:
            return True
        if self.plane.batching or body_bytes > self.INLINE_BODY_BYTES:
            return False
        return 0.0 < self.plane.recent_call_seconds(name) < self.INLINE_SECONDS

    def drain(self, timeout):
        """Wait up to ``timeout`` seconds for in-flight requests; True when none is left."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    # -- dispatch -----------------------------------------------------------------------------
    def handle(self, method, raw_path, read_body, headers=None):
        """Return ``(http_status, content_type, body_bytes[, extra_header_bytes])`` for one
        request; ``headers``: ``{lowercase name: value}`` of the headers a route reads."""
        with self._idle:
            self._active += 1
        try:
            if raw_path == "/v2" or raw_path.startswith("/v2/"):
                return self.v2.handle(method, raw_path, read_body, headers)
            return self._handle(method, raw_path, read_body)
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _handle(self, method, raw_path, read_body):
        path = raw_path  # as sent: URL-encoded (TF Serving decodes the name and label itself)
        if method == "GET" and self.metrics_path and unquote(path) == self.metrics_path:
            return 200, CONTENT_TYPE_LATEST, self.metrics.render().encode()
        if method == "GET" and path == openapi.OPENAPI_PATH:   # before _GET (/v1/models...)
            return self._json(200, openapi.document(
                self.plane.model_names, self.metrics_path, self.plane.repository.version_labels))
        if not path.lower().startswith("/v1/"):
            return self._json(404, {"error": f"Not found: {method} {path}. The REST API "
                                             "lives under /v1/models/ (TF Serving's) and "
                                             "/v2/ (the Open Inference Protocol's)."})
        start, model, api = time.monotonic(), "", method
        try:
            m = (_GET if method == "GET" else _POST).match(path) if method in ("GET", "POST") \
                else None
            if m is None:
                raise invalid(f"Malformed request: {method} {path}")
            name, version, label = m.group(1), m.group(2), m.group(3)
            name = unquote(name, errors="replace") if name else ""
            if label is not None:
                label = unquote(label, errors="replace")
            if version is not None:
                number = parse_version(version)
                if number is None:
                    raise invalid(f"Failed to convert version: {version[:40]} to numeric.")
                version = number
            model = name
            if method == "GET":
                api = "GetModelMetadata" if m.group(4) else "GetModelStatus"
                if not name:
                    raise invalid("Missing model name in request.")
                result = (self._metadata if m.group(4) else self._status)(name, version, label)
            else:
                api = m.group(4).lower()
                body = self._parse_body(read_body())
                result = self._run_timed(getattr(self, "_" + api), name, version, label, body,
                                         None if self.timeout is None else start + self.timeout)
            code, payload = "OK", (200, result)
        except ServingError as exc:
            code, payload = exc.code, (exc.http_status, {"error": exc.message})
        except Exception as exc:  # noqa: BLE001  (never crash the connection)
            log.exception("REST request %s %s failed", method, path)
            code, payload = "INTERNAL", (500, {"error": f"Internal error: {exc}"})
        self.plane.record(model, api, "REST", code, time.monotonic() - start)
        return self._json(*payload)

    @staticmethod
    def _json(status, obj):
        """The answer of ``obj``: JSON of it, or ``obj`` itself when it is JSON bytes."""
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode("utf-8")
        return status, "application/json", body

    @staticmethod
    def _parse_body(raw):
        text, spans = json_fast.extract(raw)   # big numeric arrays stay raw bytes for now
        body = _fast_loads(text)
        if body is _REFUSED and spans:
            text, spans = raw, {}   # let the plain path find and word the error
        if body is _REFUSED:
            try:
                decoded = text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise invalid(f"JSON Parse error: the body is not UTF-8: {exc}") from exc
            body = json_fast.stdlib_loads(decoded, stop_when_done=True)
        if not isinstance(body, dict):
            raise invalid(f"JSON Value: {rest_json.debug_string(body)} Is not object")
        if _SURROGATE_ESCAPE.search(text):
            _reject_lone_surrogates(body)
        if spans:
            body = json_fast.restore(body, spans)
        sig = body.get("signature_name", "")
        if not isinstance(sig, str):
            raise invalid(f"JSON Value: {rest_json.debug_string(body)} not formatted correctly. "
                          "'signature_name' key must be a string value.")
        return body

    def _run_timed(self, fn, *args):
        """Run in this HTTP worker (a hand-off to another thread per request cost more than
        the rest of the REST path). The deadline is passed down: work not started by then is
        dropped and a batched request leaves its queue at the deadline (504 on time); a model
        run already started cannot be interrupted (TF's eager cancellation is process-wide,
        not per call), so an unbatched run that ends past the deadline answers 504 then."""
        deadline = args[-1]
        result = fn(*args)
        if deadline is not None and time.monotonic() > deadline:
            raise ServingError("DEADLINE_EXCEEDED",
                               f"Deadline Exceeded: the request did not finish within "
                               f"{self.timeout * 1000:g} ms (--rest_api_timeout_in_ms)")
        return result

    # -- APIs ---------------------------------------------------------------------------------
    def _status(self, name, version, label):
        return rest_json.status_response(self.plane.status(name, version, label))

    def _metadata(self, name, version, label):
        servable = self.plane.metadata(name, version, label)
        report = servable.runtime_report
        return rest_json.metadata_response(name, servable.version, servable.signature_defs,
                                           None if report["policy"] == "tensorflow" else report)

    def _predict(self, name, version, label, body, deadline):
        plane = self.plane
        with plane.model(name, version, label) as servable:
            sig = body.get("signature_name", "")
            fmt, inputs = rest_json.parse_predict(body, plane.input_dtypes(servable, sig),
                                                  plane.shape_check(servable, sig))
            _, outputs = plane.infer(servable, sig, inputs, deadline=deadline)
        return rest_json.predict_response_json(fmt, outputs)   # (bytes: written as they are)

    def _classify(self, name, version, label, body, deadline):
        examples = rest_json.parse_examples(body)
        with self.plane.model(name, version, label) as servable:
            _, results = self.plane.classify(servable, body.get("signature_name", ""),
                                             examples, deadline)
        return {"results": [[[lbl, score] for lbl, score in row] for row in results]}

    def _regress(self, name, version, label, body, deadline):
        examples = rest_json.parse_examples(body)
        with self.plane.model(name, version, label) as servable:
            _, results = self.plane.regress(servable, body.get("signature_name", ""),
                                            examples, deadline)
        return {"results": results}


def make_http_server(api, host, port, threads=16, connection_limit=256, channel_timeout=30,
                     **deadlines):
    """The HTTP server (``tfdeploy.serving.httpserver``) bound to ``host:port`` serving ``api``
    (call ``start``); ``deadlines``: HttpServer's header_timeout, body_timeout and
    body_min_rate."""
    from tfdeploy.serving.httpserver import HttpServer

    return HttpServer(api, host, port, threads, connection_limit, channel_timeout, **deadlines)
