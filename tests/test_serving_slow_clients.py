"""Deadlines for slow clients (tfdeploy.serving.httpserver) on real sockets: a trickling head
or body is cut with 408, a body at a decent rate is not, idle and mid-request connections
keep their own clocks, and trickling clients at the connection limit cannot lock valid ones
out (issue 20, item 3)."""

import os
import select
import socket
import threading
import time

import pytest

from test_serving_support import build_half_plus_two, build_hold_model, rest_call

PREDICT = b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\n"
IDLE, HEAD, BODY, RATE = 1, 2.5, 1.0, 500     # the flags of the `tight` server


@pytest.fixture(scope="module")
def half_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("slow") / "half"
    build_half_plus_two(str(base / "1"))
    return str(base)


@pytest.fixture(scope="module")
def tight(half_base):
    """half_plus_two with short deadlines: 1 s idle, 2.5 s head, body 1 s + 1 s per 500 B."""
    from tfdeploy.serving import create_server

    server = create_server(model_name="half", model_base_path=half_base, port=None,
                           rest_api_port=0, file_system_poll_wait_seconds=0,
                           http_idle_timeout_seconds=IDLE, http_header_timeout_seconds=HEAD,
                           http_body_timeout_seconds=BODY,
                           http_body_min_bytes_per_second=RATE).start()
    yield server
    server.stop()


def trickle(port, first, drip, interval, limit, piece=1):
    """Send ``first`` at once, then ``piece`` bytes of ``drip`` every ``interval`` s, reading
    whatever comes back. Returns ``(reply, seconds)`` once the server closes, or
    ``(reply, None)`` if it is still open after ``limit`` s."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        start = time.monotonic()
        s.sendall(first)
        reply, sent, next_send = b"", 0, start + interval
        while time.monotonic() - start < limit:
            ready, _, _ = select.select([s], [], [], max(0.0, next_send - time.monotonic()))
            if ready:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    return reply, time.monotonic() - start
                reply += chunk
                continue
            if sent < len(drip):
                try:
                    s.sendall(drip[sent:sent + piece])
                except OSError:      # (closed by the server: read what it answered)
                    pass
                sent += piece
            next_send += interval
        return reply, None


def padded_body(size):
    """A valid predict body of exactly ``size`` bytes (JSON padded with spaces)."""
    core = b'{"instances": [1.0]'
    return core + b" " * (size - len(core) - 1) + b"}"


def test_trickling_head_is_cut_at_its_deadline(tight):
    """One byte every 0.1 s never completes the headers: 408 at the head deadline, counted
    from the request's first byte (before: every byte restarted the idle timer, forever)."""
    reply, took = trickle(tight.rest_port, PREDICT, b"X-Pad: " + b"a" * 1000, 0.1, HEAD + 4)
    assert took is not None, "a trickling head was never cut"
    assert reply.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), reply[:200]
    assert b"--http_header_timeout_seconds" in reply and b"Connection: close" in reply
    assert HEAD - 0.1 <= took <= HEAD + 1.5, took


def test_trickling_body_below_the_minimum_rate_is_cut(tight):
    """Headers at once, then a 5,000-byte body at 10 B/s (the minimum is 500 B/s): 408 once
    the body deadline (1 s plus 1 s per 500 bytes received) passes."""
    head = PREDICT + b"Content-Length: 5000\r\n\r\n"
    reply, took = trickle(tight.rest_port, head, padded_body(5000), 0.1, BODY + 4)
    assert took is not None, "a trickling body was never cut"
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
    assert b"--http_body_min_bytes_per_second" in reply, reply
    assert BODY - 0.1 <= took <= BODY + 1.5, took


def test_body_at_a_decent_rate_is_not_cut(tight):
    """A 4,000-byte body at ~2,000 B/s takes ~2 s, twice the base body deadline: the deadline
    grows with the bytes received, so it is answered 200 (a fixed deadline would cut it)."""
    head = PREDICT + b"Content-Length: 4000\r\n\r\n"
    reply, took = trickle(tight.rest_port, head, padded_body(4000), 0.1, 10, piece=200)
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:300]
    assert reply.endswith(b'{"predictions": [2.5]}')
    # (the client keeps the connection: it ends at the idle timeout after the answer)
    assert took is not None and took > 1.5 * BODY, took


def test_idle_and_mid_request_connections_keep_their_own_clocks(tight):
    """An idle keep-alive connection closes after --http_idle_timeout_seconds; one that sent
    half a request head and stalled is governed by the head deadline (408 at 2.5 s), not by
    the idle timeout (1 s), whose silent close would leave the client guessing."""
    port = tight.rest_port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as keep, \
            socket.create_connection(("127.0.0.1", port), timeout=10) as partial:
        partial.sendall(PREDICT + b"Content-Le")
        start = time.monotonic()
        keep.sendall(PREDICT + b"Content-Length: 20\r\n\r\n" + b'{"instances": [1.0]}')
        assert keep.recv(4096).endswith(b'{"predictions": [2.5]}')
        answered = time.monotonic()
        assert keep.recv(10) == b""
        idle = time.monotonic() - answered
        assert IDLE - 0.1 <= idle <= IDLE + 1.0, idle
        reply = b""
        while chunk := partial.recv(4096):
            reply += chunk
        took = time.monotonic() - start
    assert reply.startswith(b"HTTP/1.1 408 ") and b"--http_header_timeout_seconds" in reply, \
        reply[:200]
    assert HEAD - 0.1 <= took <= HEAD + 1.5, took


