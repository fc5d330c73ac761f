"""TF Serving's REST API on the standard library's ThreadingHTTPServer.

    GET  /v1/models/NAME[/versions/V | /labels/L]              model status
    GET  /v1/models/NAME[/versions/V | /labels/L]/metadata     signature metadata
    POST /v1/models/NAME[/versions/V | /labels/L]:predict|classify|regress

Errors answer ``{"error": "..."}`` with TF Serving's HTTP codes.
"""

import concurrent.futures
import http.server
import json
import logging
import re
import socket
import threading
import time
import urllib.parse

from tfdeploy.serving import inference, rest_json
from tfdeploy.serving.status import ServingError, invalid

log = logging.getLogger("tfdeploy.serving")

_SPEC = r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?"
_GET = re.compile(r"(?i)^" + _SPEC + r"(/metadata)?$")
_POST = re.compile(r"(?i)^" + _SPEC + r":(predict|classify|regress)$")


class RestApi:
    """The REST front end: routes, JSON conversion, timeouts, body limit, metrics.

    Args:
        repository: the ModelRepository.
        metrics: a Metrics registry (always kept; exposed when ``metrics_path`` is set).
        metrics_path: URL path of the Prometheus endpoint, or None to not expose it.
        timeout_ms: ``--rest_api_timeout_in_ms``; <= 0 means no timeout.
        max_body_bytes: the largest request body accepted (413 above it).
    """

    def __init__(self, repository, metrics, metrics_path=None, timeout_ms=30000,
                 max_body_bytes=64 << 20, workers=32):
        self.repository, self.metrics, self.metrics_path = repository, metrics, metrics_path
        self.timeout = timeout_ms / 1000.0 if timeout_ms and timeout_ms > 0 else None
        self.max_body_bytes = max_body_bytes
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, "tfdeploy-rest")
        self._active = 0
        self._idle = threading.Condition()

    def drain(self, timeout):
        """Wait up to ``timeout`` seconds for in-flight requests; True when none is left."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    def close(self):
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- dispatch -----------------------------------------------------------------------------
    def handle(self, method, raw_path, read_body):
        """Return ``(http_status, content_type, body_bytes)`` for one request."""
        with self._idle:
            self._active += 1
        try:
            return self._handle(method, raw_path, read_body)
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _handle(self, method, raw_path, read_body):
        path = urllib.parse.unquote(urllib.parse.urlsplit(raw_path).path)
        if method == "GET" and self.metrics_path and path == self.metrics_path:
            return 200, "text/plain; version=0.0.4", self.metrics.render().encode()
        if not path.lower().startswith("/v1/"):
            return self._json(404, {"error": f"Not found: {method} {path}. The REST API "
                                             "lives under /v1/models/."})
        start, model, api = time.perf_counter(), "", method
        try:
            m = (_GET if method == "GET" else _POST).match(path) if method in ("GET", "POST") \
                else None
            if m is None:
                raise invalid(f"Malformed request: {method} {path}")
            name, version, label = m.group(1), m.group(2), m.group(3)
            version = int(version) if version is not None else None
            model = name if name in self.repository.model_names else ""
            if method == "GET":
                api = "GetModelMetadata" if m.group(4) else "GetModelStatus"
                result = (self._metadata if m.group(4) else self._status)(name, version, label)
            else:
                api = m.group(4).lower()
                body = self._parse_body(read_body())
                result = self._run_timed(getattr(self, "_" + api), name, version, label, body)
            code, payload = "OK", (200, result)
        except ServingError as exc:
            code, payload = exc.code, (exc.http_status, {"error": exc.message})
        except Exception as exc:  # noqa: BLE001  (never crash the connection)
            log.exception("REST request %s %s failed", method, path)
            code, payload = "INTERNAL", (500, {"error": f"Internal error: {exc}"})
        self.metrics.request_done(model, api, "REST", code, time.perf_counter() - start)
        return self._json(*payload)

    @staticmethod
    def _json(status, obj):
        return status, "application/json", json.dumps(obj).encode("utf-8")

    @staticmethod
    def _parse_body(raw):
        try:
            body = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise invalid(f"JSON Parse error: the body is not UTF-8: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise invalid(f"JSON Parse error: {exc.msg} at offset: {exc.pos}") from exc
        except RecursionError:
            raise invalid("JSON Parse error: the document is nested too deeply") from None
        if not isinstance(body, dict):
            raise invalid("JSON Value: the request body is not a JSON object")
        sig = body.get("signature_name", "")
        if not isinstance(sig, str):
            raise invalid("'signature_name' must be a string")
        return body

    def _run_timed(self, fn, *args):
        if self.timeout is None:
            return fn(*args)
        future = self._pool.submit(fn, *args)
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ServingError("DEADLINE_EXCEEDED",
                               f"Deadline Exceeded: the request did not finish within "
                               f"{self.timeout * 1000:g} ms (--rest_api_timeout_in_ms)") from None

    # -- APIs ---------------------------------------------------------------------------------
    def _status(self, name, version, label):
        return rest_json.status_response(self.repository.status(name, version, label))

    def _metadata(self, name, version, label):
        servable = self.repository.get(name, version, label)
        return rest_json.metadata_response(name, servable.version, servable.signature_defs)

    def _predict(self, name, version, label, body):
        servable = self.repository.get(name, version, label)
        sig = body.get("signature_name", "")
        fmt, inputs = rest_json.parse_predict(body, servable.input_dtypes(sig))
        _, outputs = servable.run(sig, inputs)
        return rest_json.predict_response(fmt, outputs)

    def _classify(self, name, version, label, body):
        servable = self.repository.get(name, version, label)
        _, results = inference.classify(servable, body.get("signature_name", ""),
                                        rest_json.parse_examples(body))
        return {"results": [[[lbl, score] for lbl, score in row] for row in results]}

    def _regress(self, name, version, label, body):
        servable = self.repository.get(name, version, label)
        _, results = inference.regress(servable, body.get("signature_name", ""),
                                       rest_json.parse_examples(body))
        return {"results": results}


def _handler_class(api):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "tfdeploy-serving"
        timeout = 60  # seconds a client may stall mid-request before its connection closes

        def setup(self):
            super().setup()
            # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's
            # algorithm and the client's delayed ACK add ~40 ms to keep-alive requests.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, fmt, *args):  # quiet by default; errors still go to logging
            log.debug("%s - " + fmt, self.address_string(), *args)

        def _send(self, status, ctype, body, close=False):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status, message):
            self._send(status, "application/json", json.dumps({"error": message}).encode(),
                       close=True)

        def _dispatch(self):
            body_state = {}
            if self.command == "POST":
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    return self._error(411, "Chunked request bodies are not supported; send "
                                            "a Content-Length header.")
                length = self.headers.get("Content-Length")
                if length is None:
                    return self._error(411, "Length Required: POST requests need a "
                                            "Content-Length header.")
                try:
                    n = int(length)
                    if n < 0:
                        raise ValueError
                except ValueError:
                    return self._error(400, f"Invalid Content-Length: {length!r}")
                if n > api.max_body_bytes:
                    return self._error(413, f"Request body of {n} bytes exceeds the limit of "
                                            f"{api.max_body_bytes} bytes.")
                body_state["n"] = n

            # Read the whole body first so the connection stays in sync whatever happens next.
            n = body_state.get("n", 0)
            data = self.rfile.read(n) if n else b""
            if len(data) != n:
                return self._error(400, "The request body ended before Content-Length bytes "
                                        "arrived.")

            def read_body():
                return data
            status, ctype, body = api.handle(self.command, self.path, read_body)
            self._send(status, ctype, body)

        def do_GET(self):  # noqa: N802
            self._dispatch()

        def do_POST(self):  # noqa: N802
            self._dispatch()

        def _not_allowed(self):
            self._error(405, f"Method {self.command} is not allowed; use GET or POST.")

        do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed  # noqa: N815

    return Handler


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def make_http_server(api, host, port):
    """A ThreadingHTTPServer bound to ``host:port`` serving ``api`` (not yet started)."""
    return _HTTPServer((host, port), _handler_class(api))
