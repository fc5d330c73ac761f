"""The HTTP/1.1 front end: httptools (llhttp, Node.js's C parser) on an asyncio event loop
(uvloop when installed).

One event-loop thread owns every socket and parses every request; nothing a client sends
reaches a thread before the request is complete, so a slow or trickling client holds one
connection, never a worker thread. A complete request is answered in the loop when that is cheap
(``api.inline``: status, metadata, errors and model calls with small bodies that recently
took under ``RestApi.INLINE_SECONDS``), which saves the two thread hand-offs per request that
dominated the REST overhead; anything else (batched requests, which wait for their batch,
and slower models) runs on ``threads`` worker threads. A connection reads nothing more
while its request runs, so pipelined requests are answered in order and work per
connection is bounded.

Limits are enforced before anything is buffered: the request line and headers
(``max_header_bytes``, 431), the body (``max_body_bytes``, 413, checked on
Content-Length before any body byte is read). llhttp refuses duplicate or conflicting
Content-Length / Transfer-Encoding headers (no request smuggling) and reads a GET body as
a body.

Bodies are read without copies (``asyncio.BufferedProtocol``): the socket is read into one
buffer of ``READ_BUFFER`` bytes shared by the loop's connections (llhttp copies out the head
and any chunked body), except that a body of known Content-Length is read by the kernel
straight into a bytearray of its own, which becomes the request's body as is (a 1 MB JSON
body was copied three times before: uvloop's bytes per read, httptools' bytes per piece and
the join). That bytearray grows by doubling as bytes arrive (from ``BODY_FIRST_BYTES``), so
a client that announces a large body and sends little of it holds memory in proportion to
what it sent, not to what it announced.

Deadlines for slow clients (as Apache's mod_reqtimeout and nginx's client timeouts). A
connection that is not running a request is in one of three states, each with its own clock
that no byte restarts:

- ``idle`` (connected or between requests): closed silently ``channel_timeout`` s after it
  became idle (bytes that begin no request, like stray CRLFs, do not count);
- ``head`` (from the request's first byte): the request line and headers must arrive within
  ``header_timeout`` s;
- ``body`` (from the end of the headers): the body must arrive within ``body_timeout`` s plus
  1 s per ``body_min_rate`` bytes received (Apache's ``body=20,MinRate=500``), so a large
  upload at a decent rate is never cut and a trickle is.

A request past its deadline is answered 408 and the connection closes. While a request runs
(or waits for its turn behind a pipelined one) no clock runs; the clock of the state the
connection returns to starts afresh. Each state keeps its connections in an OrderedDict in
the order they entered it, so the sweep (every ``SWEEP_SECONDS`` in the loop) pops expired
idle and head connections from the front and stops at the first live one, and only the body
state (whose deadlines depend on the bytes received) is scanned whole.

When the table holds ``connection_limit`` connections, a newcomer takes the slot of the
oldest idle connection, else of the oldest one still sending its head, else of the oldest
one sending its body (answered 503); only when every connection is running a request is the
newcomer answered 503. Trickling clients can therefore delay valid ones, never lock them out.
"""

import asyncio
import concurrent.futures
import functools
import json
import logging
import socket
import threading
import time
from collections import OrderedDict, deque

import httptools

log = logging.getLogger("tfdeploy.serving")

SWEEP_SECONDS = 0.25     # how often deadlines are checked (the sweep's granularity)
EVICT_FRESH_AGE = 1.0    # s before a connection that has sent nothing may go for a newcomer
EVICT_SERVED_AGE = 0.25  # s before a keep-alive connection, once answered, may go
STATES = ("idle", "head", "body")
READ_BUFFER = 256 << 10      # bytes read from a socket at once, outside a known-length body
BODY_FIRST_BYTES = 64 << 10  # a known-length body's first allocation (then doubled as it fills)
# Headers passed on to the API (Triton's binary tensor data extension of the V2 protocol).
READ_HEADERS = frozenset({b"inference-header-content-length"})

REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 409: "Conflict",
           413: "Payload Too Large", 429: "Too Many Requests",
           431: "Request Header Fields Too Large", 499: "Client Closed Request",
           500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
           504: "Gateway Timeout"}


def _new_loop():
    try:
        import uvloop
    except ImportError:   # (uvloop has no Windows build; asyncio's loop is ~2x slower here)
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _error_body(message):
    return json.dumps({"error": message}).encode()


