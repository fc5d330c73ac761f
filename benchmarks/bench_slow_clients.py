"""Trickling and idle clients at the connection limit against ``tfdeploy serve`` (issue 20).

Starts ``tfdeploy serve`` as a separate process (``--max_connections``, default 64) on a
tiny model, holds ``--trickle`` connections that send one byte of a request head every
0.5-1 s and ``--idle`` connections that send nothing (each reopened 0.2 s after the server
closes it), and meanwhile makes valid predict requests on fresh connections, about
``--rate`` a second for ``--seconds``. Prints one JSON object per server: valid requests
answered 200 out of the total, the other outcomes, the valid requests' p50/p99, and how
often the server closed an attacking connection.

    python benchmarks/bench_slow_clients.py
    python benchmarks/bench_slow_clients.py --ref_pythonpath /tmp/base   # also an older tree
"""

import argparse
import collections
import http.client
import json
import os
import random
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAD = b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nX-Pad: "


def _build_model(base):
    import tensorflow as tf

    class Half(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def half(self, x):
            return {"y": 0.5 * x + 2.0}

    m = Half()
    tf.saved_model.save(m, os.path.join(base, "1"), signatures={"serving_default": m.half})


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(base, port, args, pythonpath):
    env = dict(os.environ, PYTHONPATH=pythonpath, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tfdeploy.cli import main; sys.exit(main())",
         "serve", "--model_name", "half", "--model_base_path", base, "--port",
         str(_free_port()), "--rest_api_port", str(port), "--max_connections",
         str(args.max_connections), "--file_system_poll_wait_seconds", "0"],
        env=env, cwd=base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # (cwd: ``-c`` puts the working directory first on sys.path, before PYTHONPATH)
    for _ in range(600):
        try:
            if _predict(port, 1.0) == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start")


def _predict(port, x):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/models/half:predict", json.dumps({"instances": [x]}))
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _attack(port, args, stop, closed):
    rng = random.Random(0)
    socks, reopen = {}, []        # socket -> (kind, next send time); [(when, kind)]

    def connect(kind):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if kind == "trickle":
            s.sendall(HEAD)
        socks[s] = (kind, time.monotonic() + rng.uniform(0.5, 1.0))

    for kind in ["trickle"] * args.trickle + ["idle"] * args.idle:
        connect(kind)
    while not stop.is_set():
        now = time.monotonic()
        for when, kind in [r for r in reopen if r[0] <= now]:
            reopen.remove((when, kind))
            connect(kind)
        ready, _, _ = select.select(list(socks), [], [], 0.05)
        for s in ready:
            try:
                gone = not s.recv(65536)
            except OSError:
                gone = True
            if gone:
                kind = socks.pop(s)[0]
                s.close()
                closed[kind] += 1
                reopen.append((time.monotonic() + 0.2, kind))
        now = time.monotonic()
        for s, (kind, due) in list(socks.items()):
            if kind == "trickle" and due <= now:
                try:
                    s.send(b"a")
                except OSError:
                    pass
                socks[s] = (kind, now + rng.uniform(0.5, 1.0))
    for s in socks:
        s.close()


def run(label, pythonpath, base, args):
    port = _free_port()
    proc = _serve(base, port, args, pythonpath)
    stop, closed = threading.Event(), collections.Counter()
    attacker = threading.Thread(target=_attack, args=(port, args, stop, closed))
    outcomes, seconds = collections.Counter(), []
    try:
        attacker.start()
        time.sleep(1.0)
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            start = time.monotonic()
            try:
                outcomes[str(_predict(port, 1.0))] += 1
            except OSError as exc:
                outcomes[type(exc).__name__] += 1
            seconds.append(time.monotonic() - start)
            time.sleep(max(0.0, 1.0 / args.rate - (time.monotonic() - start)))
    finally:
        stop.set()
        attacker.join(10)
        proc.terminate()
        proc.wait(30)
    seconds.sort()
    total = sum(outcomes.values())
    return {"server": label, "ok": outcomes["200"], "total": total, "outcomes": dict(outcomes),
            "p50_ms": round(1000 * seconds[len(seconds) // 2], 1),
            "p99_ms": round(1000 * seconds[int(len(seconds) * 0.99)], 1),
            "attack_connections_closed": dict(closed)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max_connections", type=int, default=64)
    parser.add_argument("--trickle", type=int, default=60)
    parser.add_argument("--idle", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rate", type=float, default=2.0, help="valid requests a second")
    parser.add_argument("--ref_pythonpath", default=None,
                        help="also measure tfdeploy from this directory (label 'ref')")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        _build_model(os.path.join(tmp, "half"))
        servers = [("ref", args.ref_pythonpath)] if args.ref_pythonpath else []
        for label, path in servers + [("this", REPO)]:
            print(json.dumps(run(label, path, os.path.join(tmp, "half"), args)), flush=True)


if __name__ == "__main__":
    main()
