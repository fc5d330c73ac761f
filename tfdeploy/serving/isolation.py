"""Run a SavedModel in worker processes, so that a runtime abort cannot end the server.

Some inputs that pass validation against the signature can still abort the process inside a
TensorFlow kernel: with oneDNN on, a conv fed an input of the wrong rank through a placeholder
of unknown rank fails a CHECK (``tensor_format.h``) and calls ``abort()``. ``IsolatedModel``
contains that: each worker process loads the model once and runs one call at a time (or
``concurrency`` at once); when a worker dies, the calls in flight on it fail with UNAVAILABLE
(HTTP 503), a new worker is started in the background, and later calls succeed.

    model = IsolatedModel("/models/digits/1", workers=2)
    outputs = model.call("serving_default", {"image": batch})   # {output: ndarray}
    model.close()

A worker talks to the parent over a ``multiprocessing`` Connection on a socket pair. It gets
the parent's ``sys.path`` and environment plus ``env``, so ``env={"TF_ENABLE_ONEDNN_OPTS": "1"}``
reaches TensorFlow even when the parent already loaded it with other settings. This module
imports no TensorFlow in the parent. Workers start one of two ways (``start_method``):

- ``"forkserver"`` (the default): a helper process, started once per ``env`` and ``sys.path``
  and shared by every ``IsolatedModel`` of this process with the same ones, imports TensorFlow
  and then forks a worker for each start and each restart, so a worker pays only the model
  load, not the TensorFlow import (seconds). A forked worker sets its ``os.environ`` to the
  parent's environment plus ``env`` as they are at that start (as an exec'd worker gets them);
  only what TensorFlow reads while it is imported comes from when the helper started (the
  parent's environment then, plus ``env``: pass such variables in ``env``). TensorFlow does not survive a ``fork`` once its runtime
  has started threads; the helper never runs TensorFlow (it only imports it) and checks in
  ``/proc/self/task`` that it has exactly one thread before it serves any fork (else the
  model falls back to ``"exec"``, with a warning). OpenBLAS's thread pool is the only thread
  the import starts, so the helper imports with ``OPENBLAS_NUM_THREADS=1`` unless the
  environment sets it (the variable is removed again before the first fork). A worker is
  thus in the state a fresh interpreter reaches after ``import tensorflow``. The helper ends
  when the last ``IsolatedModel`` that uses it is closed (or this process ends), after its
  workers; a worker dies with the helper (``PR_SET_PDEATHSIG``), and is then restarted.
- ``"exec"``: a fresh interpreter per worker (``subprocess`` fork+exec), which imports
  TensorFlow itself.

Neither uses ``multiprocessing``'s spawn or forkserver contexts: they re-run the parent's
``__main__`` module in the child, so a script without a main guard could not start a worker,
and a ``__main__`` that imports TensorFlow would load it before ``env`` applies.
"""

import itertools
import logging
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing import reduction
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler

from tfdeploy.serving.status import HTTP_STATUS, ServingError, deadline_exceeded

log = logging.getLogger("tfdeploy.serving")

# Run by the worker's interpreter: read sys.path and the arguments, then serve.
_BOOTSTRAP = """\
import sys
from multiprocessing.connection import Connection
conn = Connection(int(sys.argv[1]))
sys.path[:], args = conn.recv()
from tfdeploy.serving.isolation import _worker_main
_worker_main(conn, *args)
"""

# Run by the fork server's interpreter: read sys.path, import TensorFlow, then fork workers.
_FORKSERVER_BOOTSTRAP = """\
import sys
from multiprocessing.connection import Connection
conn = Connection(int(sys.argv[1]))
sys.path[:] = conn.recv()
from tfdeploy.serving.isolation import _forkserver_main
_forkserver_main(conn)
"""
START_METHODS = ("forkserver", "exec")
_UNSET_ENV = "TFDEPLOY_FORKSERVER_UNSET"   # variables the fork server removes after its imports


def _describe_exit(exitcode):
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by {name}"
    return f"exit code {exitcode}"


def backoff_delay(crashes, first, most):
    """Seconds to wait before restart number ``crashes`` in a row: first, 2*first, ... most."""
    return min(most, first * 2 ** min(crashes - 1, 32))


