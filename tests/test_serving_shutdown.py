"""A server's end: SIGTERM stops ``tfdeploy serve --runtime auto`` with exit status 0 once it has
answered every request, and no runtime leaves a thread a signal stack that is no longer mapped.

OpenVINO's CPU plugin (one per ``openvino.Core``) gives the thread that makes it an alternate
signal stack and unmaps it when the plugin ends, putting back the stack it replaced. With one
Core per runner, ``auto`` (which loads every candidate on the loading thread, the server's main
thread, and closes the losers) left that thread's signal stack pointing at unmapped memory;
SIGTERM, handled on the main thread, then ended the server with SIGSEGV (or wrote the signal
frame over memory in use). ``tfdeploy.runtime.openvino`` now keeps one Core for the process.
"""

import ctypes
import gc
import http.client
import json
import signal
import threading

import numpy as np
import pytest

from test_serving_support import ServerProcess, choice_digits, digit_images, rest_call

pytest_plugins = ("test_serving_support",)


@pytest.fixture(scope="module")
def base(tmp_path_factory, train_ds):
    """The trained digits classifier with float and int8 ``.tflite`` files and an ``.onnx``
    beside its SavedModel (shared with test_serving_runtime_choice): ``auto`` loads it in
    LiteRT, ONNX Runtime and OpenVINO, keeps one and closes the others."""
    return choice_digits(tmp_path_factory, train_ds)


class _Stack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int),
                ("ss_size", ctypes.c_size_t)]


def _signal_stack():
    """This thread's alternate signal stack: "none", "mapped", or "unmapped" (a signal handled
    on this thread would then be a SIGSEGV)."""
    stack = _Stack()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack)) == 0
    if stack.ss_flags & 2:   # SS_DISABLE
        return "none"
    with open("/proc/self/maps") as f:
        for line in f:
            low, high = (int(a, 16) for a in line.split()[0].split("-"))
            if low <= stack.ss_sp and stack.ss_sp + stack.ss_size <= high:
                return "mapped"
    return "unmapped"


@pytest.mark.parametrize("order", ["made first, dropped first", "made last, dropped first"])
def test_openvino_runners_never_leave_the_thread_an_unmapped_signal_stack(base, order):
    from tfdeploy.runtime.openvino import OpenVINORunner

    path = str(base / "digits" / "1" / "model_float32.onnx")
    runners = [OpenVINORunner(path, num_threads=1), OpenVINORunner(path, num_threads=2)]
    assert _signal_stack() in ("none", "mapped")
    if order == "made last, dropped first":
        runners.reverse()
    while runners:
        runners.pop(0)
        gc.collect()
        assert _signal_stack() in ("none", "mapped"), f"{order}: {len(runners)} left"


def test_auto_leaves_the_loading_thread_a_mapped_signal_stack(base):
    from tfdeploy.serving import create_server

    server = create_server(model_name="digits", model_base_path=str(base / "digits"), port=None,
                           rest_api_port=0, file_system_poll_wait_seconds=0, runtime="auto")
    server.start()   # loads, verifies, times and closes the candidates on this thread
    try:
        status, reply = rest_call(server.rest_port, "GET", "/v1/models/digits/metadata")
        assert status == 200, reply
        rows = reply["metadata"]["runtime"]["candidates"]
        openvino = [r for r in rows if r["runtime"] == "openvino"]
        assert openvino and "cannot load" not in str(openvino[0].get("reason")), rows
        assert _signal_stack() in ("none", "mapped")
    finally:
        server.stop()
    assert _signal_stack() in ("none", "mapped")


#: Servers started, loaded, put under load and stopped with SIGTERM (each ~9 s of CPU).
SHUTDOWNS = 2


def test_sigterm_ends_an_auto_server_with_status_0_after_every_answer(base, monkeypatch):
    # The served process gets the environment an operator's shell gives it, not the one
    # importing tfdeploy gave this process (TF_USE_LEGACY_KERAS=1): that variable changes what
    # the server maps where, and with it the unmapped signal stack was reused by another
    # mapping and SIGTERM survived it (0 of 8 shutdowns died, 6 of 6 without it).
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    body = json.dumps({"instances": digit_images(1).tolist()}).encode()
    for attempt in range(SHUTDOWNS):
        server = ServerProcess(["--model_name=digits", f"--model_base_path={base / 'digits'}",
                                "--runtime=auto", "--file_system_poll_wait_seconds=0"])
        answers, errors = [], []

        def client(n):
            conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
            try:
                for _ in range(n):
                    conn.request("POST", "/v1/models/digits:predict", body)
                    reply = conn.getresponse()
                    answers.append((reply.status, json.loads(reply.read())))
            except Exception as exc:  # noqa: BLE001  (reported below)
                errors.append(exc)
            finally:
                conn.close()

        try:
            clients = [threading.Thread(target=client, args=(40,)) for _ in range(8)]
            for t in clients:
                t.start()
            for t in clients:
                t.join()
            assert not errors, errors
            assert len(answers) == 8 * 40
            assert all(status == 200 and len(r["predictions"]) == 1 for status, r in answers)
            first = answers[0][1]["predictions"][0]
            assert np.isclose(sum(first["probabilities"]), 1, atol=1e-3), first
            server.proc.send_signal(signal.SIGTERM)
            code = server.proc.wait(60)
            output = server.output()
            assert code == 0, (f"shutdown {attempt + 1}: exit status {code} "
                               f"(-11: SIGSEGV)\n{output[-3000:]}")
            assert "Server stopped." in output
        finally:
            server.close()
