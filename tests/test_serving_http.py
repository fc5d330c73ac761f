"""The HTTP layer (tfdeploy.serving.httpserver) on real sockets: pipelining, 100-continue,
header/body/connection limits, idle timeout, and slow model calls kept off the event loop."""

import socket
import threading
import time

import pytest

from test_serving_support import build_half_plus_two, rest_call
from test_serving_support import raw_exchange as _exchange

PREDICT = b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\n"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """half_plus_two behind tight limits: 1,000-byte bodies, 3 connections, 1 s idle."""
    from tfdeploy.serving import create_server

    base = tmp_path_factory.mktemp("http") / "half"
    build_half_plus_two(str(base / "1"))
    server = create_server(model_name="half", model_base_path=str(base), port=None,
                           rest_api_port=0, file_system_poll_wait_seconds=0,
                           max_body_bytes=1000, max_connections=3,
                           http_idle_timeout_seconds=1).start()
    yield server
    server.stop()


def test_pipelined_requests_and_expect_continue(small):
    port = small.rest_port
    # two requests in one packet: both answered, in order, the second closing
    one = PREDICT + b'Content-Length: 20\r\n\r\n{"instances": [1.0]}'
    two = b"GET /v1/models/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    replies = _exchange(port, one + two).split(b"HTTP/1.1 ")[1:]
    assert len(replies) == 2, replies
    assert replies[0].startswith(b"200 ") and replies[0].endswith(b'{"predictions": [2.5]}')
    assert replies[1].startswith(b"404 ") and b"Connection: close" in replies[1]
    # Expect: 100-continue (curl sends it for large bodies): the interim answer first
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(PREDICT + b"Content-Length: 20\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b'{"instances": [2.0]}')
        assert s.recv(4096).endswith(b'{"predictions": [3.0]}')


def test_header_body_and_connection_limits(small):
    port = small.rest_port
    # request line + headers past 64 KiB: 431, whatever follows
    reply = _exchange(port, b"GET /v1/models/half HTTP/1.1\r\nHost: x\r\nX-Big: "
                      + b"a" * (65 << 10) + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 431 ") and reply.count(b"HTTP/1.1 ") == 1
    # a chunked body (no Content-Length to check up front) is cut off once past the limit
    chunk = b'{"instances": [' + b"1.0, " * 300 + b"1.0]}"
    reply = _exchange(port, PREDICT + b"Transfer-Encoding: chunked\r\n\r\n"
                      + b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk))
    assert reply.startswith(b"HTTP/1.1 413 ") and b"1000-byte limit" in reply, reply[:200]
    # a small chunked body is read whole
    small_body = b'{"instances": [4.0]}'
    reply = _exchange(port, PREDICT + b"Transfer-Encoding: chunked\r\n\r\n"
                      + b"%x\r\n%s\r\n0\r\n\r\n" % (len(small_body), small_body))
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b'{"predictions": [4.0]}')
    # --max_connections: at the limit a newcomer takes the slot of the oldest keep-alive
    # connection idle between requests (the eviction order: tests/test_serving_slow_clients.py)
    held = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(3)]
    try:
        for h in held:
            h.sendall(PREDICT + b"Content-Length: 20\r\n\r\n" + b'{"instances": [1.0]}')
            assert h.recv(4096).endswith(b'{"predictions": [2.5]}')
        time.sleep(0.4)
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            held[0].settimeout(0.6)
            assert held[0].recv(10) == b""     # closed at once (its idle timeout is 1 s)
            s.sendall(PREDICT + b"Content-Length: 20\r\n\r\n" + b'{"instances": [1.0]}')
            assert s.recv(4096).endswith(b'{"predictions": [2.5]}')
        # --http_idle_timeout_seconds (1 s here): idle connections are closed by the server
        for s in held[1:]:
            s.settimeout(5)
            assert s.recv(10) == b""
    finally:
        for s in held:
            s.close()
    assert rest_call(port, "GET", "/v1/models/half")[0] == 200


def test_slow_model_calls_run_off_the_event_loop(small):
    """A model call that recently took long runs on a worker thread: a status request sent
    while it runs is answered before it ends (answered in the loop, it would wait)."""
    port, path = small.rest_port, "/v1/models/half:predict"
    slow = {"signature_name": "slow", "inputs": {"n": 30000}}
    start = time.monotonic()
    assert rest_call(port, "POST", path, slow)[0] == 200      # now known to be slow
    took = time.monotonic() - start
    assert took > 0.05, took   # (the 'slow' signature must be slow for this test to mean much)
    done = {}

    def run():
        rest_call(port, "POST", path, slow)
        done["slow"] = time.monotonic()
    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(min(0.3 * took, 0.5))
    assert rest_call(port, "GET", "/v1/models/half")[0] == 200
    done["status"] = time.monotonic()
    thread.join()
    assert done["status"] < done["slow"], (done, took)


def test_first_calls_and_large_bodies_run_off_the_event_loop(tmp_path):
    """A fast model's request with a large body (decoding it takes time whatever the model)
    and a model's first call run on worker threads: a status request sent meanwhile is
    answered first (answered in the loop, it would wait for them)."""
    import http.client

    from tfdeploy.serving import create_server

    build_half_plus_two(str(tmp_path / "half" / "1"))
    server = create_server(model_name="half", model_base_path=str(tmp_path / "half"), port=None,
                           rest_api_port=0, file_system_poll_wait_seconds=0).start()
    port, path = server.rest_port, "/v1/models/half:predict"
    api = server._rest
    try:
        assert not api.inline("POST", path, 10)   # before any call: not in the loop
        for _ in range(60):   # until its recent calls average under INLINE_SECONDS
            assert rest_call(port, "POST", path, {"instances": [1.0]})[0] == 200
            if api.inline("POST", path, 10):
                break
        assert api.inline("POST", path, 10) and not api.inline("POST", path, 1 << 20)
        big = b'{"instances": [' + b",".join([b"1.5"] * 3_000_000) + b"]}"   # 12 MB

        def answered():
            """When the big request's answer starts to arrive (the server is done with it)."""
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("POST", path, body=big)
            resp = conn.getresponse()
            done["big"] = time.monotonic()
            assert resp.status == 200, resp.read()[:200]
            resp.read()
            conn.close()

        done = {}
        thread = threading.Thread(target=answered)
        thread.start()
        deadline = time.monotonic() + 30
        while api._active == 0 and time.monotonic() < deadline:   # the server is on it
            time.sleep(0.001)
        sent = time.monotonic()
        assert rest_call(port, "GET", "/v1/models/half")[0] == 200
        waited = time.monotonic() - sent
        thread.join()
        remaining = done["big"] - sent
        # Answered while the big request is still being handled, not after it.
        assert remaining > 0.05, remaining   # (it must be slow for this test to mean much)
        assert waited < 0.5 * remaining, (waited, remaining)
    finally:
        server.stop()


