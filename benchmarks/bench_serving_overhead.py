"""Served p50 minus in-process p50 for one runtime, several checkouts side by side.

    python benchmarks/bench_serving_overhead.py --model_base_path /tmp/qs/digits --model_name digits \\
        --runtime litert --artifact tflite_float32 --code before=/work/main --code after=. \\
        [--rounds 7 --requests 300 --out FILE]

One ``tfdeploy serve --runtime RUNTIME`` process per ``--code NAME=CHECKOUT`` (its PYTHONPATH),
all loaded at once; in each round (the order reverses every round) the in-process
``Runtime.call`` p50 of ARTIFACT at batch 1, at 1 thread and at every usable core (the
reference is the faster: the server chooses between them at load, unless told
``--runtime_threads``),
then every server's REST V1 and gRPC batch-1 p50 (bench_serving's keep-alive ``http.client``
and ``tensorflow-serving-api`` clients) and the REST p50 again from a lean client (``rest_raw``:
the request's bytes built once and sent in one ``sendall`` on a keep-alive socket, the answer
read up to its Content-Length) and from ``wrk`` (``CODE_wrk``: the C load generator, one
thread and one keep-alive connection, its own p50; a client we did not write, when ``wrk``
is on the PATH). ``http.client`` builds every request's headers in Python, sends
head and body in two writes and parses the answer's headers with the ``email`` package: that
client's own time sits inside the ``rest`` column, and ``rest_raw`` states the server's overhead
without most of it. Beside each served p50, the server process's CPU per request (/proc):
less disturbed than a wall-clock p50 on a shared machine. Medians over the rounds; every
round and its load average are kept (the JSON's ``columns`` says what each column is).
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_serving as bs  # noqa: E402
from _record import write_result  # noqa: E402


COLUMNS = {
    "in_process_N_threads": "Runtime.call p50 in this process at N threads, back to back",
    "in_process": "the faster in_process_N_threads of the round (the overhead's reference)",
    "in_process_idle_N_threads": "Runtime.call p50 at N threads, each call after "
                                 "selection.IDLE_SECONDS asleep, as a served call follows its "
                                 "round trip (context: what waking the runtime's idle threads "
                                 "costs; not the reference)",
    "CODE_rest": "served REST V1 predict p50, bench_serving's keep-alive http.client client "
                 "(Python request building, two writes, email-package header parsing)",
    "CODE_rest_raw": "served REST V1 predict p50, lean client: pre-built request bytes in one "
                     "sendall on a keep-alive TCP_NODELAY socket, answer read to Content-Length",
    "CODE_wrk": "served REST V1 predict p50 from wrk (C; -t1 -c1, keep-alive, its latency "
                "histogram), over --wrk_seconds",
    "CODE_grpc": "served gRPC Predict p50, tensorflow-serving-api stub on one channel",
    "server_cpu_ms_per_request": "per CODE_API: the server process's CPU (every thread, "
                                 "/proc/PID/stat user+system, 10 ms ticks) over that column's "
                                 "requests, per request",
}


def _process_cpu_s(pid):
    """User + system CPU seconds of process ``pid`` so far, every thread (/proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RawRestClient:
    """One keep-alive connection that sends a pre-built request in one write and reads the
    answer up to its Content-Length: the least a client can do in Python."""

    def __init__(self, port, name, body):
        self.request = (b"POST /v1/models/%s:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (
                            name.encode(), len(body))) + body
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray(1 << 20)
        self.view = memoryview(self.buf)

    def __call__(self):
        self.sock.sendall(self.request)
        buf, view, n = self.buf, self.view, 0
        while True:
            got = self.sock.recv_into(view[n:])
            if not got:
                raise ConnectionError("the server closed the connection")
            n += got
            head = buf.find(b"\r\n\r\n", 0, n)
            if head >= 0:
                break
        lowered = bytes(buf[:head + 2]).lower()
        start = lowered.find(b"\r\ncontent-length:")
        if start < 0:
            raise ValueError(f"no Content-Length in the answer: {bytes(buf[:head])!r}")
        start += len(b"\r\ncontent-length:")
        end = head + 4 + int(lowered[start:lowered.find(b"\r\n", start)])
        while n < end:
            got = self.sock.recv_into(view[n:])
            if not got:
                raise ConnectionError("the server closed the connection mid-answer")
            n += got
        return int(buf[9:12])

    def close(self):
        self.sock.close()