class _Request:
    __slots__ = ("method", "url", "body", "keep_alive", "headers")

    def __init__(self, method, url, body, keep_alive, headers=None):
        self.method, self.url, self.body, self.keep_alive = method, url, body, keep_alive
        self.headers = headers   # {lowercase name: value} of READ_HEADERS sent, or None


class _Connection(asyncio.BufferedProtocol):
    """One client connection: llhttp's callbacks build requests; answers go out in order."""

    def __init__(self, server):
        self.server = server
        self.transport = self.parser = None
        self.queue = deque()          # complete requests not answered yet
        self.busy = False             # a request of this connection is running
        self.closing = False
        self.close_after_queue = False   # set by an Upgrade request
        self.state = "idle"           # what the parser waits for: idle, head or body
        self.served = 0               # requests answered on this connection
        self.listed = None            # the state table this connection is listed in, if any
        self._reset()

    def _reset(self):
        self._url, self._body, self._body_size, self._head_size = [], [], 0, 0
        self._continue, self._length, self._headers = False, None, None
        self._chunked = False
        self._buf = None      # a known-length body's bytearray (filled up to _body_size)
        self._view = None     # the part of _buf the socket is being read into, if any
        self._in_place = False   # the bytes being parsed were read into _buf

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        server = self.server
        if len(server.connections) >= server.connection_limit and not server.evict():
            self._fail(503, f"The server holds its limit of {server.connection_limit} open "
                            "connections, all running requests (--max_connections); retry "
                            "later.")
            return
        server.connections.add(self)
        self.parser = httptools.HttpRequestParser(self)
        self._relist()

    def connection_lost(self, exc):
        self._drop()

    def _drop(self):
        """Leave the connection table (the socket closes, or has closed)."""
        self.closing = True
        self._unlist()
        self.server.connections.discard(self)

    # -- deadline bookkeeping -----------------------------------------------------------------
    def _unlist(self):
        if self.listed is not None:
            del self.server.states[self.listed][self]
            self.listed = None

    def _relist(self):
        """List the connection under its state, its clock starting now, unless a request
        of it runs or waits (then no clock runs)."""
        if self.busy or self.queue or self.closing:
            self._unlist()
        elif self.listed != self.state:
            self._unlist()
            self.server.states[self.state][self] = time.monotonic()
            self.listed = self.state

    def _enter(self, state):
        self.state = state
        self._relist()

    def expire(self, state, since):
        """(the sweep) Close a connection past its state's deadline: 408 mid-request."""
        server = self.server
        if state == "idle":
            self._drop()
            self.transport.close()
        elif state == "head":
            self._fail(408, f"The request line and headers did not arrive within "
                            f"{server.header_timeout:g} s of the request's first byte "
                            "(--http_header_timeout_seconds); send the request head at once.")
        else:
            took = time.monotonic() - since
            self._fail(408, f"The request body did not arrive in time: {self._body_size} bytes "
                            f"in {took:.1f} s, while the server waits "
                            f"{server.body_timeout:g} s (--http_body_timeout_seconds) plus "
                            f"1 s per {server.body_min_rate:g} bytes received "
                            "(--http_body_min_bytes_per_second); send the body faster.")

    def get_buffer(self, sizehint):
        """Where the next socket read goes: the rest of a known-length body's own buffer
        (never past the body's end, so the read holds body bytes only), else the loop's
        shared read buffer."""
        self._view = None
        buf = self._buf
        if buf is not None and not self.closing:
            start = self._body_size
            if start == len(buf):
                buf = self._grow()
            self._view = memoryview(buf)[start:]
            return self._view
        return self.server.read_buffer

    def _grow(self):
        """Double the body's buffer (at most to its Content-Length)."""
        buf, extra = self._buf, bytes(min(self._length, 2 * len(self._buf)) - len(self._buf))
        try:
            buf += extra     # (in place: realloc, no copy for a large buffer)
        except BufferError:  # (a view of it still held by the transport: copy instead)
            buf = self._buf = buf + extra
        return buf

    def buffer_updated(self, nbytes):
        view = self._view
        if view is not None:   # (body bytes only, already in place)
            self._view, self._in_place = None, True
            data = view[:nbytes]
        else:
            data = self.server.read_view[:nbytes]
        try:
            self.data_received(data)
        finally:
            self._in_place = False
            data.release()   # (the transport releases the view it was given)

    def data_received(self, data):
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # (an Upgrade/CONNECT request: answered as a plain request, then the connection
            # closes, since the bytes after it belong to another protocol)
            self.close_after_queue = True
        except Exception as exc:  # noqa: BLE001  (llhttp's errors, or a limit hit above)
            if not self.closing:
                self._fail(400, f"Malformed HTTP request: {exc}")
            return
        self._next()

    # -- llhttp callbacks ---------------------------------------------------------------------
    def on_message_begin(self):
        self._reset()
        self._enter("head")

    def on_url(self, url):
        self._url.append(url)
        self._count_head(len(url))

    def on_header(self, name, value):
        self._count_head(len(name) + len(value) + 4)
        name = name.lower()
        if name == b"content-length":   # (llhttp refuses a second one, and bad digits)
            try:
                self._length = int(value)
            except ValueError:
                pass
        elif name == b"transfer-encoding":
            self._chunked = True
        elif name == b"expect" and value.lower() == b"100-continue":
            self._continue = True
        elif name in READ_HEADERS:
            if self._headers is None:
                self._headers = {}
            self._headers[name.decode("latin-1")] = value.decode("latin-1")

    def _count_head(self, n):
        self._head_size += n
        if self._head_size > self.server.max_header_bytes and not self.closing:
            self._fail(431, f"The request line and headers exceed "
                            f"{self.server.max_header_bytes} bytes.")
            raise httptools.HttpParserError("header limit")   # stops this feed

    def on_headers_complete(self):
        length = self._length
        if length is not None and length > self.server.max_body_bytes:
            self._fail(413, f"The request body of {length} bytes exceeds the "
                            f"{self.server.max_body_bytes}-byte limit (--max_body_bytes).")
            raise httptools.HttpParserError("body limit")
        if self._continue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if length and not self._chunked and not self.parser.should_upgrade():
            # (llhttp refuses both headers, and reads no body after an Upgrade)
            self._buf = bytearray(min(length, BODY_FIRST_BYTES))
        self._enter("body")

    def on_body(self, body):
        start = self._body_size
        self._body_size += len(body)
        if self._body_size > self.server.max_body_bytes:   # chunked bodies: checked as read
            self._fail(413, f"The request body exceeds the {self.server.max_body_bytes}-byte "
                            "limit (--max_body_bytes).")
            raise httptools.HttpParserError("body limit")
        buf = self._buf
        if buf is None:
            self._body.append(body)
        elif not self._in_place:   # (read into the shared buffer with the head: copied in)
            while len(buf) < self._body_size:
                buf = self._grow()
            buf[start:self._body_size] = body
        # else the socket read these bytes into place (llhttp's copy is dropped)

    def on_message_complete(self):
        method = self.parser.get_method().decode("latin-1")
        url = b"".join(self._url)
        buf = self._buf
        if buf is None:
            body = b"".join(self._body)
        else:   # (exactly its Content-Length; a shorter one is not complete: belt and braces)
            body = buf if len(buf) == self._body_size else bytes(buf[:self._body_size])
        self.queue.append(_Request(method, url, body, self.parser.should_keep_alive(),
                                   self._headers))
        self._reset()
        self.state = "idle"
        self._unlist()    # (a request waits: no clock runs until it is answered)

    # -- answering ----------------------------------------------------------------------------
    def _next(self):
        """Answer the complete requests in order: in the loop, or on a worker thread (then
        the connection reads nothing more until that answer is written)."""
        server = self.server
        while not self.busy and self.queue and not self.closing:
            request = self.queue.popleft()
            path = _path(request.url)
            self.busy = True
            if server.api.inline(request.method, path, len(request.body)):
                self._answer(request, server.respond(request.method, path, request.body,
                                                     request.headers))
                continue
            self.transport.pause_reading()
            future = server.pool.submit(server.respond, request.method, path, request.body,
                                        request.headers)
            future.add_done_callback(functools.partial(self._hand_back, request))
        self._relist()

    def _hand_back(self, request, future):
        """(worker thread) Pass a finished answer to the event loop, if it still runs."""
        try:
            self.server.loop.call_soon_threadsafe(self._answer_future, request, future)
        except RuntimeError:   # the server closed meanwhile (past its drain grace)
            pass

    def _answer_future(self, request, future):
        try:
            answer = future.result()
        except Exception as exc:  # noqa: BLE001  (respond never raises; belt and braces)
            log.exception("REST request failed")
            answer = (500, "application/json", _error_body(f"Internal error: {exc}"))
        if not self.closing:
            self.transport.resume_reading()
        self._answer(request, answer)
        self._next()

    def _answer(self, request, answer):
        self.busy = False
        self.served += 1
        if self.closing:
            return
        status, ctype, body = answer[:3]
        extra = answer[3] if len(answer) > 3 else b""   # further header lines, CRLF-ended
        keep = request.keep_alive and not self.close_after_queue
        self.transport.write(b"".join((
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
                status, REASONS.get(status, "Error").encode(), ctype.encode("latin-1"),
                len(body), (b"" if keep else b"Connection: close\r\n") + (
                    b"Allow: GET, POST\r\n" if status == 405 else b"") + extra), body)))
        if not keep:
            self._drop()
            self.transport.close()

    def _fail(self, status, message):
        """Answer an HTTP-level error and close the connection (what follows is unparsable)."""
        self._drop()
        body = _error_body(message)
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (
                                 status, REASONS[status].encode(), len(body), body))
        self.transport.close()


