"""Run functions in forked children of one helper process (not a test module).

A helper process of a test (``tests/resume_fit.py``, ``tests/distributed_train.py``) that
needs several TensorFlow processes imports TensorFlow, tfdeploy's Keras and tfmot once, then
forks one child per process instead of starting an interpreter each (about 5 s of CPU per
interpreter). A child starts in exactly the state a fresh interpreter reaches after those
imports: nothing has run TensorFlow yet (`start` checks that the helper still has one
thread), so each child builds its own TensorFlow runtime, devices and servers.
"""

import os
import sys
import traceback


def start(name, fn, log_path):
    """Fork a child that runs ``fn()`` with stdout and stderr in ``log_path``; its pid.

    The child exits 0 when ``fn`` returns, with the code of a ``SystemExit`` it raises, and
    1 when it raises anything else (the traceback in the log).
    """
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        raise RuntimeError(f"{threads} threads in the process that forks {name!r}: fork "
                           "before anything starts TensorFlow (or set OPENBLAS_NUM_THREADS=1)")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        fn()
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code not in (None, 0):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: B036 - the child reports everything, then leaves
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def wait(pid):
    """The child's exit code (negative: the signal that ended it)."""
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
