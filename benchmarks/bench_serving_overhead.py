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
and ``tensorflow-serving-api`` clients). Medians over the rounds; every round and its load
average are kept.
"""

import argparse
import http.client
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_serving as bs  # noqa: E402
from _record import write_result  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_base_path", required=True)
    p.add_argument("--model_name", default="model")
    p.add_argument("--runtime", default="litert")
    p.add_argument("--artifact", default="tflite_float32")
    p.add_argument("--code", action="append", required=True, metavar="NAME=CHECKOUT")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--requests", type=int, default=300)
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

    # in process at 1 thread and at every usable core: the reference is the faster of the
    # two (the server picks between them at load; a server that picks the slower one pays)
    runtimes = {t: load_runtime(args.runtime, bs.latest_dir(args.model_base_path),
                                args.artifact, num_threads=t)
                for t in sorted({1, default_threads()})}
    servers = {k: bs._Server(name, args.model_base_path, pythonpath=os.path.abspath(v),
                             flags=[f"--runtime={args.runtime}"]) for k, v in codes.items()}
    rounds = []
    serving = {}
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
            for k in (list(codes) if r % 2 == 0 else list(codes)[::-1]):
                s = servers[k]
                for api, worker in (("rest", bs._RestWorker(s.rest_port, name, body)),
                                    ("grpc", bs._GrpcWorker(s.grpc_port, name, image))):
                    row[f"{k}_{api}"] = bs._percentiles(bs._latency(worker, args.requests))[
                        "p50_ms"]
            row["load_average"] = os.getloadavg()
            rounds.append(row)
            print(f"round {r + 1}: {row}", file=sys.stderr, flush=True)
    finally:
        for s in servers.values():
            s.stop()
    keys = [k for k in rounds[0] if k != "load_average"]
    med = {k: round(float(np.median([r[k] for r in rounds])), 3) for k in keys}
    out = {"argv": sys.argv[1:] if argv is None else list(argv), "codes": codes,
           "serving": serving, "median_p50_ms": med,
           "overhead_ms": {k: round(med[k] - med["in_process"], 3) for k in keys
                           if not k.startswith("in_process")},
           "target_0.5ms_met": {k: round(med[k] - med["in_process"], 3) <= 0.5 for k in keys
                                if k.endswith("_rest")},
           "rounds": rounds}
    write_result(out, args.out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