class _Echo:
    """An API that answers each body's length and SHA-256 (what the server handed on)."""

    max_body_bytes = 4 << 20

    def __init__(self):
        self.bodies = []

    def inline(self, method, path, body_bytes=0):
        return body_bytes <= 65536   # (both ways: the loop and the worker threads)

    def handle(self, method, path, read_body, headers=None):
        import hashlib
        import json

        body = read_body()
        self.bodies.append(body)
        return 200, "application/json", json.dumps(
            {"n": len(body), "sha": hashlib.sha256(body).hexdigest()}).encode()


def _reply_json(data):
    import json

    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), data[:300]
    return json.loads(body)


def _read_replies(sock, count):
    """``count`` whole answers (Content-Length framed) from a keep-alive socket."""
    data, out = b"", []
    while len(out) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            length = int(data[:head_end].split(b"Content-Length: ")[1].split(b"\r\n")[0])
            if len(data) >= head_end + 4 + length:
                out.append(_reply_json(data[:head_end + 4 + length]))
                data = data[head_end + 4 + length:]
                continue
        chunk = sock.recv(1 << 16)
        assert chunk, out
        data += chunk
    return out


def test_bodies_arrive_whole_however_the_socket_delivers_them():
    """A known-length body is read straight into its own growing buffer (httpserver's
    docstring): whatever the reads look like (the body in the head's packet, in hundreds
    of small pieces, larger than the first allocation, followed by a pipelined request,
    chunked), the API gets exactly the bytes sent."""
    import hashlib
    import random

    from tfdeploy.serving.httpserver import BODY_FIRST_BYTES, READ_BUFFER, HttpServer

    api = _Echo()
    server = HttpServer(api, "127.0.0.1", 0)
    server.start()
    rng = random.Random(0)

    def body(n):
        return bytes(rng.getrandbits(8) for _ in range(n))

    def post(data, extra=b""):
        return (b"POST /x HTTP/1.1\r\nHost: x\r\n" + extra
                + b"Content-Length: %d\r\n\r\n" % len(data))

    def expect(reply, data):
        assert reply == {"n": len(data), "sha": hashlib.sha256(data).hexdigest()}

    try:
        big = body(3 * READ_BUFFER + 12345)   # past the first allocation and one read
        assert len(big) > 4 * BODY_FIRST_BYTES
        small, medium = body(300), body(BODY_FIRST_BYTES + 1)
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # 1. head and whole body in one write
            s.sendall(post(big) + big)
            expect(_read_replies(s, 1)[0], big)
            # 2. the head with the body's first bytes, then the rest in 400 small pieces
            s.sendall(post(medium) + medium[:10])
            for i in range(10, len(medium), 164):
                s.sendall(medium[i:i + 164])
                if i % 4000 < 164:
                    time.sleep(0.002)    # (so that the server reads many times)
            expect(_read_replies(s, 1)[0], medium)
            # 3. a large body and two pipelined requests in one write: each body exact
            s.sendall(post(big) + big + post(small) + small + post(medium) + medium)
            for reply, data in zip(_read_replies(s, 3), (big, small, medium)):
                expect(reply, data)
            # 4. a chunked body in many chunks (the size is not known up front)
            chunks = [medium[i:i + 1000] for i in range(0, len(medium), 1000)]
            s.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n")
            expect(_read_replies(s, 1)[0], medium)
            # 5. the head alone, then the body byte by byte near its start
            s.sendall(post(small))
            time.sleep(0.05)
            for i in range(0, 20):
                s.sendall(small[i:i + 1])
            s.sendall(small[20:])
            expect(_read_replies(s, 1)[0], small)
        assert [len(b) for b in api.bodies] == [len(big), len(medium), len(big), len(small),
                                                len(medium), len(medium), len(small)]
    finally:
        server.close()


