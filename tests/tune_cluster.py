"""Helper process for tests/test_tune_distributed.py (not a test module).

    python tests/tune_cluster.py OUT_DIR ROLE,ROLE,... TUNE_ARGS...

runs ``tfdeploy tune TUNE_ARGS --distributed ROLE --json OUT_DIR/ROLE.json`` for every role
side by side, each in a child forked after the imports (`forked`: one interpreter's imports,
not one per role), with its output in ``OUT_DIR/ROLE.log``; writes the children's exit codes
to ``OUT_DIR/codes.json``. Each child runs what ``python -m tfdeploy.cli tune`` runs
(`tfdeploy.cli.main`) in a process where nothing has run TensorFlow yet. The workers start
once the chief's oracle accepts connections on ``--oracle-port``: a worker that finds no
oracle retries with gRPC's growing back-off (a minute and more of waiting), which the
separate interpreters' imports used to hide.
"""

import json
import os
import socket
import sys
import time

import forked
import tfdeploy.cli
import tfdeploy.commands.tune  # noqa: F401 - imported once, before the fork
import tfdeploy.compress  # noqa: F401
import tfdeploy.tune  # noqa: F401
from tfdeploy._keras import keras_tuner, tfmot


def run(argv):
    code = tfdeploy.cli.main(argv)
    if code:
        raise SystemExit(code)


def _listening(port, pid, timeout=300):
    """Wait until 127.0.0.1:``port`` accepts a connection (False if child ``pid`` ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def main(out_dir, roles, args):
    tfmot()
    keras_tuner()
    port = int(args[args.index("--oracle-port") + 1])
    pids, codes = {}, {}
    for role in roles:
        pids[role] = forked.start(role, lambda role=role: run(
            ["tune", *args, "--distributed", role, "--json",
             os.path.join(out_dir, f"{role}.json")]), os.path.join(out_dir, f"{role}.log"))
        if role == "chief" and not _listening(port, pids[role]):
            break
    for role, pid in pids.items():
        try:
            codes[role] = forked.wait(pid)
        except ChildProcessError:  # reaped by _listening: the chief ended before listening
            codes[role] = "ended before its oracle listened"
    with open(os.path.join(out_dir, "codes.json"), "w") as f:
        json.dump(codes, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(","), sys.argv[3:])
