"""Benchmark ``tfdeploy serve``: latency overhead, throughput with/without batching, load run.

Starts the server as a separate process (``python -m tfdeploy.cli serve``) on loopback
ports, drives it with REST (keep-alive http.client) and gRPC (tensorflow-serving-api
stubs) clients from this process, and prints one JSON object:

- latency: p50/p99 ms at batch 1 for in-process signature calls, REST and gRPC, and
  ``overhead_ratio = p50_served / p50_in_process``;
- throughput: requests/s with 1, 8 and 32 concurrent clients, batching off and on;
- load: a fixed number of requests with zero 5xx expected, and the server's resident
  memory before and after (growth in MiB).

    python benchmarks/bench_serving.py                        # a tiny exported CNN
    python benchmarks/bench_serving.py --model_base_path saved_models/digits --model_name digits
"""

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentiles(seconds):
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "n": len(ms)}


def _rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _build_model(base_path):
    sys.path.insert(0, REPO)
    import tfdeploy as td

    keras = td.keras
    td.tf.random.set_seed(0)
    model = keras.Sequential([
        keras.Input((32, 32, 1)), keras.layers.Rescaling(1.0 / 255),
        keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax")])
    td.export.saved_model(model, base_path, version=1)


class _Server:
    def __init__(self, name, base_path, batching_file=None):
        self.grpc_port, self.rest_port = _free_port(), _free_port()
        cmd = [sys.executable, "-m", "tfdeploy.cli", "serve", f"--port={self.grpc_port}",
               f"--rest_api_port={self.rest_port}", f"--model_name={name}",
               f"--model_base_path={base_path}", "--file_system_poll_wait_seconds=0"]
        if batching_file:
            cmd += ["--enable_batching=true", f"--batching_parameters_file={batching_file}"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=2)
                conn.request("GET", f"/v1/models/{name}")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("server did not become ready")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


class _RestWorker:
    def __init__(self, port, name, body):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.path, self.body = f"/v1/models/{name}:predict", body

    def __call__(self):
        self.conn.request("POST", self.path, self.body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        resp.read()
        return resp.status


class _GrpcWorker:
    def __init__(self, port, name, images):
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.request = predict_pb2.PredictRequest()
        self.request.model_spec.name = name
        self.request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
        self._grpc = grpc

    def __call__(self):
        try:
            self.stub.Predict(self.request, timeout=60)
            return 200
        except self._grpc.RpcError as exc:
            return {"UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}.get(exc.code().name, 500)


def _latency(call, n, warmup=20):
    for _ in range(warmup):
        call()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return times


def _run_clients(workers, total):
    """Run ``total`` calls spread over the workers (one thread each); (rps, status counts)."""
    counts, lock = {}, threading.Lock()
    per = [total // len(workers) + (i < total % len(workers)) for i in range(len(workers))]
    barrier = threading.Barrier(len(workers) + 1)

    def loop(worker, n):
        local = {}
        barrier.wait()
        for _ in range(n):
            status = worker()
            local[status] = local.get(status, 0) + 1
        with lock:
            for k, v in local.items():
                counts[k] = counts.get(k, 0) + v

    threads = [threading.Thread(target=loop, args=(w, n)) for w, n in zip(workers, per)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return total / (time.perf_counter() - start), counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_base_path", default=None,
                        help="An exported model's base path (default: build a tiny CNN).")
    parser.add_argument("--model_name", default="bench")
    parser.add_argument("--latency_requests", type=int, default=200)
    parser.add_argument("--throughput_requests", type=int, default=320)
    parser.add_argument("--load_requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="bench_serving_")
    base = args.model_base_path or os.path.join(tmp, "model")
    if args.model_base_path is None:
        _build_model(base)
    import tensorflow as tf

    from tfdeploy.runtime.versions import latest_version_dir

    fn = tf.saved_model.load(latest_version_dir(base)[1]).signatures["serving_default"]
    (input_name, spec), = fn.structured_input_signature[1].items()
    shape = [1] + [d or 1 for d in spec.shape.as_list()[1:]]
    image = np.random.default_rng(0).integers(0, 256, size=shape).astype(np.float32)
    body = json.dumps({"instances": image.tolist()}).encode()
    result = {"model_base_path": base, "input_shape": shape, "cpu_count": os.cpu_count()}

    const = tf.constant(image)
    in_process = _percentiles(_latency(lambda: fn(**{input_name: const}), args.latency_requests))
    result["latency"] = {"in_process": in_process}

    batching_file = os.path.join(tmp, "batching.txt")
    with open(batching_file, "w") as f:
        f.write("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 2000 }\n"
                "num_batch_threads { value: 2 }\nmax_enqueued_batches { value: 64 }\n")
    result["throughput_rps"] = {}
    for mode, bfile in (("batching_off", None), ("batching_on", batching_file)):
        server = _Server(args.model_name, base, bfile)
        try:
            if mode == "batching_off":
                rest = _percentiles(_latency(_RestWorker(server.rest_port, args.model_name, body),
                                             args.latency_requests))
                grpc_ = _percentiles(_latency(_GrpcWorker(server.grpc_port, args.model_name,
                                                          image), args.latency_requests))
                for entry in (rest, grpc_):
                    entry["overhead_ratio"] = round(entry["p50_ms"] / in_process["p50_ms"], 2)
                result["latency"].update({"rest": rest, "grpc": grpc_})
            result["throughput_rps"][mode] = {}
            for api in ("rest", "grpc"):
                for c in args.concurrency:
                    workers = [_RestWorker(server.rest_port, args.model_name, body) if api == "rest"
                               else _GrpcWorker(server.grpc_port, args.model_name, image)
                               for _ in range(c)]
                    rps, counts = _run_clients(workers, max(args.throughput_requests, c))
                    result["throughput_rps"][mode][f"{api}_c{c}"] = round(rps, 1)
                    if set(counts) != {200}:
                        result.setdefault("throughput_errors", {})[f"{mode}_{api}_c{c}"] = counts
            if mode == "batching_on":
                # bounded load run: fixed request count, half REST half gRPC, 8 clients
                warm = [_RestWorker(server.rest_port, args.model_name, body) for _ in range(4)] + \
                    [_GrpcWorker(server.grpc_port, args.model_name, image) for _ in range(4)]
                _run_clients(warm, 400)
                rss_start = _rss_mib(server.proc.pid)
                _, counts = _run_clients(warm, args.load_requests)
                rss_end = _rss_mib(server.proc.pid)
                result["load"] = {
                    "requests": args.load_requests, "clients": len(warm),
                    "status_counts": {str(k): v for k, v in sorted(counts.items())},
                    "errors_5xx": sum(v for k, v in counts.items() if k >= 500),
                    "rss_start_mib": round(rss_start, 1), "rss_end_mib": round(rss_end, 1),
                    "rss_growth_mib": round(rss_end - rss_start, 1)}
        finally:
            result.setdefault("server_exit_codes", {})[mode] = server.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
