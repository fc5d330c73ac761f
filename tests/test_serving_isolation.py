"""IsolatedModel: a model run in worker processes survives inputs that abort TensorFlow.

The hazard (issue 20): with oneDNN on, a TF1 placeholder of unknown rank feeding ``conv2d``
passes any signature validation, and a rank-1 feed fails a CHECK in MklConvOp that aborts the
process. ``test_rank1_feed_aborts_a_plain_process`` shows that on this machine first; the other
tests run the same model through ``IsolatedModel`` with oneDNN forced on in the workers.
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from tfdeploy.serving.isolation import IsolatedModel, backoff_delay
from tfdeploy.serving.status import ServingError

ONEDNN = {"TF_ENABLE_ONEDNN_OPTS": "1"}
READY_S = 240          # a worker imports TF and loads the model (slow on a shared 2-core box)
SLOW_N = 100_000       # iterations of the "slow" signature's while loop (a second or more here)
GOOD = np.arange(2 * 5 * 5, dtype=np.float32).reshape(2, 5, 5, 1)
BAD = np.ones(3, np.float32)   # rank 1: aborts MklConvOp


def build_unknown_rank_conv(path):
    """TF1 SavedModel: ``serving_default`` is conv2d on a placeholder of unknown rank; ``slow``
    counts to ``n``; ``reshape`` reshapes ``v`` to [2, 2] (an OpError for other sizes)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, None, name="x")     # unknown rank: nothing to validate
        kernel = tf.reshape(tf.range(18, dtype=tf.float32), [3, 3, 1, 2])
        y = tf.nn.conv2d(x, kernel, strides=1, padding="SAME", name="y")
        n = v1.placeholder(tf.int32, [], name="n")
        loop = tf.while_loop(lambda i, s: i < n, lambda i, s: (i + 1, s + 1.0),
                             [tf.constant(0), tf.constant(0.0)])[1]
        v = v1.placeholder(tf.float32, [None], name="v")
        info = v1.saved_model.utils.build_tensor_info
        sig = v1.saved_model.signature_def_utils.build_signature_def
        predict = "tensorflow/serving/predict"
        signatures = {
            "serving_default": sig({"x": info(x)}, {"y": info(y)}, predict),
            "slow": sig({"n": info(n)}, {"s": info(loop)}, predict),
            "reshape": sig({"v": info(v)}, {"r": info(tf.reshape(v, [2, 2]))}, predict),
        }
        with v1.Session(graph=graph) as sess:
            builder = v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=signatures)
            builder.save()
    return path