def _expire(conn, state, since):
    try:
        conn.expire(state, since)
    except Exception:  # noqa: BLE001  (a socket error must not stop the sweep)
        log.exception("Closing an expired HTTP connection failed")
        conn._drop()


def _path(url):
    """The request target's path as sent (still URL-encoded; TF Serving matches routes before
    decoding, so %2F in a name never splits it), without the query."""
    if not url.startswith(b"/"):      # absolute-form ("http://host/path") or garbage
        try:
            url = httptools.parse_url(url).path or b""
        except httptools.HttpParserInvalidURLError:
            url = b""
    return url.split(b"?", 1)[0].split(b"#", 1)[0].decode("utf-8", "replace")


class HttpServer:
    """``api`` (a RestApi) served on ``host:port``: bound at construction, served by ``start``.

    Args:
        api: has ``handle(method, path, read_body, headers)`` (``headers``: the
            ``READ_HEADERS`` sent, or None; it answers ``(status, content_type, body)`` or
            with a fourth item, more CRLF-ended header lines), ``inline(method, path,
            body_bytes)`` and ``max_body_bytes``.
        threads: worker threads for requests not answered in the event loop.
        connection_limit: open connections at once; a newcomer past it takes the slot of
            the oldest idle or incomplete one, or is answered 503 when all run requests.
        channel_timeout: seconds an idle connection (connected, or between requests) is
            kept open.
        max_header_bytes: request line plus headers. Defaults to 64 KiB.
        header_timeout: seconds from a request's first byte to the end of its headers
            (408 past it). Defaults to 20 (Apache's mod_reqtimeout).
        body_timeout / body_min_rate: the body must arrive within ``body_timeout`` s plus
            1 s per ``body_min_rate`` bytes received (408 past it); a rate of 0 gives a fixed
            deadline. Defaults to 20 and 500 (Apache's ``body=20,MinRate=500``).
    """

    def __init__(self, api, host, port, threads=16, connection_limit=256, channel_timeout=30,
                 max_header_bytes=64 << 10, header_timeout=20, body_timeout=20,
                 body_min_rate=500):
        self.api, self.connection_limit, self.channel_timeout = api, connection_limit, \
            channel_timeout
        self.header_timeout, self.body_timeout = header_timeout, body_timeout
        self.body_min_rate = body_min_rate
        self.max_body_bytes, self.max_header_bytes = api.max_body_bytes, max_header_bytes
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.port = sock.getsockname()[1]
        self.connections = set()
        # state -> {connection: when it entered that state}, oldest first
        self.states = {state: OrderedDict() for state in STATES}
        self.pool = concurrent.futures.ThreadPoolExecutor(threads, "tfdeploy-rest")
        # (every connection's reads outside a known-length body; the loop thread parses each
        # read before the next, so one buffer serves them all)
        self.read_buffer = bytearray(READ_BUFFER)
        self.read_view = memoryview(self.read_buffer)
        self.loop = self._server = self._thread = None

    def respond(self, method, path, body, headers=None):
        """``(status, content_type, body[, extra_header_bytes])`` of one request; never
        raises."""
        if method not in ("GET", "POST"):
            return 405, "application/json", _error_body(
                f"Method {method} is not allowed; use GET or POST.")
        try:
            return self.api.handle(method, path, lambda: body, headers)
        except Exception as exc:  # noqa: BLE001  (api.handle answers errors itself)
            log.exception("REST request %s %s failed", method, path)
            return 500, "application/json", _error_body(f"Internal error: {exc}")

    def start(self):
        ready = threading.Event()

        def run():
            loop = self.loop = _new_loop()
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(loop.create_server(
                lambda: _Connection(self), sock=self._sock, backlog=1024))
            loop.call_later(SWEEP_SECONDS, self._sweep)
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="tfdeploy-rest")
        self._thread.start()
        ready.wait(30)

    def _sweep(self):
        """Close connections past their state's deadline (runs every ``SWEEP_SECONDS`` in
        the loop): idle and head connections expire in the order they were listed, so only
        the expired ones and one live one are looked at; body ones are scanned."""
        now = time.monotonic()
        try:
            for state, timeout in (("idle", self.channel_timeout),
                                   ("head", self.header_timeout)):
                table = self.states[state]
                while table:
                    conn, since = next(iter(table.items()))
                    if now - since < timeout:
                        break
                    _expire(conn, state, since)     # (unlists it)
            rate = self.body_min_rate
            for conn, since in list(self.states["body"].items()):
                if now - since >= self.body_timeout + (conn._body_size / rate if rate else 0):
                    _expire(conn, "body", since)
        finally:
            self.loop.call_later(SWEEP_SECONDS, self._sweep)

    def evict(self):
        """Make room for a newcomer at the connection limit; False when nothing may go.

        Victims, oldest first within each kind: (1) a keep-alive connection between
        requests, answered at least ``EVICT_SERVED_AGE`` s ago (it was served; its client
        reconnects); (2) a connection still sending its request line and headers (a real
        client sends them in one packet, so one seen mid-head is trickling); (3) a connection
        that has sent nothing since it connected ``EVICT_FRESH_AGE`` s ago or more (a client
        that just connected has not had time to send its request, and must not lose its
        slot to a flood of reconnecting attackers); (4) a body upload older than that.
        Mid-request victims are answered 503; a connection running a request never goes.
        """
        now = time.monotonic()
        old, answered = now - EVICT_FRESH_AGE, now - EVICT_SERVED_AGE
        idle = self.states["idle"]
        victim = next((c for c, since in idle.items() if c.served and since <= answered), None)
        if victim is None and self.states["head"]:
            victim = next(iter(self.states["head"]))
        if victim is None:
            victim = next((c for c, since in idle.items() if not c.served and since <= old),
                          None)
        if victim is None:
            victim = next((c for c, since in self.states["body"].items() if since <= old),
                          None)
        if victim is None:
            return False
        if victim.state == "idle":
            victim._drop()
            victim.transport.close()
        else:
            victim._fail(503, f"The server holds its limit of {self.connection_limit} open "
                              "connections (--max_connections) and closed this one, the oldest "
                              "with an incomplete request, for a new client; send requests "
                              "promptly, or raise the limit.")
        return True

    def _in_loop(self, fn, timeout=5):
        """Run ``fn`` in the event loop and wait for it (directly when not running)."""
        if self._thread is None or not self._thread.is_alive() or self.loop.is_closed():
            return fn()
        done = threading.Event()

        def call():
            try:
                fn()
            finally:
                done.set()
        try:
            self.loop.call_soon_threadsafe(call)
        except RuntimeError:   # the loop closed meanwhile
            return None
        done.wait(timeout)

    def stop_accepting(self):
        """Close the listening socket; open connections carry on."""
        self._in_loop(lambda: self._server.close() if self._server else self._sock.close())

    def flush(self, timeout):
        """Wait up to ``timeout`` s until no connection holds a request or unsent bytes
        (answers already computed are written out); True when all are flushed."""
        end = time.monotonic() + timeout
        while True:
            busy = [c for c in list(self.connections) if c.busy or c.queue or (
                c.transport is not None and not c.transport.is_closing()
                and c.transport.get_write_buffer_size())]
            if not busy:
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.01)

    def close(self):
        """Close every connection, stop the loop and the worker threads."""
        def close_all():
            for conn in list(self.connections):
                conn.closing = True
                conn.transport.close()
            if self._server is not None:
                self._server.close()
            self.loop.call_later(0.05, self.loop.stop)   # let the closes reach the sockets
        if self._thread is not None and self._thread.is_alive():
            self._in_loop(close_all)
            self._thread.join(5)
        else:
            self._sock.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