def test_a_large_body_in_small_pieces_decodes_as_one_sent_at_once(tmp_path):
    """A real model: a ~600 KB predict body trickled in 1,000-byte pieces is answered exactly
    as the same body sent in one write (half_plus_two: x / 2 + 2 for every value)."""
    import json

    from tfdeploy.serving import create_server

    build_half_plus_two(str(tmp_path / "half" / "1"))
    server = create_server(model_name="half", model_base_path=str(tmp_path / "half"), port=None,
                           rest_api_port=0, file_system_poll_wait_seconds=0).start()
    values = [round(i * 0.25 - 5000.0, 2) for i in range(60000)]
    data = json.dumps({"instances": values}).encode()
    head = PREDICT + b"Content-Length: %d\r\n\r\n" % len(data)
    try:
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=60) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(head + data)
            whole = _read_replies(s, 1)[0]
            s.sendall(head)
            for i in range(0, len(data), 1000):
                s.sendall(data[i:i + 1000])
                if i % 50000 == 0:
                    time.sleep(0.005)
            pieces = _read_replies(s, 1)[0]
        assert whole == pieces == {"predictions": [v / 2 + 2 for v in values]}
    finally:
        server.stop()


def test_an_announced_body_holds_memory_in_proportion_to_what_arrived():
    """A client announcing a 4 MB body and sending 100 KB of it makes the server hold at most
    twice what arrived (the body buffer doubles as it fills), not the 4 MB announced; the
    rest arriving completes it exactly."""
    import hashlib

    from tfdeploy.serving.httpserver import BODY_FIRST_BYTES, HttpServer

    api = _Echo()
    server = HttpServer(api, "127.0.0.1", 0)
    server.start()
    data = bytes(range(256)) * (api.max_body_bytes // 256)
    sent = 100 << 10
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(data)
                      + data[:sent])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                held = [c for c in list(server.connections) if c._body_size]
                if held and held[0]._body_size == sent:
                    break
                time.sleep(0.01)
            (conn,) = held
            assert conn._body_size == sent
            assert len(conn._buf) <= max(BODY_FIRST_BYTES, 2 * sent) < len(data) // 4
            s.sendall(data[sent:])
            assert _read_replies(s, 1)[0] == {"n": len(data),
                                              "sha": hashlib.sha256(data).hexdigest()}
    finally:
        server.close()