def _children(pid):
    """``{child pid: state letter}`` of the processes whose parent is ``pid`` (from /proc)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            found[int(entry)] = fields[0]
    return found


def _descendants(pid):
    """``{pid: state letter}`` of every process below ``pid`` (workers are forked by a fork
    server, our child, so they are our grandchildren)."""
    found, todo = {}, [pid]
    while todo:
        children = _children(todo.pop())
        found.update(children)
        todo += children
    return found


def _parent(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def _threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def _exists(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"   # a zombie does not count as running
    except OSError:
        return False


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return build_unknown_rank_conv(str(tmp_path_factory.mktemp("isolation") / "conv"))


@pytest.fixture(scope="module")
def expected(model_path):
    """The outputs of the valid call, run in this process."""
    import tensorflow as tf

    loaded = tf.saved_model.load(model_path, tags=["serve"])
    out = loaded.signatures["serving_default"](x=tf.constant(GOOD))
    return {k: v.numpy() for k, v in out.items()}


@pytest.fixture(scope="module")
def model(model_path):
    m = IsolatedModel(model_path, env=ONEDNN, restart_backoff=(0.2, 5.0))
    server = _parent(m.pids[0])     # the fork server (shared with the other ONEDNN models)
    yield m
    pids = [p for p in m.pids if p]
    m.close()
    assert not any(_exists(p) for p in pids)
    assert not _exists(server), "the fork server outlived the last model that used it"


@pytest.fixture
def isolated(model):
    """The shared model, with a worker ready (an earlier test may have crashed it)."""
    assert model.wait_ready(READY_S), "the worker was not restarted"
    return model


def _call(model, key, feeds, timeout=60):
    """``model.call`` in a daemon thread: fails the test instead of hanging it."""
    box = []

    def run():
        try:
            box.append(model.call(key, feeds))
        except BaseException as exc:  # noqa: BLE001
            box.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert box, f"call({key!r}) did not return within {timeout} s"
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def _assert_outputs(got, expected):
    assert set(got) == set(expected)
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-6)


def test_rank1_feed_aborts_a_plain_process(model_path):
    """The hazard is real here: without isolation the bad feed ends the process (SIGABRT)."""
    script = textwrap.dedent("""
        import sys, numpy as np, tensorflow as tf
        m = tf.saved_model.load(sys.argv[1], tags=["serve"])
        f = m.signatures["serving_default"]
        print("valid", f(x=tf.constant(np.ones((1, 4, 4, 1), np.float32)))["y"].shape, flush=True)
        f(x=tf.constant(np.ones(3, np.float32)))
        print("survived", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script, model_path], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **ONEDNN})
    tail = proc.stderr[-1500:]
    if "oneDNN custom operations are on" not in proc.stderr:
        pytest.fail("TF_ENABLE_ONEDNN_OPTS=1 did not turn oneDNN on in a subprocess (no "
                    "'oneDNN custom operations are on' line), so this machine cannot show the "
                    f"abort these tests guard against. stderr tail:\n{tail}")
    assert "valid (1, 4, 4, 2)" in proc.stdout, tail
    assert proc.returncode == -signal.SIGABRT, (
        f"expected the rank-1 feed to abort the process (SIGABRT), got returncode "
        f"{proc.returncode}; stdout {proc.stdout!r}; stderr tail:\n{tail}")
    assert "Check failed" in proc.stderr


def test_workers_run_with_onednn_on(isolated):
    info = isolated.worker_info[0]
    assert info["onednn"] is True, f"oneDNN is off in the worker: {info}"
    assert info["pid"] != os.getpid() and info["pid"] in _descendants(os.getpid())
    assert sorted(info["signatures"]) == ["reshape", "serving_default", "slow"]


def test_abort_is_unavailable_and_the_worker_is_replaced(isolated, expected, caplog):
    caplog.set_level("ERROR", logger="tfdeploy.serving")
    _assert_outputs(isolated.call("serving_default", {"x": GOOD}), expected)
    old_pid, restarts = isolated.pids[0], isolated.restarts
    with pytest.raises(ServingError) as err:
        _call(isolated, "serving_default", {"x": BAD})
    assert err.value.code == "UNAVAILABLE" and err.value.http_status == 503
    assert "worker process ended" in err.value.message and "SIGABRT" in err.value.message
    assert any("SIGABRT" in r.getMessage() and str(old_pid) in r.getMessage()
               for r in caplog.records if r.name == "tfdeploy.serving"), caplog.text
    assert isolated.wait_ready(READY_S)
    assert isolated.pids[0] != old_pid and not _exists(old_pid)
    assert isolated.restarts == restarts + 1
    for _ in range(3):
        _assert_outputs(isolated.call("serving_default", {"x": GOOD}), expected)


def test_model_errors_come_back_and_the_worker_survives(isolated):
    pid = isolated.pids[0]
    with pytest.raises(ServingError) as err:
        isolated.call("reshape", {"v": np.ones(3, np.float32)})
    assert err.value.code == "INVALID_ARGUMENT"
    assert "reshape" in err.value.message.lower()
    with pytest.raises(ServingError) as err:
        isolated.call("no_such_signature", {"v": np.ones(4, np.float32)})
    assert err.value.code == "FAILED_PRECONDITION"
    out = isolated.call("reshape", {"v": np.arange(4, dtype=np.float32)})
    np.testing.assert_array_equal(out["r"], np.arange(4, dtype=np.float32).reshape(2, 2))
    assert isolated.pids[0] == pid