# -- the worker process ------------------------------------------------------------------------
def _worker_main(conn, path, tags, env, concurrency=1):
    """Entry point of a worker: load the model, then answer ``(id, key, feeds)`` until EOF/None.

    ``concurrency`` calls run at once (in threads; answers may leave out of order)."""
    os.environ.update(env or {})   # (already in the environment the worker was started with)
    # The parent's Ctrl-C reaches the whole process group; the parent ends its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import tensorflow as tf

        # tf.errors' codes -> canonical names (what servable.tf_error_code maps; not imported
        # from there, so that servable can import this module without an import loop).
        code_names = {getattr(tf.errors, name): name for name in HTTP_STATUS
                      if name != "OK" and isinstance(getattr(tf.errors, name, None), int)}

        loaded = tf.saved_model.load(path, tags=list(tags))
        functions = dict(loaded.signatures)
        try:
            from tensorflow.python.util import _pywrap_util_port
            onednn = bool(_pywrap_util_port.IsMklEnabled())
        except Exception:  # noqa: BLE001  (private API; only reported)
            onednn = None
        conn.send(("ready", {"pid": os.getpid(), "signatures": sorted(functions),
                             "onednn": onednn}))
    except BaseException as exc:  # noqa: BLE001  (reported to the parent, which raises it)
        try:
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        finally:
            return
    send_lock = threading.Lock()

    def answer(call_id, key, feeds):
        try:
            fn = functions.get(key)
            if fn is None:
                reply = (call_id, "error", "FAILED_PRECONDITION",
                         f'Serving signature name: "{key}" not found in signature def')
            else:
                result = fn(**{k: tf.constant(v) for k, v in feeds.items()})
                reply = (call_id, "ok", {k: v.numpy() for k, v in result.items()})
        except tf.errors.OpError as exc:
            reply = (call_id, "error", code_names.get(exc.error_code, "UNKNOWN"), exc.message)
        except (TypeError, ValueError) as exc:
            reply = (call_id, "error", "INVALID_ARGUMENT", str(exc))
        except Exception as exc:  # noqa: BLE001  (the worker must survive a failing call)
            reply = (call_id, "error", "INTERNAL", f"{type(exc).__name__}: {exc}")
        try:
            data = ForkingPickler.dumps(reply)
        except Exception as exc:  # noqa: BLE001
            data = ForkingPickler.dumps((call_id, "error", "INTERNAL",
                                         f"cannot send the outputs: {exc}"))
        try:
            with send_lock:
                conn.send_bytes(data)
        except (EOFError, OSError):
            pass            # the parent is gone; the read loop sees it too

    pool = None
    if concurrency > 1:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(concurrency, thread_name_prefix="tfdeploy-model-call")
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return          # the parent is gone
            if message is None:
                return          # close()
            if pool is None:
                answer(*message)
            else:
                pool.submit(answer, *message)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


# -- the fork server process -------------------------------------------------------------------
def _thread_count():
    """Threads of this process (from /proc; ``threading`` sees only Python's threads)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _die_with_parent():
    """Ask Linux to SIGKILL this process when its parent (the fork server) ends."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001  (not Linux: the worker still ends on EOF from the model)
        pass