def test_a_running_request_has_no_deadline_and_a_full_table_of_them_refuses(tmp_path):
    """A request running longer than every deadline is answered; when every connection
    runs a request, a newcomer is answered 503 naming --max_connections."""
    from tfdeploy.serving import create_server

    build_hold_model(str(tmp_path / "hold" / "1"))
    server = create_server(model_name="hold", model_base_path=str(tmp_path / "hold"), port=None,
                           rest_api_port=0, file_system_poll_wait_seconds=0, max_connections=1,
                           http_idle_timeout_seconds=1, http_header_timeout_seconds=0.5,
                           http_body_timeout_seconds=0.5).start()
    flag = tmp_path / "flag"
    flag.mkdir()
    result = {}
    thread = threading.Thread(target=lambda: result.update(reply=rest_call(
        server.rest_port, "POST", "/v1/models/hold:predict",
        {"signature_name": "hold", "inputs": {"dir": str(flag)}}, timeout=30)))
    try:
        thread.start()
        for _ in range(300):
            if (flag / "started").exists():
                break
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as s:
            reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 503 ") and b"--max_connections" in reply, reply
        time.sleep(1.5)                     # past the idle, head and body deadlines
        assert thread.is_alive()
    finally:
        (flag / "release").write_text("1")
        thread.join(30)
        server.stop()
    assert result["reply"][0] == 200, result


def test_at_the_limit_the_oldest_head_then_the_oldest_silent_connection_makes_room(half_base):
    """Limit 3, default deadlines: a newcomer takes the slot of the connection still
    sending its head (answered 503 naming --max_connections), then, once it has been silent
    for EVICT_FRESH_AGE, of the connection that never sent anything; a body in progress is
    kept and completes (before: each newcomer was answered 503)."""
    from tfdeploy.serving.httpserver import EVICT_FRESH_AGE
    from tfdeploy.serving import create_server

    server = create_server(model_name="half", model_base_path=half_base, port=None,
                           rest_api_port=0, file_system_poll_wait_seconds=0,
                           max_connections=3).start()
    port, body = server.rest_port, b'{"instances": [1.0]}'
    request = PREDICT + b"Connection: close\r\nContent-Length: 20\r\n\r\n" + body

    def connect(first=b""):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(first)
        time.sleep(0.1)      # (in this order on the server)
        return s

    def read_all(s):
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
        return reply

    try:
        uploading = connect(PREDICT + b"Content-Length: 20\r\n\r\n" + body[:5])
        heading = connect(PREDICT + b"Content-Le")
        idle = connect()
        with connect(request) as newcomer:
            assert read_all(newcomer).endswith(b'{"predictions": [2.5]}')
        reply = read_all(heading)
        assert reply.startswith(b"HTTP/1.1 503 ") and b"--max_connections" in reply, reply
        later = connect()
        with connect() as newcomer:     # idle and later are too young to go: refused
            assert read_all(newcomer).startswith(b"HTTP/1.1 503 ")
        time.sleep(EVICT_FRESH_AGE)
        with connect(request) as newcomer:
            assert read_all(newcomer).endswith(b'{"predictions": [2.5]}')
        assert read_all(idle) == b""                          # closed silently
        uploading.sendall(body[5:])
        assert uploading.recv(4096).endswith(b'{"predictions": [2.5]}')
        for s in (uploading, idle, heading, later):
            s.close()
    finally:
        server.stop()


def test_trickling_clients_at_the_connection_limit_do_not_lock_valid_ones_out(half_base):
    """Limit 16, default deadlines: 12 trickling and 6 idle connections, reopened whenever
    the server closes them, while a client makes 30 valid requests on fresh connections.
    Every valid request gets 200: a newcomer takes the slot of the oldest idle connection,
    else of the oldest incomplete request (before: 503 while the table was full)."""
    from tfdeploy.serving import create_server

    server = create_server(model_name="half", model_base_path=half_base, port=None,
                           rest_api_port=0, file_system_poll_wait_seconds=0,
                           max_connections=16).start()
    port, stop, closed = server.rest_port, threading.Event(), {"trickle": 0, "idle": 0}

    def attack():
        def connect(kind):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if kind == "trickle":
                s.sendall(PREDICT + b"X-Pad: ")
            return s
        socks = {connect(kind): kind for kind in ["trickle"] * 12 + ["idle"] * 6}
        while not stop.is_set():
            ready, _, _ = select.select(list(socks), [], [], 0.5)
            for s in ready:
                try:
                    gone = not s.recv(65536)
                except OSError:
                    gone = True
                if gone:
                    kind = socks.pop(s)
                    s.close()
                    closed[kind] += 1
                    socks[connect(kind)] = kind
            for s, kind in list(socks.items()):
                if kind == "trickle":
                    try:
                        s.send(b"a")
                    except OSError:
                        pass
        for s in socks:
            s.close()

    def valid(i):
        try:
            return rest_call(port, "POST", "/v1/models/half:predict", {"instances": [float(i)]},
                             timeout=10)[0]
        except OSError as exc:     # (a broken pipe or reset: the request was refused too)
            return repr(exc)

    attacker = threading.Thread(target=attack)
    attacker.start()
    try:
        time.sleep(1.0)
        statuses = [valid(i) for i in range(30)]
    finally:
        stop.set()
        attacker.join(10)
        server.stop()
    assert statuses == [200] * 30, (statuses, closed)
    assert closed["idle"] + closed["trickle"] >= 2, closed   # (made room by closing some)


def test_deadline_flags_are_validated():
    from tfdeploy.serving import create_server

    for name in ("http_header_timeout_seconds", "http_body_timeout_seconds",
                 "http_body_min_bytes_per_second"):
        with pytest.raises(ValueError, match=f"--{name} must be a finite number"):
            create_server(model_name="m", model_base_path=os.devnull, **{name: -1})