def test_calls_in_flight_during_a_crash_fail_fast_then_calls_wait_bounded(isolated, expected):
    """A slow call keeps the worker busy; the bad call and 3 valid calls queue behind it. The
    crash answers the queued valid calls UNAVAILABLE at once (no hang); while the worker is
    being restarted a call waits at most wait_timeout; then calls succeed again."""
    results = {}

    def run(name, key, feeds):
        try:
            results[name] = isolated.call(key, feeds)
        except ServingError as exc:
            results[name] = exc

    def start(name, key, feeds, in_flight):
        t = threading.Thread(target=run, args=(name, key, feeds), daemon=True)
        t.start()
        deadline = time.monotonic() + 30
        while sum(isolated.in_flight) < in_flight and t.is_alive():
            assert time.monotonic() < deadline, "the call was not sent"
            time.sleep(0.005)
        return t

    # A forked worker is back well under a second after a crash, sooner than the bounded wait
    # below could be observed: hold the restart back (first backoff 3 s) for this test.
    pool = isolated._pool
    pool.backoff_first = 3.0
    try:
        threads = [start("slow", "slow", {"n": np.int32(SLOW_N)}, 1),
                   start("bad", "serving_default", {"x": BAD}, 2)]
        threads += [start(f"valid{i}", "serving_default", {"x": GOOD}, 3 + i) for i in range(3)]
        assert "slow" not in results, "the slow call finished too soon to keep the others queued"
        deadline = time.monotonic() + 60
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
            assert not t.is_alive(), "a call in flight during the crash hung"
    finally:
        pool.backoff_first = 0.2
    np.testing.assert_allclose(results["slow"]["s"], SLOW_N)
    for name in ("bad", "valid0", "valid1", "valid2"):
        assert isinstance(results[name], ServingError), (name, results[name])
        assert results[name].code == "UNAVAILABLE", results[name]
    assert isolated.ready == 0   # being restarted (held back by the 3 s backoff)
    isolated.wait_timeout = 0.5
    try:
        start_t = time.monotonic()
        with pytest.raises(ServingError) as err:
            _call(isolated, "serving_default", {"x": GOOD}, timeout=10)
        assert err.value.code == "UNAVAILABLE" and "restarted" in err.value.message
        assert time.monotonic() - start_t < 10
    finally:
        isolated.wait_timeout = 30.0
    assert isolated.wait_ready(READY_S)
    _assert_outputs(isolated.call("serving_default", {"x": GOOD}), expected)