def _forkserver_main(conn):
    """Entry point of the fork server: import TensorFlow, report, then fork workers on request.

    Requests: ``("fork", worker args, environment)`` followed by the worker's socket
    (SCM_RIGHTS); answers
    ``("forked", pid)``; ``("exit", pid, exitcode)`` for each worker that ends. On EOF it stops
    taking requests and ends once its last worker has ended."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # as the workers: the parent ends us
    try:
        import tensorflow  # noqa: F401  (what every worker needs: imported once, here)
    except BaseException as exc:  # noqa: BLE001  (reported to the parent)
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    for name in os.environ.pop(_UNSET_ENV, "").split():
        os.environ.pop(name, None)
    threads = _thread_count()
    conn.send(("ready", {"pid": os.getpid(), "threads": threads}))
    if threads != 1:
        return          # forking now could copy a lock another thread holds: the parent execs
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    children, accepting = set(), True
    while accepting or children:
        try:
            readable = select.select([conn, wake_r] if accepting else [wake_r], [], [])[0]
        except InterruptedError:
            readable = []
        if wake_r in readable:
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
        while children:     # reap every worker that ended (SIGCHLD or not)
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children.discard(pid)
            try:
                conn.send(("exit", pid, os.waitstatus_to_exitcode(status)))
            except OSError:
                pass        # the parent is gone
        if conn not in readable:
            continue
        try:
            _, args, environ = conn.recv()
            fd = reduction.recv_handle(conn)
        except (EOFError, OSError):
            accepting = False
            continue
        pid = os.fork()
        if pid == 0:        # the worker
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.close(wake_r)
                os.close(wake_w)
                conn.close()
                _die_with_parent()
                os.environ.clear()
                os.environ.update(environ)
                _worker_main(Connection(fd), *args)
                code = 0
            except BaseException:  # noqa: BLE001
                import traceback

                traceback.print_exc()
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except Exception:  # noqa: BLE001
                        pass
                os._exit(code)
        os.close(fd)
        children.add(pid)
        try:
            conn.send(("forked", pid))
        except OSError:
            accepting = False


# -- the parent side ---------------------------------------------------------------------------
class _ForkedProcess:
    """A worker forked by a fork server: the part of ``subprocess.Popen`` the pool uses. Its exit
    code comes from the fork server, which is its parent."""

    def __init__(self, pid):
        self.pid = pid
        self.returncode = None
        self._ended = threading.Event()

    def _exited(self, code):
        self.returncode = code
        self._ended.set()

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
        return self.returncode

    def _signal(self, sig):
        if not self._ended.is_set():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self):
        self._signal(signal.SIGTERM)

    def kill(self):
        self._signal(signal.SIGKILL)


class _ForkServer:
    """The parent's handle on one fork server process (see the module docstring)."""

    def __init__(self, key, env, deadline):
        self.key, self.users, self.info = key, 0, {}
        self.lock = threading.Lock()      # one fork request at a time
        self.replies = queue.Queue()
        self.procs = {}                   # pid -> _ForkedProcess (guarded by self.lock_procs)
        self.lock_procs = threading.Lock()
        self.dead = False
        parent_sock, child_sock = socket.socketpair()
        extra = {}
        if "OPENBLAS_NUM_THREADS" not in env:   # OpenBLAS's pool is a thread: keep it out
            extra = {"OPENBLAS_NUM_THREADS": "1", _UNSET_ENV: "OPENBLAS_NUM_THREADS"}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _FORKSERVER_BOOTSTRAP, str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),), stdin=subprocess.DEVNULL, env={**env, **extra})
        finally:
            child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.pid = self.process.pid
        try:
            self.conn.send(list(sys.path))
            while not self.conn.poll(0.2):
                if self.process.poll() is not None:
                    raise RuntimeError("the fork server ended while importing TensorFlow "
                                       f"({_describe_exit(self.process.returncode)})")
                if time.monotonic() > deadline:
                    raise RuntimeError("the fork server did not import TensorFlow in time")
            kind, payload = self.conn.recv()
            if kind != "ready":
                raise RuntimeError(f"the fork server could not import TensorFlow: {payload}")
        except BaseException:
            self.close(timeout=0)
            raise
        self.info = payload
        if payload["threads"] == 1:
            threading.Thread(target=self._read, daemon=True,
                             name=f"tfdeploy-forkserver-{self.pid}").start()

    def _read(self):
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "forked":
                proc = _ForkedProcess(message[1])
                with self.lock_procs:
                    self.procs[proc.pid] = proc
                self.replies.put(proc)
            elif message[0] == "exit":
                with self.lock_procs:
                    proc = self.procs.pop(message[1], None)
                if proc is not None:
                    proc._exited(message[2])
        with self.lock_procs:
            self.dead = True
            left, self.procs = list(self.procs.values()), {}
        for proc in left:   # PR_SET_PDEATHSIG ended them with the server
            proc._exited(-signal.SIGKILL)
        self.replies.put(None)

    def fork(self, sock, args, environ, deadline):
        """Fork a worker that sets ``os.environ`` to ``environ`` and runs
        ``_worker_main(Connection(sock), *args)``: a _ForkedProcess."""
        with self.lock:
            if self.dead:
                raise OSError("the fork server has ended")
            self.conn.send(("fork", args, environ))
            reduction.send_handle(self.conn, sock.fileno(), self.pid)
            try:
                proc = self.replies.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise OSError("the fork server did not answer in time") from None
            if proc is None:
                raise OSError("the fork server has ended")
            return proc

    def close(self, timeout):
        """Stop taking requests; the server ends after its last worker (killed after
        ``timeout`` seconds and 5 more)."""
        try:
            with socket.socket(fileno=os.dup(self.conn.fileno())) as sock:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        for stop in (None, self.process.kill):
            if stop is not None:
                stop()
            try:
                self.process.wait(timeout if stop is None else 5)
                break
            except subprocess.TimeoutExpired:
                continue
        self.conn.close()