WRK_SCRIPT = """
local f = assert(io.open(os.getenv("TFDEPLOY_WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format("P50_US %d\\nREQUESTS %d\\nNON2XX %d\\nERRORS %d\\n",
    latency:percentile(50), summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout))
end
"""


def _wrk_version():
    """wrk's version line, or None when it is not on the PATH."""
    if shutil.which("wrk") is None:
        return None
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return ((done.stdout or done.stderr).splitlines() or [""])[0].strip()


class WrkClient:
    """``wrk -t1 -c1`` against the predict URL for ``seconds``: ``(p50 ms, requests)``."""

    def __init__(self, port, name, body, seconds, tmpdir):
        self.url = f"http://127.0.0.1:{port}/v1/models/{name}:predict"
        self.seconds, self.script = seconds, os.path.join(tmpdir, "post.lua")
        self.body = os.path.join(tmpdir, "body.json")
        with open(self.script, "w") as f:
            f.write(WRK_SCRIPT)
        with open(self.body, "wb") as f:
            f.write(body)

    def __call__(self):
        out = subprocess.run(
            ["wrk", "-t1", "-c1", f"-d{self.seconds}s", "--latency", "-s", self.script,
             self.url], capture_output=True, text=True, timeout=self.seconds + 60,
            env={**os.environ, "TFDEPLOY_WRK_BODY": self.body}).stdout
        fields = dict(line.split(" ", 1) for line in out.splitlines()
                      if line.split(" ", 1)[0] in ("P50_US", "REQUESTS", "NON2XX", "ERRORS"))
        if len(fields) < 4 or int(fields["NON2XX"]) or int(fields["ERRORS"]):
            raise RuntimeError(f"wrk failed or got errors: {out[-500:]}")
        return int(fields["P50_US"]) / 1000, int(fields["REQUESTS"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_base_path", required=True)
    p.add_argument("--model_name", default="model")
    p.add_argument("--runtime", default="litert")
    p.add_argument("--artifact", default="tflite_float32")
    p.add_argument("--code", action="append", required=True, metavar="NAME=CHECKOUT")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--wrk_seconds", type=int, default=3,
                   help="Seconds of wrk per round and server (0: no wrk column).")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    codes = dict(c.split("=", 1) for c in args.code)
    _, input_name, item_shape = bs._serving_default(args.model_base_path)
    name = args.model_name
    bs._INPUTS[name] = input_name
    image = np.random.default_rng(0).integers(0, 256, size=[1] + item_shape).astype(np.float32)
    body = json.dumps({"instances": image.tolist()}).encode()
    sys.path.insert(0, bs.REPO)
    from tfdeploy.serving.runtimes import load_runtime
    from tfdeploy.serving.runtimes.base import default_threads
    from tfdeploy.serving.selection import IDLE_SECONDS

    # in process at 1 thread and at every usable core: the reference is the faster of the
    # two (the server picks between them at load; a server that picks the slower one pays)
    runtimes = {t: load_runtime(args.runtime, bs.latest_dir(args.model_base_path),
                                args.artifact, num_threads=t)
                for t in sorted({1, default_threads()})}
    servers = {k: bs._Server(name, args.model_base_path, pythonpath=os.path.abspath(v),
                             flags=[f"--runtime={args.runtime}"]) for k, v in codes.items()}
    rounds = []
    serving = {}
    wrk = args.wrk_seconds > 0 and shutil.which("wrk") is not None
    tmpdir = tempfile.mkdtemp(prefix="bench_overhead_")
    try:
        for k, s in servers.items():   # what each server runs (its runtime, file and threads)
            conn = http.client.HTTPConnection("127.0.0.1", s.rest_port, timeout=60)
            conn.request("GET", f"/v1/models/{name}/metadata")
            report = json.loads(conn.getresponse().read())["metadata"].get("runtime") or {}
            conn.close()
            serving[k] = {f: report.get("serving", {}).get(f) for f in (
                "runtime", "artifact", "threads", "threads_chosen_by", "timings")}
        for r in range(args.rounds):
            row = {f"in_process_{t}_threads": bs._p50_ms(
                lambda rt=rt: rt.call("serving_default", {input_name: image}), args.requests)
                for t, rt in runtimes.items()}
            row["in_process"] = min(row.values())
            for t, rt in runtimes.items():
                row[f"in_process_idle_{t}_threads"] = bs._p50_ms(
                    lambda rt=rt: rt.call("serving_default", {input_name: image}), args.requests,
                    idle=IDLE_SECONDS)
            cpu = {}
            for k in (list(codes) if r % 2 == 0 else list(codes)[::-1]):
                s = servers[k]
                for api, worker in (("rest", bs._RestWorker(s.rest_port, name, body)),
                                    ("rest_raw", RawRestClient(s.rest_port, name, body)),
                                    ("grpc", bs._GrpcWorker(s.grpc_port, name, image))):
                    status = worker()
                    if status != 200:
                        raise RuntimeError(f"{k} answered {api} with status {status}")
                    before = _process_cpu_s(s.proc.pid)
                    row[f"{k}_{api}"] = bs._percentiles(bs._latency(worker, args.requests))[
                        "p50_ms"]
                    cpu[f"{k}_{api}"] = round((_process_cpu_s(s.proc.pid) - before) * 1000 / (
                        args.requests + 20), 3)   # (20: _latency's warm-up calls)
                if wrk:
                    before = _process_cpu_s(s.proc.pid)
                    row[f"{k}_wrk"], n = WrkClient(s.rest_port, name, body, args.wrk_seconds,
                                                   tmpdir)()
                    cpu[f"{k}_wrk"] = round((_process_cpu_s(s.proc.pid) - before) * 1000 / n, 3)
            row["server_cpu_ms_per_request"] = cpu
            row["load_average"] = os.getloadavg()
            rounds.append(row)
            print(f"round {r + 1}: {row}", file=sys.stderr, flush=True)
    finally:
        for s in servers.values():
            s.stop()
    keys = [k for k in rounds[0] if k not in ("load_average", "server_cpu_ms_per_request")]
    med = {k: round(float(np.median([r[k] for r in rounds])), 3) for k in keys}
    cpu_keys = rounds[0]["server_cpu_ms_per_request"]
    med_cpu = {k: round(float(np.median([r["server_cpu_ms_per_request"][k] for r in rounds])), 3)
               for k in cpu_keys}
    out = {"argv": sys.argv[1:] if argv is None else list(argv), "codes": codes,
           "columns": COLUMNS,
           "serving": serving, "median_p50_ms": med,
           "median_server_cpu_ms_per_request": med_cpu,
           "overhead_ms": {k: round(med[k] - med["in_process"], 3) for k in keys
                           if not k.startswith("in_process")},
           "overhead_over_idle_in_process_ms": {   # (context only: see the columns)
               k: round(med[k] - min(v for c, v in med.items()
                                     if c.startswith("in_process_idle_")), 3)
               for k in keys if not k.startswith("in_process")},
           "target_0.5ms_met": {k: round(med[k] - med["in_process"], 3) <= 0.5 for k in keys
                                if k.endswith(("_rest", "_rest_raw", "_wrk"))},
           "wrk": _wrk_version(),
           "rounds": rounds}
    write_result(out, args.out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
