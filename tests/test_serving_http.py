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
        big = b'{"instances": [' + b",".join([b"1.5"] * 1_500_000) + b"]}"   # 6 MB

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