_forkservers = {}                      # (frozen env, sys.path) -> _ForkServer
_forkservers_lock = threading.Lock()


def _acquire_forkserver(env, deadline):
    """The fork server for ``env`` and this ``sys.path`` (started if needed, with the parent's
    environment plus ``env``), with one more user."""
    key = (frozenset(env.items()), tuple(sys.path))
    with _forkservers_lock:
        server = _forkservers.get(key)
        if server is None or server.dead:
            server = _forkservers[key] = _ForkServer(key, {**os.environ, **env}, deadline)
            log.info("Started a fork server for isolated models (pid %d)", server.pid)
        server.users += 1
        return server


def _release_forkserver(server, timeout):
    with _forkservers_lock:
        server.users -= 1
        if server.users > 0:
            return
        if _forkservers.get(server.key) is server:
            del _forkservers[server.key]
    server.close(timeout)


class _Call:
    __slots__ = ("event", "result", "error")

    def __init__(self):
        self.event = threading.Event()
        self.result = None
        self.error = None

    def finish(self, result=None, error=None):
        self.result, self.error = result, error
        self.event.set()


class _Worker:
    """One running worker process and the calls sent to it that have no answer yet."""

    def __init__(self, process, conn):
        self.process, self.conn = process, conn
        self.pid = process.pid
        self.pending = {}                 # call id -> _Call (guarded by the pool's lock)
        self.send_lock = threading.Lock()
        self.alive = True
        self.info = {}


class _Slot:
    """A place for one worker; its supervisor thread starts, watches and restarts the worker."""

    def __init__(self, index):
        self.index = index
        self.worker = None        # the _Worker while it is ready, else None
        self.crashes = 0          # consecutive failures (reset once a worker has been up a while)
        self.first_result = None  # None until the first start attempt ends: True or error text
        self.thread = None