def test_two_workers_share_calls_run_concurrently_and_a_killed_one_is_replaced(
        model_path, expected, monkeypatch):
    me = os.getpid()
    # The parent's environment says oneDNN off: ``env`` must win in every worker (restarts too).
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    with IsolatedModel(model_path, workers=2, concurrency=2, env=ONEDNN) as m:
        pids = m.pids
        assert None not in pids and len(set(pids)) == 2
        assert [i["onednn"] for i in m.worker_info] == [True, True], m.worker_info
        assert set(pids) <= set(_descendants(me))
        # Two slow calls run at once, one on each worker.
        threads = [threading.Thread(target=m.call, args=("slow", {"n": np.int32(SLOW_N)}),
                                    daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while sum(m.in_flight) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert m.in_flight == [1, 1]
        # concurrency=2: a quick call runs beside the slow one instead of queueing behind it.
        start = time.monotonic()
        _assert_outputs(_call(m, "serving_default", {"x": GOOD}), expected)
        assert all(t.is_alive() for t in threads), (
            f"the quick call waited for a slow one ({time.monotonic() - start:.2f} s)")
        for t in threads:
            t.join(60)
        # SIGKILL one worker: the other keeps answering at once; the dead one is replaced.
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while m.ready != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert m.ready == 1 and m.pids[1] == pids[1]
        _assert_outputs(_call(m, "serving_default", {"x": GOOD}, timeout=5), expected)
        assert m.wait_ready(READY_S, count=2), "the killed worker was not replaced"
        assert m.pids[0] not in pids and not _exists(pids[0]) and m.restarts == 1
        assert m.worker_info[0]["onednn"] is True, m.worker_info
        _assert_outputs(m.call("serving_default", {"x": GOOD}), expected)
        last = m.pids
    assert m.pids == [None, None]
    assert not any(_exists(p) for p in last)
    assert not set(last) & set(_descendants(me)), "close() left a worker (or a zombie) behind"


def _replaced(model, pid):
    """Wait until the worker ``pid`` has been replaced by a ready one."""
    deadline = time.monotonic() + READY_S
    while model.pids[0] in (pid, None) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert model.pids[0] not in (pid, None), f"worker {pid} was not replaced"


def test_a_stuck_worker_is_killed_and_replaced_past_call_timeout(model_path, expected):
    """A call that outlives ``call_timeout`` (here a worker stopped with SIGSTOP: a kernel that
    never returns) answers DEADLINE_EXCEEDED at that bound instead of waiting forever; the
    worker is killed and replaced, and the next call is answered. A client's deadline shorter
    than that only ends its own wait: the (merely slow) worker is left to finish."""
    with IsolatedModel(model_path, env=ONEDNN, call_timeout=1.5,
                       restart_backoff=(0.1, 5.0)) as m:
        pid = m.pids[0]
        start = time.monotonic()
        with pytest.raises(ServingError, match="the model call did not finish") as err:
            m.call("slow", {"n": np.int32(SLOW_N * 1000)}, deadline=start + 0.3)
        assert err.value.code == "DEADLINE_EXCEEDED"
        assert time.monotonic() - start < 1.2 and m.pids[0] == pid and _exists(pid)
        os.kill(pid, signal.SIGKILL)    # (end the long count; a crash, not a timeout)
        _replaced(m, pid)
        pid = m.pids[0]
        os.kill(pid, signal.SIGSTOP)
        start = time.monotonic()
        with pytest.raises(ServingError, match="no answer within 1.5 s") as err:
            _call(m, "serving_default", {"x": GOOD}, timeout=30)
        assert err.value.code == "DEADLINE_EXCEEDED"
        assert 1.4 <= time.monotonic() - start < 10
        _replaced(m, pid)
        assert not _exists(pid) and m.hung == 1
        _assert_outputs(_call(m, "serving_default", {"x": GOOD}), expected)


def test_server_answers_504_for_a_stuck_worker_and_replaces_it(model_path):
    """``tfdeploy serve --model_call_timeout_seconds 2``: a request to a model whose worker is
    stuck (SIGSTOP) answers 504 DEADLINE_EXCEEDED after about 2 s, not never; the worker is
    replaced and the next request answers 200."""
    import shutil

    from test_serving_support import ServerProcess, rest_call

    base = os.path.join(os.path.dirname(model_path), "stuck")
    shutil.copytree(model_path, os.path.join(base, "1"))
    good = {"instances": np.zeros([1, 4, 4, 1], np.float32).tolist()}
    with ServerProcess(["--model_name", "conv", "--model_base_path", base,
                        "--file_system_poll_wait_seconds", "0", "--model_isolation", "process",
                        "--model_call_timeout_seconds", "2"]) as proc:
        assert rest_call(proc.rest_port, "POST", "/v1/models/conv:predict", good)[0] == 200
        workers = [p for p in _descendants(proc.pid) if _parent(_parent(p)) == proc.pid]
        assert len(workers) == 1, _descendants(proc.pid)
        os.kill(workers[0], signal.SIGSTOP)
        start = time.monotonic()
        status, reply = rest_call(proc.rest_port, "POST", "/v1/models/conv:predict", good,
                                  timeout=60)
        assert status == 504 and "no answer within 2 s" in reply["error"], (status, reply)
        assert 1.9 <= time.monotonic() - start < 30
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            status = rest_call(proc.rest_port, "POST", "/v1/models/conv:predict", good)[0]
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200 and not _exists(workers[0]) and proc.alive()


def test_workers_end_with_the_interpreter(model_path):
    """A parent that exits without close() takes its workers with it."""
    script = textwrap.dedent("""
        import sys
        from tfdeploy.serving.isolation import IsolatedModel, backoff_delay
        m = IsolatedModel(sys.argv[1])
        print(m.pids[0], flush=True)
    """)
    env = {**os.environ, **ONEDNN,
           "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(
               os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script, model_path], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-1500:]
    pid = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _exists(pid), "the worker outlived its parent"


@pytest.mark.parametrize("start_method", ["forkserver", "exec"])
def test_a_model_that_does_not_load_raises_and_leaves_no_process(tmp_path, start_method):
    before = set(_descendants(os.getpid()))
    with pytest.raises(ServingError) as err:
        IsolatedModel(str(tmp_path / "missing"), env=ONEDNN, start_method=start_method)
    assert err.value.code == "FAILED_PRECONDITION"
    assert "loading the model failed" in err.value.message
    assert set(_descendants(os.getpid())) <= before


def test_workers_are_forked_by_a_one_thread_server_shared_by_models(isolated, model_path,
                                                                      expected):
    """start_method="forkserver": each worker (and each replacement) is forked by one helper,
    our child, that imported TensorFlow and has a single thread; models with the same ``env``
    share it (the ``model`` fixture's teardown checks that it ends with the last of them)."""
    me = os.getpid()
    server = _parent(isolated.pids[0])
    assert server in _children(me) and _threads(server) == 1
    before = set(_children(me))
    a = IsolatedModel(model_path, env=ONEDNN, restart_backoff=(0.0, 5.0))
    with IsolatedModel(model_path, env=ONEDNN) as b:
        assert _parent(a.pids[0]) == server and _parent(b.pids[0]) == server
        assert set(_children(me)) == before, "a model with the same env started a new server"
        _assert_outputs(b.call("serving_default", {"x": GOOD}), expected)
    old = a.pids[0]
    os.kill(old, signal.SIGKILL)     # the replacement comes from the same server
    deadline = time.monotonic() + READY_S
    while a.pids[0] in (old, None) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert a.pids[0] not in (old, None) and _parent(a.pids[0]) == server
    assert _threads(server) == 1, "the server ran TensorFlow: its next fork is unsafe"
    _assert_outputs(a.call("serving_default", {"x": GOOD}), expected)
    last = a.pids[0]
    a.close()
    assert _exists(server), "closing two of the models that share the server ended it"
    assert not _exists(last) and set(_children(me)) == before


def test_start_method_is_checked():
    with pytest.raises(ValueError, match="start_method must be one of forkserver, exec"):
        IsolatedModel("/nonexistent", start_method="spawn")


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), "soon", [5]])
def test_a_negative_call_timeout_is_refused_before_any_worker_starts(bad):
    """A negative call timeout would time every call out at once (the server's flag has
    minimum 0); it, and one that is not a number, is refused, naming the argument, before a
    process is started."""
    before = set(_children(os.getpid()))
    with pytest.raises(ValueError, match=r"call_timeout must be a number of seconds >= 0"):
        IsolatedModel("/nonexistent", call_timeout=bad)
    assert set(_children(os.getpid())) == before


def test_restart_backoff_doubles_up_to_its_bound():
    assert [backoff_delay(n, 0.5, 30.0) for n in range(1, 9)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff_delay(10_000, 0.5, 30.0) == 30.0