class _Pool:
    """State shared by IsolatedModel and its supervisor threads (no reference to the model, so
    the model can be collected and its finalizer can close the pool)."""

    def __init__(self, path, tags, workers, start_timeout, restart_backoff, wait_timeout, env,
                 close_timeout, name, concurrency, start_method, call_timeout):
        self.path, self.tags, self.env = path, tuple(tags), dict(env or {})
        self.call_timeout = call_timeout
        self.hung = 0   # workers killed because a call outlived call_timeout
        self.start_method = start_method
        self.forkserver = None    # the _ForkServer, once the first start acquired it
        self.forkserver_lock = threading.Lock()
        self.concurrency = concurrency
        self.name = name or path
        self.start_timeout, self.wait_timeout = start_timeout, wait_timeout
        self.backoff_first, self.backoff_max = restart_backoff
        self.close_timeout = close_timeout
        self.cond = threading.Condition()
        self.closed = False
        self.closed_event = threading.Event()
        self.slots = [_Slot(i) for i in range(workers)]
        self.ids = itertools.count()
        self.restarts = 0
        self.info = None   # what the first worker reported
        self.crashes = 0

    # -- lifecycle of one slot (runs in its supervisor thread) ----------------------------------
    def supervise(self, slot):
        while not self.closed:
            if slot.crashes:
                delay = backoff_delay(slot.crashes, self.backoff_first, self.backoff_max)
                if self.closed_event.wait(delay):
                    return
            restart = slot.first_result is not None
            worker, error = self._start(slot)
            if worker is None:
                slot.crashes += 1
                with self.cond:
                    if slot.first_result is None:
                        slot.first_result = error
                        self.cond.notify_all()
                        return        # the constructor raises it
                    self.crashes += 1
                log.error("Model %s: worker %d could not be started (%s); retrying",
                          self.name, slot.index, error)
                continue
            ready_at = time.monotonic()
            with self.cond:
                closed = self.closed
                if not closed:
                    slot.worker = worker
                    if slot.first_result is None:
                        slot.first_result = True
                        self.info = self.info or dict(worker.info)
                    elif restart:
                        self.restarts += 1
                        log.warning("Model %s: worker %d restarted (pid %d)", self.name,
                                    slot.index, worker.pid)
                self.cond.notify_all()
            if closed:
                self._stop_process(worker, timeout=0)
                return
            self._read(slot, worker)
            if self.closed:
                return
            if time.monotonic() - ready_at >= self.backoff_max:
                slot.crashes = 0
            slot.crashes += 1

    def _forkserver(self, deadline):
        """The fork server this pool forks its workers from, or None to exec them instead."""
        with self.forkserver_lock:
            if self.start_method != "forkserver" or self.closed:
                return None
            if self.forkserver is not None and not self.forkserver.dead:
                return self.forkserver
            if self.forkserver is not None:   # it ended (killed?): start another
                _release_forkserver(self.forkserver, 0)
                self.forkserver = None
            server = _acquire_forkserver(self.env, deadline)
            if server.info.get("threads") != 1:
                _release_forkserver(server, 0)
                log.warning("Model %s: the fork server had %s threads after importing "
                            "TensorFlow (forking is safe only with 1); starting each worker "
                            "as a new interpreter instead", self.name, server.info.get("threads"))
                self.start_method = "exec"
                return None
            self.forkserver = server
            return server

    def _spawn(self, child_sock, deadline):
        """Start a worker process on ``child_sock``; ``(process, sent)``: ``sent`` tells
        whether it already has its arguments."""
        args = (self.path, self.tags, self.env, self.concurrency)
        server = self._forkserver(deadline)
        if server is not None:
            return server.fork(child_sock, args, {**os.environ, **self.env}, deadline), True
        return subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, str(child_sock.fileno())],
            pass_fds=(child_sock.fileno(),), stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env}), False

    def _start(self, slot):
        """Start a worker and wait until it loaded the model: ``(_Worker, None)`` or
        ``(None, why)``."""
        deadline = time.monotonic() + self.start_timeout
        parent_sock, child_sock = socket.socketpair()
        try:
            process, sent = self._spawn(child_sock, deadline)
        except Exception as exc:  # noqa: BLE001
            parent_sock.close()
            child_sock.close()
            return None, f"could not start a process: {exc}"
        child_sock.close()    # only the worker holds its end now: its death is an EOF here
        parent_conn = Connection(parent_sock.detach())
        worker = _Worker(process, parent_conn)
        error = None
        try:
            if not sent:
                parent_conn.send((list(sys.path),
                                  (self.path, self.tags, self.env, self.concurrency)))
            while True:
                if parent_conn.poll(0.2):
                    kind, payload = parent_conn.recv()
                    if kind == "ready":
                        worker.info = payload
                        return worker, None
                    error = f"loading the model failed: {payload}"
                    break
                if self.closed:
                    self._stop_process(worker, timeout=0)
                    return None, "the model is being closed"
                if process.poll() is not None:
                    error = ("the worker process ended while loading the model "
                             f"({_describe_exit(process.returncode)})")
                    break
                if time.monotonic() > deadline:
                    error = f"the model did not load within {self.start_timeout:g} s"
                    break
        except (EOFError, OSError):
            self._stop_process(worker)
            return None, ("the worker process ended while loading the model "
                          f"({_describe_exit(process.returncode)})")
        self._stop_process(worker)
        return None, error

    def _read(self, slot, worker):
        """Deliver the worker's answers until its pipe ends, then fail what was in flight."""
        conn = worker.conn
        while True:
            try:
                call_id, kind, *payload = conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # noqa: BLE001  (an answer that cannot be read: start afresh)
                log.exception("Model %s: unreadable answer from worker %d", self.name,
                              worker.pid)
                break
            with self.cond:
                call = worker.pending.pop(call_id, None)
            if call is None:
                continue
            if kind == "ok":
                call.finish(result=payload[0])
            else:
                call.finish(error=ServingError(payload[0], payload[1]))
        with self.cond:
            worker.alive = False
            if slot.worker is worker:
                slot.worker = None
            closing = self.closed
        self._stop_process(worker)
        how = _describe_exit(worker.process.returncode)
        with self.cond:
            lost = list(worker.pending.values())
            worker.pending.clear()
            if not closing:
                self.crashes += 1
        if closing:
            error = ServingError("UNAVAILABLE", "the model is being unloaded")
        else:
            log.error("Model %s: worker process %d ended (%s) with %d request(s) in flight; "
                      "restarting it", self.name, worker.pid, how, len(lost))
            error = ServingError(
                "UNAVAILABLE",
                f"the model's worker process ended while running this request ({how}); it is "
                "being restarted, retry the request")
        for call in lost:
            call.finish(error=error)

    def _stop_process(self, worker, timeout=None):
        """Make sure the worker's process has ended and is reaped; close the pipe."""
        process = worker.process
        timeout = self.close_timeout if timeout is None else timeout
        for stop in (None, process.terminate, process.kill):
            if stop is not None:
                stop()
            try:
                process.wait(timeout if stop is None else 5)
                break
            except subprocess.TimeoutExpired:
                continue
        with worker.send_lock:   # no caller is writing to it (its fd could be reused)
            try:
                worker.conn.close()
            except OSError:
                pass

    # -- calls ------------------------------------------------------------------------------
    def call(self, key, feeds, deadline=None):
        wait_until = time.monotonic() + self.wait_timeout
        if deadline is not None:
            wait_until = min(wait_until, deadline)
        call_id = next(self.ids)
        try:
            data = ForkingPickler.dumps((call_id, key, feeds))
        except Exception as exc:  # noqa: BLE001
            raise ServingError("INVALID_ARGUMENT", f"cannot send the inputs: {exc}") from exc
        call = _Call()
        while True:
            with self.cond:
                while True:
                    if self.closed:
                        raise ServingError("UNAVAILABLE", "the model is being unloaded")
                    ready = [s.worker for s in self.slots if s.worker is not None]
                    if ready:
                        break
                    left = wait_until - time.monotonic()
                    if left <= 0:
                        if deadline is not None and time.monotonic() >= deadline:
                            raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded: no "
                                               "model worker became ready in time")
                        raise ServingError("UNAVAILABLE", "the model's worker process is being "
                                           "restarted after a crash; retry the request")
                    self.cond.wait(left)
                worker = min(ready, key=lambda w: len(w.pending))
            # Registered and sent under the worker's send lock: its pipe holds the calls in the
            # order of ``pending``, and a call is registered only while the worker is alive (so
            # its supervisor answers it if the worker ends).
            with worker.send_lock:
                with self.cond:
                    if not worker.alive:
                        continue
                    worker.pending[call_id] = call
                try:
                    worker.conn.send_bytes(data)
                except (OSError, EOFError, ValueError):
                    # The worker ended under us: its supervisor answers the call unless it
                    # already collected the calls in flight.
                    with self.cond:
                        mine = worker.pending.pop(call_id, None) is not None
                    if mine:
                        call.finish(error=ServingError(
                            "UNAVAILABLE", "the model's worker process ended before it received "
                            "this request; it is being restarted, retry the request"))
            break
        sent = time.monotonic()
        limits = [t for t in (deadline, self.call_timeout and sent + self.call_timeout) if t]
        if not call.event.wait(max(0.0, min(limits) - sent) if limits else None):
            with self.cond:
                mine = worker.pending.pop(call_id, None) is not None
            if not mine:        # answered (or failed by the supervisor) just now
                call.event.wait()
            elif self.call_timeout and time.monotonic() >= sent + self.call_timeout:
                # A call that outlives call_timeout means the worker is stuck (a kernel that
                # never returns): kill it, so its supervisor replaces it and answers the calls
                # queued behind this one UNAVAILABLE instead of leaving them waiting forever.
                with self.cond:
                    self.hung += 1
                log.error("Model %s: worker process %d gave no answer within %g s; killing it",
                          self.name, worker.pid, self.call_timeout)
                worker.process.kill()
                raise ServingError(
                    "DEADLINE_EXCEEDED", f"Deadline Exceeded: the model gave no answer within "
                    f"{self.call_timeout:g} s (--model_call_timeout_seconds); its worker process "
                    "was killed and is being restarted")
            else:               # the client's deadline: the worker may only be slow
                raise deadline_exceeded("the model call")
        if call.error is not None:
            raise call.error
        return call.result

    # -- shutdown ---------------------------------------------------------------------------
    def close(self):
        with self.cond:
            if self.closed:
                return
            self.closed = True
            self.closed_event.set()
            workers = [s.worker for s in self.slots if s.worker is not None]
            self.cond.notify_all()
        for worker in workers:
            try:
                with worker.send_lock:
                    worker.conn.send(None)
            except (OSError, EOFError, ValueError):
                pass
        threads = [s.thread for s in self.slots
                   if s.thread is not None and s.thread is not threading.current_thread()]
        # Each supervisor reaps its own worker once the worker has ended (a call in progress
        # may finish first); a worker that takes longer than close_timeout is killed.
        for thread in threads:
            thread.join(self.close_timeout)
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.kill()
        for thread in threads:
            thread.join(self.close_timeout + 5)
        with self.forkserver_lock:
            server, self.forkserver = self.forkserver, None
        if server is not None:
            _release_forkserver(server, self.close_timeout)


class IsolatedModel:
    """A SavedModel loaded in ``workers`` worker processes; a worker that dies is replaced.

    Args:
        path: the SavedModel directory (one version).
        tags: the MetaGraph tags to load.
        workers: number of worker processes; a call goes to the worker with the fewest calls in
            flight (an idle one when there is one). Calls sent to a busy worker queue in its
            pipe, and all of them fail with UNAVAILABLE if it dies.
        concurrency: calls one worker runs at once (in threads, as in-process serving runs
            concurrent requests); 1 runs them one at a time.
        start_timeout: seconds a worker may take to import TensorFlow and load the model.
        restart_backoff: ``(first, max)`` seconds to wait before restarting a worker that ended:
            ``first`` after one crash, doubling for each further crash in a row up to ``max``
            (the count resets once a worker has stayed up for ``max`` seconds), so a crash loop
            cannot keep the CPUs busy loading the model.
        wait_timeout: seconds a call waits for a ready worker (while all are being restarted)
            before it fails with UNAVAILABLE.
        env: environment variables set in the worker before it imports TensorFlow (for
            example ``{"TF_ENABLE_ONEDNN_OPTS": "1"}``).
        close_timeout: seconds ``close`` lets a worker finish its call before killing it.
        call_timeout: seconds a call may wait for its answer; past it the call fails with
            DEADLINE_EXCEEDED and the worker, taken to be stuck, is killed and replaced (the
            calls queued behind it answer UNAVAILABLE). None or 0: no limit. Defaults to None.
        name: how log lines name the model (default: ``path``), e.g. "digits version 1".
        start_method: "forkserver" (fork workers from a process that imported TensorFlow
            once; see the module docstring) or "exec" (a new interpreter per worker).

    Raises:
        ValueError: ``workers`` or ``concurrency`` below 1, an unknown ``start_method``, or a
            negative (or NaN) ``call_timeout``.
        ServingError: FAILED_PRECONDITION when the first start of a worker fails (the model
            does not load); the workers already started are ended.
    """

    def __init__(self, path, tags=("serve",), workers=1, start_timeout=120,
                 restart_backoff=(0.5, 30.0), wait_timeout=30.0, env=None, close_timeout=5.0,
                 name=None, concurrency=1, start_method="forkserver", call_timeout=None):
        if workers < 1 or concurrency < 1:
            raise ValueError(f"workers and concurrency must be at least 1, got {workers} and "
                             f"{concurrency}")
        if start_method not in START_METHODS:
            raise ValueError(f"start_method must be one of {', '.join(START_METHODS)}, got "
                             f"{start_method!r}")
        if call_timeout is not None:
            try:
                valid = float(call_timeout) >= 0
            except (TypeError, ValueError):
                valid = False
            if not valid:
                raise ValueError(f"call_timeout must be a number of seconds >= 0 (0 or None: "
                                 f"no limit), got {call_timeout!r}")
        self.path = path
        pool = self._pool = _Pool(path, tags, int(workers), start_timeout,
                                  tuple(restart_backoff), wait_timeout, env, close_timeout,
                                  name, int(concurrency), start_method,
                                  float(call_timeout) if call_timeout else None)
        self._finalizer = weakref.finalize(self, pool.close)
        for slot in pool.slots:
            slot.thread = threading.Thread(target=pool.supervise, args=(slot,), daemon=True,
                                           name=f"tfdeploy-model-supervisor-{slot.index}")
            slot.thread.start()
        with pool.cond:
            pool.cond.wait_for(lambda: all(s.first_result is not None for s in pool.slots))
            errors = [s.first_result for s in pool.slots if s.first_result is not True]
        if errors:
            self.close()
            raise ServingError("FAILED_PRECONDITION",
                               f"Could not load the model at {path} in a worker process: "
                               f"{errors[0]}")
        self.signature_keys = pool.info.get("signatures", [])

    def call(self, key, feeds, deadline=None):
        """Run signature ``key`` on ``{input: ndarray}`` in a worker; ``{output: ndarray}``.

        ``feeds`` must already be checked against the signature (as ``Servable.call``'s are).
        ``deadline`` (``time.monotonic()``) bounds the wait for a ready worker and for the
        answer (the worker is left to finish the call); ``call_timeout`` bounds the answer.

        Raises:
            ServingError: the TF error's code when the model fails (the worker survives);
                UNAVAILABLE when the worker ended while this call was in flight, or when no
                worker became ready within ``wait_timeout``; DEADLINE_EXCEEDED past
                ``deadline`` or ``call_timeout``.
        """
        return self._pool.call(key, feeds, deadline)

    def wait_ready(self, timeout=None, count=1):
        """Wait until ``count`` workers are ready; True if they are."""
        pool = self._pool
        with pool.cond:
            return pool.cond.wait_for(lambda: pool.closed or self.ready >= count, timeout) \
                and not pool.closed

    @property
    def wait_timeout(self):
        """Seconds a call waits for a ready worker before UNAVAILABLE (settable)."""
        return self._pool.wait_timeout

    @wait_timeout.setter
    def wait_timeout(self, seconds):
        self._pool.wait_timeout = float(seconds)

    @property
    def ready(self):
        """Number of workers ready to take calls."""
        return sum(s.worker is not None for s in self._pool.slots)

    @property
    def restarts(self):
        """Number of workers started to replace one that ended."""
        return self._pool.restarts

    @property
    def hung(self):
        """Number of workers killed because a call outlived ``call_timeout``."""
        return self._pool.hung

    @property
    def crashes(self):
        """Number of workers that ended (or failed to start) other than by ``close``."""
        return self._pool.crashes

    @property
    def pids(self):
        """The process id of each worker slot (None while it is being restarted)."""
        return [s.worker.pid if s.worker is not None else None for s in self._pool.slots]

    @property
    def in_flight(self):
        """Calls sent to each worker slot and not answered yet."""
        with self._pool.cond:
            return [len(s.worker.pending) if s.worker is not None else 0
                    for s in self._pool.slots]

    @property
    def worker_info(self):
        """What each ready worker reported when it loaded the model (pid, signatures, onednn)."""
        return [dict(s.worker.info) if s.worker is not None else None for s in self._pool.slots]

    def close(self):
        """End the workers (a call in progress gets ``close_timeout`` seconds) and reap them."""
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

