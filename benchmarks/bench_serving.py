"""Benchmark ``tfdeploy serve`` side by side with KServe's Python model server.

Starts each server as a separate process on loopback ports and drives it from this
process with REST (keep-alive http.client; TF Serving's REST predict is KServe's V1
protocol) and gRPC (tensorflow-serving-api stubs) clients; prints one JSON object:

- latency: p50/p99 ms at batch 1 for the in-process signature call, tfdeploy REST and
  gRPC, KServe REST and KServe gRPC;
- throughput_rps: 1, 8 and 32 concurrent clients, REST and gRPC, tfdeploy with batching
  off and on, KServe;
- targets: REST p50 overhead over in-process (<= 1 ms), REST throughput / KServe's at
  every concurrency (>= 1), gRPC batching speed-up at 32 clients (>= 3);
- load: a fixed number of requests with zero 5xx expected, and server memory growth;
- validation: what checking every input against the signature costs, served REST and gRPC
  p50 at batch 1 with validation on and off in alternating rounds on one server, and the
  check alone in-process (``--validation_only`` measures just this).

- runtimes (``--runtimes [tensorflow auto litert onnxruntime openvino]``, issue 21): the model
  served once per ``--runtime`` (separate processes, all loaded, measured in alternating
  rounds): REST V1 batch-1 p50 and requests/s at 1 and 8 clients (gRPC too with
  ``--runtime_apis rest grpc``), ``metadata.runtime`` (what ``auto`` chose and why), RSS,
  top-1 accuracy on ``--accuracy_data``, bench_runtimes' in-process timings of every artifact,
  and with ``--batching_cpu mlp served`` server CPU time per request (/proc) batched vs
  unbatched at 32 clients; ``--out`` writes the JSON, ``--table`` renders it (docs/runtimes.md).

Every figure is the median over ``--repeats`` rounds (each round measures every server in
turn); ``rounds`` keeps each round's figures and load average.

KServe runs from its own virtual environment (its pins clash with the project's),
made on first use: ``python3.11 -m venv V && V/bin/pip install kserve
"tensorflow-cpu==2.21.*"`` (about 70 s; ``--kserve_venv``, default
``~/.cache/tfdeploy/kserve-venv``; ``--no_kserve`` skips it). KServe's gRPC endpoint
speaks the V2 (Open Inference) protocol, not TF Serving's, so its gRPC numbers come
from a client process inside that venv (``kserve_grpc_v2``). ``--ref_pythonpath DIR``
adds tfdeploy served from another checkout (label ``ref``), e.g. to compare HTTP stacks.

The Open Inference Protocol (V2) against MLServer: ``benchmarks/bench_serving_v2.py``.

    python benchmarks/bench_serving.py                        # a tiny exported CNN
    python benchmarks/bench_serving.py --model_base_path saved_models/digits --model_name digits
"""

import argparse
import http.client
import json
import os
import shutil
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


def latest_dir(base_path):
    sys.path.insert(0, REPO)
    from tfdeploy.runtime.versions import latest_version_dir

    return latest_version_dir(base_path)[1]


KSERVE_SERVER = '''
import sys

import kserve
import numpy as np
import tensorflow as tf


class SavedModel(kserve.Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.path = path
        self.load()

    def load(self):
        self.fn = tf.saved_model.load(self.path).signatures["serving_default"]
        self.input = next(iter(self.fn.structured_input_signature[1]))
        self.ready = True

    def predict(self, payload, headers=None):
        if isinstance(payload, dict):              # V1 REST (TF Serving's JSON)
            x = tf.constant(np.asarray(payload["instances"], dtype=np.float32))
            out = self.fn(**{self.input: x})
            return {"predictions": out["probabilities"].numpy().tolist()}
        x = payload.inputs[0].as_numpy()           # V2 gRPC (InferRequest)
        probs = self.fn(**{self.input: tf.constant(x)})["probabilities"].numpy()
        out = kserve.InferOutput(name="probabilities", shape=list(probs.shape),
                                 datatype="FP32")
        out.set_data_from_numpy(probs, binary_data=False)
        return kserve.InferResponse(response_id=payload.id, model_name=self.name,
                                    infer_outputs=[out], from_grpc=payload.from_grpc)


if __name__ == "__main__":
    name, path, http_port, grpc_port = sys.argv[1:5]
    kserve.ModelServer(http_port=int(http_port), grpc_port=int(grpc_port),
                       workers=1).start([SavedModel(name, path)])
'''

KSERVE_GRPC_CLIENT = '''
import json
import sys
import threading
import time

import grpc
import numpy as np
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pbg

port, name, shape = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
n_lat, n_tp, concurrency = int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6])
x = np.random.default_rng(0).integers(0, 256, size=shape).astype(np.float32)


def worker():
    stub = pbg.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    req = pb.ModelInferRequest(model_name=name)
    t = req.inputs.add(name="instances", datatype="FP32", shape=shape)
    t.contents.fp32_contents.extend(x.ravel().tolist())
    return lambda: stub.ModelInfer(req, timeout=60)


call = worker()
for _ in range(20):
    call()
times = []
for _ in range(n_lat):
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
ms = np.asarray(times) * 1000
out = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
       "throughput_rps": {}}
for c in concurrency:
    calls = [worker() for _ in range(c)]
    total = max(n_tp, c)
    per = [total // c + (i < total % c) for i in range(c)]
    barrier = threading.Barrier(c + 1)

    def loop(f, k):
        barrier.wait()
        for _ in range(k):
            f()
    threads = [threading.Thread(target=loop, args=(f, k)) for f, k in zip(calls, per)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    out["throughput_rps"][f"c{c}"] = round(total / (time.perf_counter() - start), 1)
print(json.dumps(out))
'''


def kserve_python(venv):
    """The KServe venv's python, creating the venv on first use (about 70 s)."""
    python = os.path.join(venv, "bin", "python")
    if os.path.exists(python):
        probe = subprocess.run([python, "-c", "import kserve, tensorflow"], capture_output=True)
        if probe.returncode == 0:
            return python
    print(f"bench_serving: creating the KServe environment {venv} (about 70 s) ...",
          file=sys.stderr, flush=True)
    subprocess.run(["python3.11", "-m", "venv", venv], check=True)
    subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "kserve",
                    "tensorflow-cpu==2.21.*"], check=True)
    return python


def _build_model(base_path, kind="cnn"):
    """Export one of the benchmark models (random weights) as version 1 of ``base_path``.

    cnn: the tiny digits CNN (32x32x1; its per-call cost is mostly TF's fixed overhead);
    mobilenet_v2: tfdeploy.models.build_mobilenet at 96x96x3, alpha 1.0 (per-call cost is
    convolution work); mlp: a ranking-style MLP, 256 -> 3 x 2048 (ReLU) -> 10, 8.9 M
    parameters (36 MB of float32 weights read per call: the case batching is made for);
    mlp_wide: the same at 4096 wide, 34 M parameters (134 MB per call).
    """
    sys.path.insert(0, REPO)
    import tfdeploy as td

    keras = td.keras
    td.tf.random.set_seed(0)
    if kind == "mobilenet_v2":
        from tfdeploy.models import build_mobilenet

        td.export.saved_model(build_mobilenet((96, 96, 3), alpha=1.0), base_path, version=1)
        return
    if kind == "mobilenet_v2_224":
        # the mobilenet recipe's model (build_mobilenet, alpha 1.0, 224x224x3, 10 classes),
        # random weights, with the artifacts --runtime auto chooses from and warmup records
        from tfdeploy.models import build_mobilenet

        rng = np.random.default_rng(0)
        calib = rng.integers(0, 256, size=(16, 224, 224, 3)).astype(np.float32)
        model = build_mobilenet((224, 224, 3), 10, alpha=1.0)
        names = [f"c{i}" for i in range(10)]
        try:
            td.export.saved_model(model, base_path, version=1, class_names=names,
                                  image_bytes=False, warmup_data=calib[:4],
                                  artifacts=list(RUNTIME_ARTIFACTS),
                                  representative_data=calib)
        except Exception as exc:  # noqa: BLE001  random weights: int8 ONNX may be refused
            print(f"bench_serving: mobilenet_v2_224 with {RUNTIME_ARTIFACTS} failed ({exc}); "
                  "without onnx_int8", file=sys.stderr, flush=True)
            import shutil

            shutil.rmtree(base_path, ignore_errors=True)
            td.export.saved_model(model, base_path, version=1, class_names=names,
                                  image_bytes=False, warmup_data=calib[:4],
                                  artifacts=[a for a in RUNTIME_ARTIFACTS if a != "onnx_int8"],
                                  representative_data=calib)
        return
    if kind in ("mlp", "mlp_wide"):
        width = 4096 if kind == "mlp_wide" else 2048
        model = keras.Sequential([keras.Input((256,))] + [
            keras.layers.Dense(width, activation="relu") for _ in range(3)] + [
            keras.layers.Dense(10, activation="softmax")])
        td.export.saved_model(model, base_path, version=1)
        return
    model = keras.Sequential([
        keras.Input((32, 32, 1)), keras.layers.Rescaling(1.0 / 255),
        keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax")])
    if kind == "cnn_artifacts":   # --runtimes: the artifacts and warmup records auto needs
        calib = np.random.default_rng(0).integers(0, 256, size=(16, 32, 32, 1)).astype(
            np.float32)
        td.export.saved_model(model, base_path, version=1, image_bytes=False,
                              class_names=[str(i) for i in range(10)], warmup_data=calib[:4],
                              artifacts=["tflite_float32", "tflite_int8", "onnx"],
                              representative_data=calib)
        return
    td.export.saved_model(model, base_path, version=1)


METRICS_PATH = "/monitoring/prometheus/metrics"
RUNTIME_ARTIFACTS = ("tflite_float32", "tflite_int8", "onnx", "onnx_int8")


class _Server:
    def __init__(self, name, base_path, batching_file=None, pythonpath=None, kserve=None,
                 flags=(), monitoring_file=None):
        self.grpc_port, self.rest_port = _free_port(), _free_port()
        self.metrics = monitoring_file is not None and kserve is None
        env = dict(os.environ)
        if kserve is not None:      # (python, script): KServe's model server
            cmd = [kserve[0], kserve[1], name, latest_dir(base_path), str(self.rest_port),
                   str(self.grpc_port)]
        else:
            cmd = [sys.executable, "-m", "tfdeploy.cli", "serve", f"--port={self.grpc_port}",
                   f"--rest_api_port={self.rest_port}", f"--model_name={name}",
                   f"--model_base_path={base_path}", "--file_system_poll_wait_seconds=0"]
            if batching_file:
                cmd += ["--enable_batching=true", f"--batching_parameters_file={batching_file}"]
            if self.metrics:
                cmd += [f"--monitoring_config_file={monitoring_file}"]
            cmd += list(flags)
            env["PYTHONPATH"] = pythonpath or REPO
        # (``python -m`` puts its working directory first on sys.path, before PYTHONPATH: run
        # in the checkout asked for, or every server imports this one's tfdeploy)
        cwd = REPO if kserve is not None else os.path.abspath(pythonpath or REPO)
        self.proc = subprocess.Popen(cmd, cwd=cwd, stderr=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {cmd}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=2)
                conn.request("GET", f"/v1/models/{name}")
                if conn.getresponse().status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.3)
        raise RuntimeError("server did not become ready")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


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
        self.request.inputs[_INPUTS.get(name, "images")].CopyFrom(tf.make_tensor_proto(images))
        self._grpc = grpc

    def __call__(self):
        try:
            self.stub.Predict(self.request, timeout=60)
            return 200
        except self._grpc.RpcError as exc:
            return {"UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
                    "RESOURCE_EXHAUSTED": 429}.get(exc.code().name, 500)


_INPUTS = {}   # model name -> serving_default input name


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


def _batch_stats(server):
    """(sum, count) of the batch sizes the server ran (its Prometheus metrics), or None."""
    if not server.metrics:
        return None
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    conn.request("GET", METRICS_PATH)
    text = conn.getresponse().read().decode()
    conn.close()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(":tensorflow:serving:batching_session:processed_batch_size_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith(":tensorflow:serving:batching_session:processed_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def _measure(server, name, body, image, args, latency, tp, label, grpc_=True, batches=None,
             apis=("rest", "grpc"), requests=None):
    if latency is not None:
        latency[f"{label}_rest"] = _percentiles(_latency(_RestWorker(server.rest_port, name, body),
                                                         args.latency_requests))
        if grpc_:
            latency[f"{label}_grpc"] = _percentiles(_latency(
                _GrpcWorker(server.grpc_port, name, image), args.latency_requests))
    errors = {}
    for api in apis if grpc_ else ("rest",):
        for c in args.concurrency:
            workers = [_RestWorker(server.rest_port, name, body) if api == "rest"
                       else _GrpcWorker(server.grpc_port, name, image) for _ in range(c)]
            before = _batch_stats(server)
            rps, counts = _run_clients(workers, max(requests or args.throughput_requests, c))
            tp[f"{label}_{api}_c{c}"] = round(rps, 1)
            after = _batch_stats(server)
            if batches is not None and before is not None and after[1] > before[1]:
                batches[f"{label}_{api}_c{c}"] = round(
                    (after[0] - before[0]) / (after[1] - before[1]), 1)
            if set(counts) != {200}:
                errors[f"{label}_{api}_c{c}"] = counts
    return errors


def _kserve_grpc(kserve, server, name, shape, args, tmp, latency, tp):
    client = os.path.join(tmp, "kserve_grpc_client.py")
    with open(client, "w") as f:
        f.write(KSERVE_GRPC_CLIENT)
    out = subprocess.run([kserve[0], client, str(server.grpc_port), name, json.dumps(shape),
                          str(args.latency_requests), str(args.throughput_requests),
                          json.dumps(args.concurrency)], capture_output=True, text=True,
                         timeout=1800)
    if out.returncode != 0:
        return out.stderr[-500:]
    k = json.loads(out.stdout.strip().splitlines()[-1])
    latency["kserve_grpc_v2"] = {"p50_ms": round(k["p50_ms"], 3), "p99_ms": round(k["p99_ms"], 3)}
    for c, v in k["throughput_rps"].items():
        tp[f"kserve_grpc_v2_{c}"] = v
    return None


def _targets(latency, tp, concurrency, kserve):
    p50 = latency["in_process"]["p50_ms"]
    t = {"rest_overhead_ms": round(latency["tfdeploy_rest"]["p50_ms"] - p50, 3),
         "grpc_overhead_ms": round(latency["tfdeploy_grpc"]["p50_ms"] - p50, 3)}
    t["rest_overhead_target_1ms_met"] = t["rest_overhead_ms"] <= 1.0
    if kserve and "kserve_rest_c1" in tp:
        t["kserve_rest_overhead_ms"] = round(latency["kserve_rest"]["p50_ms"] - p50, 3)
        t["rest_throughput_vs_kserve"] = {
            f"c{c}": round(tp[f"tfdeploy_rest_c{c}"] / tp[f"kserve_rest_c{c}"], 2)
            for c in concurrency}
        t["rest_throughput_target_met"] = all(v >= 1.0
                                              for v in t["rest_throughput_vs_kserve"].values())
    c = max(concurrency)
    t[f"grpc_batching_speedup_c{c}"] = round(
        tp[f"tfdeploy_batching_grpc_c{c}"] / tp[f"tfdeploy_grpc_c{c}"], 2)
    t["grpc_batching_target_3x_met"] = t[f"grpc_batching_speedup_c{c}"] >= 3.0
    return t


def _p50_ms(call, n, warmup=20, idle=0.0):
    for _ in range(warmup):
        call()
    times = []
    for _ in range(n):
        if idle:
            time.sleep(idle)
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return round(float(np.median(times)) * 1000, 3)


def _serving_default(base):
    """The latest version's ``serving_default`` function, its input's name, and one item's
    shape (unknown dimensions as 1)."""
    import tensorflow as tf

    fn = tf.saved_model.load(latest_dir(base)).signatures["serving_default"]
    (input_name, spec), = fn.structured_input_signature[1].items()
    return fn, input_name, [d or 1 for d in spec.shape.as_list()[1:]]


def _call_costs(fn, input_name, shape, n=60):
    """In-process model cost per item at batch 1 and 32 (back to back): the most any batching
    can gain for this model is their ratio."""
    import tensorflow as tf

    out = {}
    for b in (1, 32):
        x = tf.constant(np.random.default_rng(0).random([b] + shape).astype(np.float32))
        out[f"b{b}_ms_per_item"] = round(_p50_ms(lambda: fn(**{input_name: x}), n, 5) / b, 3)
    out["ceiling_speedup"] = round(out["b1_ms_per_item"] / out["b32_ms_per_item"], 2)
    return out


def _breakdown(base, name, body, image, input_name, n):
    """Where a REST / gRPC request's time goes, piece by piece, in this process (p50 ms).

    The model call back to back (the bench's in-process baseline) and after 1 ms idle (the
    cadence a server sees: TF's thread pool and caches cool down between requests); the
    server's own pieces without HTTP; the HTTP layer with a stub answer (server + the bench's
    http.client client); the gRPC handler without grpcio.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    sys.path.insert(0, REPO)
    from tfdeploy.serving import create_server, grpc_service, rest_json
    from tfdeploy.serving.httpserver import HttpServer
    from tfdeploy.serving.rest import RestApi

    server = create_server(model_name=name, model_base_path=base, port=None, rest_api_port=None,
                           file_system_poll_wait_seconds=0).start()
    try:
        servable = server.repository.get(name)
        fn = servable._functions["serving_default"]
        const = tf.constant(image)
        api = RestApi(server.repository, server.metrics)
        parsed = api._parse_body(body)
        dtypes = servable.input_dtypes("")
        fmt, inputs = rest_json.parse_predict(parsed, dtypes)
        _, outputs = servable.run("", inputs)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.inputs[input_name].CopyFrom(tf.make_tensor_proto(image))
        grpc_api = grpc_service.PredictionServicer(server.repository, server.metrics)
        out = {
            "model_call_back_to_back": _p50_ms(lambda: fn(**{input_name: const}), n),
            "model_call_after_1ms_idle": _p50_ms(lambda: fn(**{input_name: const}), n,
                                                 idle=0.001),
            "rest_json_to_numpy": _p50_ms(
                lambda: rest_json.parse_predict(api._parse_body(body), dtypes), n),
            "servable_run": _p50_ms(lambda: servable.run("", inputs), n),
            "rest_response_to_json": _p50_ms(
                lambda: json.dumps(rest_json.predict_response(fmt, outputs)).encode(), n),
            "rest_handler_no_http": _p50_ms(
                lambda: api.handle("POST", f"/v1/models/{name}:predict", lambda: body), n),
            "grpc_handler_no_grpcio": _p50_ms(
                lambda: grpc_api._predict(request, None).SerializeToString(), n),
        }
        # the server's own Python per request: the same handlers with the model call
        # replaced by its precomputed answer
        answer = servable.call("serving_default", inputs)
        servable.call = lambda key, feeds: answer
        out["rest_handler_model_stubbed"] = _p50_ms(
            lambda: api.handle("POST", f"/v1/models/{name}:predict", lambda: body), n)
        out["grpc_handler_model_stubbed"] = _p50_ms(
            lambda: grpc_api._predict(request, None).SerializeToString(), n)
        # grpcio + the handler with the stubbed model + the bench's client
        grpc_server, port = grpc_service.make_grpc_server(server.repository, server.metrics,
                                                          "127.0.0.1", 0)
        grpc_server.start()
        try:
            out["grpc_layer_and_client_model_stubbed"] = _p50_ms(
                _GrpcWorker(port, name, image), n)
        finally:
            grpc_server.stop(0)
    finally:
        server.stop(grace=1)

    class _Stub:      # the HTTP layer alone: a fixed answer of the real answer's size
        max_body_bytes = 64 << 20
        answer = (200, "application/json", json.dumps(
            rest_json.predict_response(fmt, outputs)).encode())

        def handle(self, method, path, read_body):
            read_body()
            return self.answer

        def inline(self, method, path, body_bytes=0):
            return True
    http = HttpServer(_Stub(), "127.0.0.1", 0)
    http.start()
    try:
        out["http_layer_and_client"] = _p50_ms(_RestWorker(http.port, name, body), n)
    finally:
        http.close()
    return out


def _validation_cost(base, name, body, image, input_name, n, rounds=7):
    """Served p50 (ms) at batch 1 with input validation on and off, side by side.

    One in-process server (REST and gRPC on loopback; the client shares the process, the
    same for both variants); the variants alternate round by round on the same loaded
    version (``Servable.validate``); the figure is the median of the round medians. Also
    the check alone (``SignatureValidator.check``) and the early shape check in µs.
    """
    sys.path.insert(0, REPO)
    from tfdeploy.serving import create_server

    server = create_server(model_name=name, model_base_path=base, port=0, rest_api_port=0,
                           file_system_poll_wait_seconds=0).start()
    try:
        servable = server.repository.get(name)
        rest, grpc_ = _RestWorker(server.rest_port, name, body), \
            _GrpcWorker(server.grpc_port, name, image)
        per = {f"{p}_{v}": [] for p in ("rest", "grpc") for v in ("validated", "unvalidated")}
        for _ in range(rounds):
            for validate in (True, False):
                servable.validate = validate
                label = "validated" if validate else "unvalidated"
                per[f"rest_{label}"].append(_p50_ms(rest, n // 2, warmup=10))
                per[f"grpc_{label}"].append(_p50_ms(grpc_, n // 2, warmup=10))
        servable.validate = True
        validator = servable.validator("")
        feeds = {input_name: image}
        check_us = _p50_ms(lambda: validator.check(feeds), 2000, 50) * 1000
        shape_us = _p50_ms(lambda: validator.check_shape(input_name, image.shape), 2000,
                           50) * 1000
    finally:
        server.stop(grace=1)
    out = {k: round(float(np.median(v)), 4) for k, v in per.items()}
    out["rounds"] = per
    for proto in ("rest", "grpc"):
        out[f"{proto}_cost_ms"] = round(out[f"{proto}_validated"] - out[f"{proto}_unvalidated"],
                                        4)
    out["check_in_process_us"] = round(check_us, 2)
    out["shape_check_in_process_us"] = round(shape_us, 2)
    out["target_0.05ms_met"] = bool(max(out["rest_cost_ms"], out["grpc_cost_ms"]) <= 0.05)
    return out


def _batching_models(args, tmp, batching_files, monitoring_file, rounds_out):
    """gRPC throughput, unbatched and with each batching configuration, for the models of
    ``--batching_models``, side by side; fills ``rounds_out`` per model."""
    c = max(args.concurrency)
    for kind in args.batching_models:
        base = os.path.join(tmp, kind)
        if kind not in rounds_out:   # first round: build and load it once
            if not os.path.exists(base):
                _build_model(base, kind)
            fn, input_name, item_shape = _serving_default(base)
            _INPUTS[kind] = input_name
            rounds_out[kind] = {"model_call": _call_costs(fn, input_name, item_shape),
                                "input_shape": [1] + item_shape, "rounds": []}
        image = np.random.default_rng(0).random(rounds_out[kind]["input_shape"]).astype(
            np.float32)
        tp, batches, errors = {}, {}, {}
        configs = [("unbatched", {})] + [(label, {"batching_file": f})
                                         for label, f in batching_files.items()]
        for label, kw in configs:
            print(f"bench_serving: {kind}: measuring {label} ...", file=sys.stderr, flush=True)
            server = _Server(kind, base, monitoring_file=monitoring_file, **kw)
            try:
                errors.update(_measure(server, kind, None, image, args, None, tp, label,
                                       batches=batches, apis=("grpc",),
                                       requests=args.model_requests))
            finally:
                server.stop()
        rounds_out[kind]["rounds"].append({
            "throughput_rps": tp, "mean_batch_size": batches, "errors": errors,
            "speedup": {label: round(tp[f"{label}_grpc_c{c}"] / tp[f"unbatched_grpc_c{c}"], 2)
                        for label in batching_files},
            "load_average": os.getloadavg()})


def _cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _get_json(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path)
    resp = conn.getresponse()
    data = json.loads(resp.read())
    conn.close()
    return data


def _served_runtime(server, name):
    """``metadata.runtime`` of the served model (what runs serving_default, and auto's
    candidates with their verification and timings)."""
    meta = _get_json(server.rest_port, f"/v1/models/{name}/metadata")
    return meta.get("metadata", {}).get("runtime")


def _served_accuracy(server, name, input_name, x, y, batch=32):
    """Top-1 accuracy of a server's REST answers on ``(x, y)``, and its predicted classes.
    Batches hold at most ~4 MB of JSON (8 MobileNet images, 32 digits)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=120)
    predicted = []
    batch = max(1, min(batch, (4 << 20) // (7 * int(np.prod(x.shape[1:])))))
    for i in range(0, len(x), batch):
        body = json.dumps({"instances": [{input_name: row.tolist()}
                                         for row in x[i:i + batch]]}).encode()
        conn.request("POST", f"/v1/models/{name}:predict", body,
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = json.loads(resp.read())
        if resp.status != 200:
            raise RuntimeError(f"accuracy request failed: {resp.status} {data}")
        for p in data["predictions"]:
            predicted.append(int(p["class_index"]) if isinstance(p, dict) and "class_index" in p
                             else int(np.argmax(p["probabilities"] if isinstance(p, dict) else p)))
    conn.close()
    predicted = np.asarray(predicted)
    return float(np.mean(predicted == y)), predicted


def _rest_decode_ms(body, n=30):
    """p50 ms of the REST handler's JSON body -> numpy step alone (``json_fast``: the big
    numeric array kept raw, then decoded into one float32 array), in this process, timed in
    turns: ``{"c": ms, "python": ms}`` (the C extension, when built, and the pure-Python
    path)."""
    sys.path.insert(0, REPO)
    from tfdeploy.serving import json_fast

    built = json_fast._numjson

    def decode():
        _, spans = json_fast.extract(body)
        for fast in spans.values():
            fast.array(None, np.float32)

    times = {"c": [], "python": []} if built is not None else {"python": []}
    try:
        for _ in range(n):
            for impl in times:
                json_fast._numjson = built if impl == "c" else None
                t = time.perf_counter()
                decode()
                times[impl].append(time.perf_counter() - t)
    finally:
        json_fast._numjson = built
    return {k: round(float(np.median(v)) * 1000, 3) for k, v in times.items()}


def _in_process_runtimes(version_dir, turns, calls):
    """bench_runtimes' in-process timing of every (runtime, artifact) pair of a version, in
    turns, each with the threads the servers give it (no --runtime_threads: every core this
    process may use, TensorFlow's intra-op default too), so "the choice is right" compares
    like with like: ``{"runtime/artifact": {"batch_1_p50_ms", "batch_32_p50_ms",
    "batch_1_cpu_p50_ms", "threads"}}``."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from bench_runtimes import time_in_turns

    from tfdeploy.serving.runtimes import read_artifacts

    if read_artifacts(version_dir)[0].get("signature") is None:   # no manifest: TF only
        from tfdeploy.serving.runtimes import load_runtime

        fn, input_name, item_shape = _serving_default(os.path.dirname(version_dir))
        rt = load_runtime("tensorflow", version_dir, "saved_model")
        x = np.zeros([1] + item_shape, np.float32)
        return {"tensorflow/saved_model": {"batch_1_p50_ms": _p50_ms(
            lambda: rt.call("serving_default", {input_name: x}), turns * calls)}}
    from tfdeploy.serving.runtimes.base import default_threads

    times, described = time_in_turns(version_dir, default_threads(), turns, calls)
    return {f"{rt}/{art}": {**{f"{k}_p50_ms": round(float(np.median(v)), 4)
                               for k, v in t.items()}, "threads": described[(rt, art)]["threads"]}
            for (rt, art), t in times.items()}


def _in_process_concurrent(version_dir, keys, callers, turns, calls=300):
    """Batch-1 calls per second of each ``"runtime/artifact"`` in ``keys`` under ``callers``
    threads calling at once (as the server's clients do, `_run_clients`), in process, in
    turns of ``calls`` calls each after an untimed turn: ``{key: {"calls_per_s", "rounds"}}``.
    A tie ``auto`` broke by throughput is judged on this, beside the lone-call p50."""
    from tfdeploy.serving.runtimes import candidates, load_runtime

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from bench_runtimes import _input_shape

    x = np.random.default_rng(1).uniform(0, 255, size=(1, *_input_shape(version_dir))).astype(
        np.float32)
    loaded = {f"{name}/{entry['name']}": load_runtime(name, version_dir, entry)
              for name, entry in candidates(version_dir)
              if f"{name}/{entry['name']}" in keys}

    def rate(rt):
        def call():
            rt.call("serving_default", {"images": x})
            return 200
        return _run_clients([call] * callers, calls)[0]

    rounds = {k: [] for k in loaded}
    try:
        for rt in loaded.values():
            rate(rt)   # untimed: opens the runtimes' one-thread runners
        for turn in range(turns):
            for k in (list(loaded) if turn % 2 == 0 else list(loaded)[::-1]):
                rounds[k].append(round(rate(loaded[k]), 1))
    finally:
        for rt in loaded.values():
            rt.close()
    return {k: {"calls_per_s": round(float(np.median(v)), 1), "rounds": v}
            for k, v in rounds.items()}


def _warm(worker, calls=10):
    for _ in range(calls):
        worker()
    return worker


def _time_api(row, label, worker, make_worker, args):
    """Batch-1 p50 and requests/s at 1 client (``worker``, warmed) and at each further
    ``--runtime_concurrency`` (fresh workers from ``make_worker``), into ``row`` under
    ``label``; returns the number of requests sent."""
    wall = time.perf_counter()
    times = _latency(worker, args.runtime_requests, warmup=0)
    wall = time.perf_counter() - wall
    row["p50_ms"][label] = _percentiles(times)["p50_ms"]
    row["throughput_rps"][f"{label}_c1"] = round(len(times) / wall, 1)
    n = args.runtime_requests
    for c in args.runtime_concurrency:
        if c == 1:
            continue
        total = max(args.runtime_requests, c)
        rps, counts = _run_clients([make_worker() for _ in range(c)], total)
        n += total
        row["throughput_rps"][f"{label}_c{c}"] = round(rps, 1)
        if set(counts) != {200}:
            row.setdefault("errors", {})[f"{label}_c{c}"] = {str(k): v for k, v in counts.items()}
    return n


def _runtime_servers(args, base, name, image, body, input_name, test_xy, out, kserve=None):
    """Serve ``base`` once per ``--runtime`` policy (separate processes, all up at once),
    and with KServe's server (``kserve``: (python, script)) under the label "kserve" if
    given, then measure them side by side in alternating rounds: REST V1 batch-1 p50 and
    requests/s at each ``--runtime_concurrency``; server CPU per request and RSS from
    /proc; metadata.runtime; accuracy on ``test_xy``; and bench_runtimes' in-process
    timings of the version."""
    servers, rounds = {}, []
    out["servers"] = {}
    try:
        for policy in list(args.runtimes) + (["kserve"] if kserve else []):
            print(f"bench_serving: starting --runtime {policy} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            if policy == "kserve":   # KServe 0.21's V1 REST, the SavedModel through TF
                server = servers[policy] = _Server(name, base, kserve=kserve)
                out["servers"][policy] = {
                    "ready_s": round(time.perf_counter() - start, 1), "server": "kserve",
                    "rss_loaded_mib": round(_rss_mib(server.proc.pid), 1)}
                continue
            server = servers[policy] = _Server(name, base, flags=[f"--runtime={policy}"])
            info = out["servers"][policy] = {
                "ready_s": round(time.perf_counter() - start, 1),
                "runtime": _served_runtime(server, name),
                "rss_loaded_mib": round(_rss_mib(server.proc.pid), 1)}
            info["serving"] = (info["runtime"] or {}).get("serving")
        for rep in range(args.repeats):
            row = {"p50_ms": {}, "throughput_rps": {}, "server_cpu_ms_per_request": {}}
            order = list(servers) if rep % 2 == 0 else list(servers)[::-1]
            for policy in order:
                server = servers[policy]
                print(f"bench_serving: round {rep + 1}/{args.repeats}: --runtime {policy} ...",
                      file=sys.stderr, flush=True)
                rest = _warm(_RestWorker(server.rest_port, name, body))
                cpu0 = _cpu_seconds(server.proc.pid)
                n = _time_api(row, policy, rest,
                              lambda: _RestWorker(server.rest_port, name, body), args)
                if "grpc" in args.runtime_apis and policy != "kserve":   # (no JSON)
                    n += _time_api(row, f"{policy}_grpc",
                                   _warm(_GrpcWorker(server.grpc_port, name, image)),
                                   lambda: _GrpcWorker(server.grpc_port, name, image), args)
                row["server_cpu_ms_per_request"][policy] = round(
                    (_cpu_seconds(server.proc.pid) - cpu0) * 1000 / n, 3)
            row["load_average"] = os.getloadavg()
            rounds.append(row)
        for policy, server in servers.items():
            out["servers"][policy]["rss_after_mib"] = round(_rss_mib(server.proc.pid), 1)
        if test_xy is not None:
            acc = out["accuracy"] = {"test_examples": int(len(test_xy[1]))}
            preds = {}
            for policy, server in servers.items():
                if policy == "kserve":   # (its model class takes unnamed instances only)
                    continue
                try:
                    acc[policy], preds[policy] = _served_accuracy(server, name, input_name,
                                                                  *test_xy)
                except (OSError, RuntimeError, http.client.HTTPException) as exc:
                    acc.setdefault("errors", {})[policy] = f"{type(exc).__name__}: {exc}"[:300]
                    continue
                acc[policy] = round(acc[policy], 4)
            if "tensorflow" in preds:
                acc["agreement_with_tensorflow"] = {
                    p: round(float(np.mean(v == preds["tensorflow"])), 4)
                    for p, v in preds.items() if p != "tensorflow"}
    finally:
        for policy, server in servers.items():
            out["servers"].setdefault(policy, {})["exit_code"] = server.stop()
    out["rounds"] = rounds
    out["p50_ms"] = {k: round(float(np.median([r["p50_ms"][k] for r in rounds])), 3)
                     for k in rounds[0]["p50_ms"]}
    out["throughput_rps"] = {k: round(float(np.median([r["throughput_rps"][k]
                                                        for r in rounds])), 1)
                             for k in rounds[0]["throughput_rps"]}
    out["server_cpu_ms_per_request"] = {
        k: round(float(np.median([r["server_cpu_ms_per_request"][k] for r in rounds])), 3)
        for k in rounds[0]["server_cpu_ms_per_request"]}
    print("bench_serving: in-process timings (bench_runtimes) ...", file=sys.stderr, flush=True)
    decode = _rest_decode_ms(body)
    out["rest_json_decode_ms"] = decode.get("c", decode["python"])   # what the server ran
    out["rest_json_decode_ms_by_decoder"] = decode
    out["in_process"] = _in_process_runtimes(latest_dir(base), args.repeats, 40)
    tie = ((out["servers"].get("auto") or {}).get("runtime") or {}).get("tie")
    if tie:   # auto broke a tie by calls/s under concurrent calls: time the tie that way too
        print("bench_serving: in-process calls/s of the tied candidates ...", file=sys.stderr,
              flush=True)
        out["in_process_concurrent"] = _in_process_concurrent(
            latest_dir(base), set(tie["candidates"]), tie["callers"], max(3, args.repeats))


def _runtime_targets(out, ratio_target):
    """The issue's targets from ``out`` (filled by _runtime_servers)."""
    t, tp = {}, out["throughput_rps"]
    concurrency = sorted({int(k.rsplit("_c", 1)[1]) for k in tp})
    if "tensorflow" in out["servers"]:
        for policy in out["servers"]:
            if policy in ("tensorflow", "kserve"):
                continue
            t[f"{policy}_vs_tensorflow_rps"] = {
                f"c{c}": round(tp[f"{policy}_c{c}"] / tp[f"tensorflow_c{c}"], 2)
                for c in concurrency}
            if f"{policy}_grpc_c1" in tp:   # (not a target: the same without REST's JSON)
                t[f"{policy}_vs_tensorflow_grpc_rps"] = {
                    f"c{c}": round(tp[f"{policy}_grpc_c{c}"] / tp[f"tensorflow_grpc_c{c}"], 2)
                    for c in concurrency}
        if "kserve" in out["servers"]:   # V1 REST requests/s against KServe's, same model
            for policy in out["servers"]:
                if policy != "kserve":
                    t[f"{policy}_vs_kserve_rps"] = {
                        f"c{c}": round(tp[f"{policy}_c{c}"] / tp[f"kserve_c{c}"], 2)
                        for c in concurrency}
            t["rest_vs_kserve_target_met"] = all(
                v >= 1.0 for p in ("tensorflow", "auto") if f"{p}_vs_kserve_rps" in t
                for v in t[f"{p}_vs_kserve_rps"].values())
        if "auto" in out["servers"]:
            t[f"auto_vs_tensorflow_target_{ratio_target}x"] = ratio_target
            t["auto_vs_tensorflow_target_met"] = all(
                v >= ratio_target for v in t["auto_vs_tensorflow_rps"].values())
    ip = out["in_process"]
    auto = (out["servers"].get("auto") or {}).get("runtime") or {}
    if auto:
        serving = auto.get("serving") or {}
        chosen = f"{serving.get('runtime')}/{serving.get('artifact')}"
        passed = {f"{c['runtime']}/{c['artifact']}" for c in auto.get("candidates", [])
                  if c.get("passed")} | {"tensorflow/saved_model"}
        timed = {k: v["batch_1_p50_ms"] for k, v in ip.items() if k in passed}
        fastest = min(timed, key=timed.get)
        t["auto_chose"] = chosen
        t["auto_passed_candidates"] = sorted(passed)
        t["fastest_passing_in_process"] = fastest
        t["auto_choice_in_process_ms"] = ip.get(chosen, {}).get("batch_1_p50_ms")
        t["fastest_passing_in_process_ms"] = timed[fastest]
        if t["auto_choice_in_process_ms"] is not None:
            t["auto_choice_vs_fastest"] = round(t["auto_choice_in_process_ms"] / timed[fastest],
                                                3)
            t["auto_choice_within_10pct_met"] = t["auto_choice_vs_fastest"] <= 1.10
        tie = auto.get("tie")
        if tie and chosen in out.get("in_process_concurrent", {}):
            conc = out["in_process_concurrent"]
            best = max(conc, key=lambda k: conc[k]["calls_per_s"])
            t["tie_in_process_concurrent_best"] = best
            t["auto_choice_vs_best_concurrent"] = round(
                conc[best]["calls_per_s"] / conc[chosen]["calls_per_s"], 3)
            t["auto_choice_within_10pct_concurrent_met"] = \
                t["auto_choice_vs_best_concurrent"] <= 1.10
    lite = (out["servers"].get("litert") or {}).get("serving") or {}
    if lite.get("runtime") == "litert":
        key = f"litert/{lite['artifact']}"
        t["litert_artifact"] = key
        t["litert_served_p50_ms"] = out["p50_ms"]["litert"]
        t["litert_in_process_p50_ms"] = ip[key]["batch_1_p50_ms"]
        t["litert_overhead_ms"] = round(out["p50_ms"]["litert"] - ip[key]["batch_1_p50_ms"], 3)
        t["litert_overhead_target_0.5ms_met"] = t["litert_overhead_ms"] <= 0.5
        if "litert_grpc" in out["p50_ms"]:
            t["litert_grpc_overhead_ms"] = round(out["p50_ms"]["litert_grpc"] -
                                                 ip[key]["batch_1_p50_ms"], 3)
        t["rest_json_decode_ms"] = out.get("rest_json_decode_ms")
    base_rss = out["servers"].get("tensorflow", {}).get("rss_after_mib")
    t["rss_mib"] = {p: s.get("rss_after_mib") for p, s in out["servers"].items()}
    if base_rss:
        t["rss_over_tensorflow_server_mib"] = {
            p: round(s["rss_after_mib"] - base_rss, 1) for p, s in out["servers"].items()
            if p != "tensorflow" and s.get("rss_after_mib")}
    acc = out.get("accuracy")
    if acc and "tensorflow" in acc and "auto" in acc:
        t["auto_accuracy_minus_float_points"] = round((acc["auto"] - acc["tensorflow"]) * 100, 2)
        t["auto_accuracy_within_1pt_met"] = abs(t["auto_accuracy_minus_float_points"]) <= 1.0
    return t


def _batching_ceiling(version_dir, runtime, artifact, input_shape, threads=16, calls=4):
    """In-process CPU ms per item (this process's utime + stime) of ``runtime`` on the version:
    batch 1 from ``threads`` threads at once (what the unbatched server does with its request
    threads) against batch 8 and 32 from one thread (a batch thread): the most server-side
    batching can save per request before any per-request cost is counted."""
    sys.path.insert(0, REPO)
    from tfdeploy.serving.runtimes import load_runtime

    rt = load_runtime(runtime, version_dir, artifact)
    rng = np.random.default_rng(0)

    def cpu_ms_per_item(batch, n, concurrent=1):
        x = rng.uniform(0, 255, size=[batch] + list(input_shape[1:])).astype(np.float32)
        rt.call("serving_default", {_INPUTS.get("_ceiling", "images"): x})
        barrier = threading.Barrier(concurrent + 1)

        def loop():
            barrier.wait()
            for _ in range(n):
                rt.call("serving_default", {_INPUTS.get("_ceiling", "images"): x})

        workers = [threading.Thread(target=loop) for _ in range(concurrent)]
        for w in workers:
            w.start()
        cpu0 = time.process_time()
        barrier.wait()
        for w in workers:
            w.join()
        return round((time.process_time() - cpu0) * 1000 / (n * batch * concurrent), 3)

    try:
        out = {"runtime": rt.describe().get("runtime"), "artifact": rt.describe().get("artifact"),
               f"batch_1_x{threads}_threads_cpu_ms_per_item": cpu_ms_per_item(1, calls, threads),
               "batch_8_cpu_ms_per_item": cpu_ms_per_item(8, calls),
               "batch_32_cpu_ms_per_item": cpu_ms_per_item(32, max(1, calls // 2))}
    finally:
        rt.close()
    out["ceiling"] = round(out[f"batch_1_x{threads}_threads_cpu_ms_per_item"] /
                           out["batch_32_cpu_ms_per_item"], 2)
    return out


def _batching_cpu(args, tmp, kinds, batching_file, out):
    """At the largest --concurrency, gRPC batch 1: server CPU time per request (/proc) and
    requests/s, unbatched vs batched, alternating rounds; per model in ``kinds``
    (``{label: base_path}``)."""
    c = max(args.concurrency)
    for label, base in kinds.items():
        fn, input_name, item_shape = _serving_default(base)
        _INPUTS[label] = input_name
        image = np.random.default_rng(0).integers(0, 256, size=[1] + item_shape).astype(
            np.float32)
        m = out[label] = {"input_shape": [1] + item_shape, "clients": c,
                          "runtime": args.batching_runtime, "rounds": []}
        with open(batching_file) as f:
            m["batching_parameters"] = f.read()
        monitoring = os.path.join(tmp, "batching_cpu_monitoring.config")
        with open(monitoring, "w") as f:
            f.write(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
        flags = [f"--runtime={args.batching_runtime}"]
        servers = {}
        try:
            servers["unbatched"] = _Server(label, base, flags=flags)
            servers["batched"] = _Server(label, base, batching_file=batching_file, flags=flags,
                                         monitoring_file=monitoring)
            # what serves serving_default in each (with --runtime auto each server chooses
            # at load: the comparison only holds when both chose the same)
            m["serving_by_server"] = {v: (_served_runtime(s, label) or {}).get("serving")
                                      for v, s in servers.items()}
            m["serving"] = m["serving_by_server"]["batched"]
            m["same_runtime_in_both"] = len({
                (s or {}).get("runtime", "tensorflow") + "/" + (s or {}).get("artifact", "")
                for s in m["serving_by_server"].values()}) == 1
            for rep in range(args.repeats):
                row = {}
                order = ["unbatched", "batched"] if rep % 2 == 0 else ["batched", "unbatched"]
                for variant in order:
                    server = servers[variant]
                    print(f"bench_serving: batching cpu {label} round {rep + 1}: {variant} ...",
                          file=sys.stderr, flush=True)
                    workers = [_GrpcWorker(server.grpc_port, label, image) for _ in range(c)]
                    _run_clients(workers, c * 2)   # warm up every connection
                    cpu0, batches0 = _cpu_seconds(server.proc.pid), _batch_stats(server)
                    rps, counts = _run_clients(workers, args.model_requests)
                    cpu = _cpu_seconds(server.proc.pid) - cpu0
                    if batches0 is not None:   # the batches the server actually formed
                        batches1 = _batch_stats(server)
                        row["batched_mean_batch_size"] = round(
                            (batches1[0] - batches0[0]) / max(1.0, batches1[1] - batches0[1]), 2)
                    row[f"{variant}_rps"] = round(rps, 1)
                    row[f"{variant}_cpu_ms_per_request"] = round(cpu * 1000 /
                                                                 args.model_requests, 3)
                    if set(counts) != {200}:
                        row[f"{variant}_status_counts"] = {str(k): v for k, v in counts.items()}
                row["load_average"] = os.getloadavg()
                m["rounds"].append(row)
        finally:
            for server in servers.values():
                server.stop()
        _INPUTS["_ceiling"] = input_name
        serving = m.get("serving") or {"runtime": "tensorflow", "artifact": "saved_model"}
        m["in_process_ceiling"] = _batching_ceiling(latest_dir(base), serving["runtime"],
                                                    serving["artifact"], [1] + item_shape)
        for key in ("unbatched_rps", "batched_rps", "unbatched_cpu_ms_per_request",
                    "batched_cpu_ms_per_request", "batched_mean_batch_size"):
            m[key] = round(float(np.median([r[key] for r in m["rounds"]])), 3)
        m["cpu_per_request_reduction"] = round(m["unbatched_cpu_ms_per_request"] /
                                               m["batched_cpu_ms_per_request"], 2)
        m["throughput_ratio"] = round(m["batched_rps"] / m["unbatched_rps"], 2)


def _runtimes_main(args, tmp, batching_file):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from bench_runtimes import cpu_info

    result = {"benchmark": "bench_serving --runtimes", "cpu": cpu_info(),
              "argv": sys.argv[1:], "repeats": args.repeats,
              "requests_per_cell": args.runtime_requests}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        result["cpu"]["lscpu_flags"] = next((line.split(":", 1)[1].split() for line in
                                            text.splitlines() if line.startswith("Flags")), [])
    except OSError:
        pass
    if args.model_base_path:
        base = args.model_base_path
    else:
        base = os.path.join(tmp, args.runtime_model)
        _build_model(base, {"cnn": "cnn_artifacts"}.get(args.runtime_model, args.runtime_model))
    result["model_base_path"] = base
    result["model"] = args.runtime_model if not args.model_base_path else base
    if args.model_note:
        result["model_note"] = args.model_note
    if args.model_label:
        result["model_label"] = args.model_label
    fn, input_name, item_shape = _serving_default(base)
    _INPUTS[args.model_name] = input_name
    image = np.random.default_rng(0).integers(0, 256, size=[1] + item_shape).astype(np.float32)
    body = json.dumps({"instances": image.tolist()}).encode()
    result["input_shape"] = [1] + item_shape
    result["request_body_bytes"] = len(body)
    test_xy = None
    if args.accuracy_data:
        sys.path.insert(0, REPO)
        import tfdeploy as td

        h, w, ch = item_shape
        ds = td.data.image_dataset(args.accuracy_data, image_size=(h, w),
                                   color_mode="grayscale" if ch == 1 else "rgb")
        test_xy = td.data.to_numpy(ds)
        result["accuracy_data"] = args.accuracy_data
    del fn
    run = result["runtimes"] = {}
    kserve = None
    if args.runtime_kserve:
        script = os.path.join(tmp, "kserve_server.py")
        with open(script, "w") as f:
            f.write(KSERVE_SERVER)
        kserve = (kserve_python(args.kserve_venv), script)
    _runtime_servers(args, base, args.model_name, image, body, input_name, test_xy, run,
                     kserve)
    result["targets"] = _runtime_targets(run, args.ratio_target)
    if args.batching_cpu:
        kinds = {}
        for kind in args.batching_cpu:
            if kind == "served":
                kinds[args.model_name] = base
            else:
                kinds[kind] = os.path.join(tmp, kind)
                _build_model(kinds[kind], kind)
        bc = result["batching_cpu"] = {}
        _batching_cpu(args, tmp, kinds, batching_file, bc)
    return _emit(result, args.out)


def _emit(result, out):
    """Record the load at the end in ``result["cpu"]``, print ``result`` as JSON and write it
    to ``out`` when given; exit status 0."""
    result["cpu"]["loadavg_end"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


def _batching_cpu_main(args, tmp, batching_file):
    """``--runtimes --batching_cpu_only``: only the batching CPU rows, with the CPU recorded."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from bench_runtimes import cpu_info

    result = {"benchmark": "bench_serving --runtimes --batching_cpu_only", "cpu": cpu_info(),
              "argv": sys.argv[1:], "repeats": args.repeats, "model_note": args.model_note,
              "model_base_path": args.model_base_path}
    kinds = {}
    for kind in args.batching_cpu or ["served"]:
        if kind == "served":
            kinds[args.model_name] = args.model_base_path
        else:
            kinds[kind] = os.path.join(tmp, kind)
            _build_model(kinds[kind], kind)
    _batching_cpu(args, tmp, kinds, batching_file, result.setdefault("batching_cpu", {}))
    return _emit(result, args.out)


def runtimes_table(paths):
    """Markdown: the figures of ``--runtimes`` JSON files against issue 21's targets (every
    number read from the files)."""
    def met(flag):
        return "met" if flag else "**not met**"

    lines = ["| model (JSON) | figure | value | target |", "|---|---|---|---|"]
    for path in paths:
        with open(path) as f:
            d = json.load(f)
        t, r = d["targets"], d["runtimes"]
        tp = r["throughput_rps"]
        model = f"{d.get('model_label') or os.path.basename(path)} (`{path}`)"
        rows = []
        mobilenet = d.get("input_shape") == [1, 224, 224, 3]
        goal = next((v for k, v in t.items() if k.startswith("auto_vs_tensorflow_target_")
                     and k.endswith("x")), 3.0)
        if "auto_vs_tensorflow_rps" in t:
            for c, v in t["auto_vs_tensorflow_rps"].items():
                rows.append((f"REST batch 1, {c[1:]} client(s): auto / tensorflow req/s",
                             f"{tp[f'auto_{c}']} / {tp[f'tensorflow_{c}']} = {v}x",
                             (f">= {goal}x: {met(v >= goal)}" if mobilenet else
                              f"(the >= {goal}x target is MobileNetV2's; shown for comparison)")))
        if "auto_vs_tensorflow_grpc_rps" in t:
            rows.append(("gRPC batch 1 (protobuf, no JSON decoding): auto / tensorflow req/s",
                         ", ".join(f"{c[1:]} client(s): {tp[f'auto_grpc_{c}']} / "
                                   f"{tp[f'tensorflow_grpc_{c}']} = {v}x"
                                   for c, v in t["auto_vs_tensorflow_grpc_rps"].items()),
                         "(diagnostic: the targets are REST's)"))
        if "rest_vs_kserve_target_met" in t:
            rows.append(("REST batch 1 req/s against KServe 0.21 (the SavedModel through TF)",
                         "; ".join(f"{p}: " + ", ".join(f"{c[1:]} client(s) {v}x"
                                                        for c, v in t[f"{p}_vs_kserve_rps"]
                                                        .items())
                                   for p in ("tensorflow", "auto")
                                   if f"{p}_vs_kserve_rps" in t),
                         f">= 1x: {met(t['rest_vs_kserve_target_met'])}"))
        for policy in r["servers"]:
            if policy in ("tensorflow", "auto", "kserve"):
                continue
            ratios = t.get(f"{policy}_vs_tensorflow_rps", {})
            srv = r["servers"][policy]["serving"] or {}
            rows.append((f"--runtime {policy} ({srv.get('artifact')}) / tensorflow req/s",
                         ", ".join(f"{c}: {v}x" for c, v in ratios.items()), "(reference)"))
        if "auto_chose" in t:
            rows.append(("auto chose (metadata.runtime); in-process p50 vs fastest passing",
                         f"{t['auto_chose']}: {t['auto_choice_in_process_ms']} ms vs "
                         f"{t['fastest_passing_in_process']} {t['fastest_passing_in_process_ms']}"
                         f" ms = {t.get('auto_choice_vs_fastest')}",
                         f"<= 1.10: {met(t.get('auto_choice_within_10pct_met'))}"))
        if "auto_choice_vs_best_concurrent" in t:
            conc = r.get("in_process_concurrent", {})
            rows.append(("auto broke a tie by calls/s: in-process calls/s under concurrent "
                         "calls, best / chosen",
                         ", ".join(f"{k} {v['calls_per_s']}" for k, v in conc.items())
                         + f" = {t['auto_choice_vs_best_concurrent']}",
                         f"<= 1.10: {met(t['auto_choice_within_10pct_concurrent_met'])}"))
        if "litert_overhead_ms" in t:
            rows.append((f"LiteRT ({t['litert_artifact']}) served p50 - in-process p50",
                         f"{t['litert_served_p50_ms']} - {t['litert_in_process_p50_ms']} = "
                         f"{t['litert_overhead_ms']} ms",
                         f"<= 0.5 ms: {met(t['litert_overhead_target_0.5ms_met'])}"))
            if t.get("rest_json_decode_ms") is not None:
                by = r.get("rest_json_decode_ms_by_decoder", {})
                rows.append(("of which the REST body's JSON -> numpy alone (in-process p50)",
                             f"{t['rest_json_decode_ms']} ms ({d['request_body_bytes']} bytes)"
                             + (f"; pure-Python path {by['python']} ms" if "c" in by else ""),
                             ""))
            if "litert_grpc_overhead_ms" in t:
                rows.append(("LiteRT served gRPC p50 - in-process p50",
                             f"{r['p50_ms']['litert_grpc']} - {t['litert_in_process_p50_ms']} "
                             f"= {t['litert_grpc_overhead_ms']} ms", "(diagnostic)"))
        if r.get("server_cpu_ms_per_request"):
            rows.append(("server CPU ms per request (/proc, over every timed request)",
                         ", ".join(f"{p} {v}" for p, v in
                                   r["server_cpu_ms_per_request"].items()), "(recorded)"))
        rows.append(("server RSS MiB (model loaded, after the runs)",
                     ", ".join(f"{p} {v}" for p, v in t["rss_mib"].items()), "(recorded)"))
        acc = r.get("accuracy")
        if acc:
            rows.append((f"served top-1 accuracy, {acc['test_examples']} test digits",
                         ", ".join(f"{p} {acc[p]}" for p in r["servers"] if p in acc),
                         f"auto within 1 point of float: "
                         f"{met(t.get('auto_accuracy_within_1pt_met'))}"))
        else:
            rows.append(("served accuracy", "not measured (no --accuracy_data)",
                         "**not met** (needs a trained model and its test split)"))
        for label, m in d.get("batching_cpu", {}).items():
            goal = 2.0 if label == "mlp" else 1.5
            rows.append((f"batching, {m['clients']} gRPC clients, {label}: server CPU ms per "
                         "request unbatched / batched (req/s)",
                         f"{m['unbatched_cpu_ms_per_request']} / "
                         f"{m['batched_cpu_ms_per_request']} = {m['cpu_per_request_reduction']}x"
                         f" ({m['unbatched_rps']} / {m['batched_rps']} req/s)",
                         f">= {goal}x lower: {met(m['cpu_per_request_reduction'] >= goal)}"))
        load = d["cpu"]
        rows.append(("load average start / end", f"{[round(x, 1) for x in load['loadavg']]} / "
                     f"{[round(x, 1) for x in load['loadavg_end']]}", ""))
        for i, (a, b, c) in enumerate(rows):
            lines.append(f"| {model if i == 0 else ''} | {a} | {b} | {c} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_base_path", default=None,
                        help="An exported model's base path (default: build a tiny CNN).")
    parser.add_argument("--model_name", default="bench")
    parser.add_argument("--latency_requests", type=int, default=300)
    parser.add_argument("--throughput_requests", type=int, default=400)
    parser.add_argument("--load_requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--kserve_venv",
                        default=os.path.expanduser("~/.cache/tfdeploy/kserve-venv"))
    parser.add_argument("--no_kserve", action="store_true", help="Skip the KServe peer.")
    parser.add_argument("--repeats", type=int, default=3,
                        help="Rounds over all servers, alternating; medians are reported "
                             "(this machine is shared, so one round is noisy). Default 3.")
    parser.add_argument("--ref_pythonpath", default=None,
                        help="Also serve with tfdeploy from this directory (label 'ref').")
    parser.add_argument("--batching_models", nargs="*", default=["cnn", "mobilenet_v2", "mlp"],
                        choices=["cnn", "mobilenet_v2", "mlp", "mlp_wide"],
                        help="Models whose gRPC throughput is measured with batching off and "
                             "on, side by side. Default: cnn, "
                             "mobilenet_v2, mlp.")
    parser.add_argument("--batching_only", action="store_true",
                        help="Measure only the --batching_models (no latency, KServe or load "
                             "sections).")
    parser.add_argument("--model_requests", type=int, default=200,
                        help="Requests per throughput figure for the batching models.")
    parser.add_argument("--validation_only", action="store_true",
                        help="Measure only what input validation costs (served p50 with it "
                             "on and off, alternating rounds).")
    parser.add_argument("--runtimes", nargs="*", default=None,
                        choices=["tensorflow", "auto", "litert", "onnxruntime", "openvino"],
                        help="Measure only the serving runtimes: serve the model once per "
                             "--runtime given (separate processes), REST V1 batch 1, side by "
                             "side in alternating rounds; with the in-process timings "
                             "(bench_runtimes), RSS, accuracy and the issue-21 targets.")
    parser.add_argument("--runtime_model", default="cnn",
                        choices=["cnn", "mobilenet_v2_224"],
                        help="With --runtimes and no --model_base_path: the model to build.")
    parser.add_argument("--runtime_requests", type=int, default=300,
                        help="Requests per figure in --runtimes mode.")
    parser.add_argument("--runtime_concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runtime_kserve", action="store_true",
                        help="--runtimes: also time KServe's V1 REST on the SavedModel (the "
                             "--kserve_venv environment) in the same alternating rounds.")
    parser.add_argument("--runtime_apis", nargs="+", default=["rest"], choices=["rest", "grpc"],
                        help="--runtimes: also gRPC batch 1 (no JSON decoding) with 'grpc'.")
    parser.add_argument("--accuracy_data", default=None,
                        help="With --runtimes: a test split (DIR/<class>/*.png) whose served "
                             "top-1 accuracy is measured for every runtime.")
    parser.add_argument("--ratio_target", type=float, default=3.0,
                        help="auto/tensorflow requests/s target. Default 3.")
    parser.add_argument("--batching_cpu", nargs="*", default=None,
                        help="With --runtimes: models ('mlp', 'served', ...) whose server CPU "
                             "time per request at max(--concurrency) clients is measured "
                             "batched vs unbatched (gRPC, batch 1).")
    parser.add_argument("--batching_runtime", default="tensorflow",
                        help="--batching_cpu: the --runtime both servers run. Default "
                             "tensorflow.")
    parser.add_argument("--batching_parameters", default=None, metavar="FILE",
                        help="--runtimes: the batched servers' text-format BatchingParameters "
                             "instead of max_batch_size 32, batch_timeout_micros 2000, "
                             "num_batch_threads 2, max_enqueued_batches 64.")
    parser.add_argument("--batching_cpu_only", action="store_true",
                        help="With --runtimes and --batching_cpu: only the batching CPU rows.")
    parser.add_argument("--model_note", default=None, help="Recorded in the JSON.")
    parser.add_argument("--out", default=None, help="Also write the JSON here.")
    parser.add_argument("--model_label", default=None, help="The model's name in --table.")
    parser.add_argument("--table", nargs="+", default=None, metavar="JSON",
                        help="Print the markdown figures table of --runtimes JSON files.")
    args = parser.parse_args(argv)
    if args.table:
        print(runtimes_table(args.table))
        return 0

    tmp = tempfile.mkdtemp(prefix="bench_serving_")
    if args.runtimes is not None:
        args.runtimes = args.runtimes or ["tensorflow", "auto", "litert", "onnxruntime",
                                          "openvino"]
        batching_file = os.path.join(tmp, "batching.txt")
        with open(batching_file, "w") as f:   # the same as the other sections' "batching"
            f.write("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 2000 }\n"
                    "num_batch_threads { value: 2 }\nmax_enqueued_batches { value: 64 }\n")
        if args.batching_parameters:
            shutil.copyfile(args.batching_parameters, batching_file)
        if args.batching_cpu_only:
            return _batching_cpu_main(args, tmp, batching_file)
        return _runtimes_main(args, tmp, batching_file)
    base = args.model_base_path or os.path.join(tmp, "model")
    if args.model_base_path is None:
        _build_model(base)
    import tensorflow as tf

    fn, input_name, item_shape = _serving_default(base)
    shape = [1] + item_shape
    image = np.random.default_rng(0).integers(0, 256, size=shape).astype(np.float32)
    body = json.dumps({"instances": image.tolist()}).encode()
    _INPUTS[args.model_name] = input_name
    result = {"model_base_path": base, "input_shape": shape, "cpu_count": os.cpu_count(),
              "load_average_start": os.getloadavg()}
    const = tf.constant(image)
    errors, rounds = {}, []

    monitoring_file = os.path.join(tmp, "monitoring.config")
    with open(monitoring_file, "w") as f:
        f.write(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
    batching_files = {}
    for label, threads in (("batching", 2), ("batching_1thread", 1)):
        batching_files[label] = os.path.join(tmp, f"{label}.txt")
        with open(batching_files[label], "w") as f:
            f.write(f"max_batch_size {{ value: 32 }}\nbatch_timeout_micros {{ value: 2000 }}\n"
                    f"num_batch_threads {{ value: {threads} }}\n"
                    f"max_enqueued_batches {{ value: 64 }}\n")
    batching_file = batching_files["batching"]   # (2 threads: one per core)
    if args.validation_only:
        result["validation"] = _validation_cost(base, args.model_name, body, image, input_name,
                                                args.latency_requests)
        result["load_average_end"] = os.getloadavg()
        print(json.dumps(result, indent=2))
        return 0
    if args.batching_only:
        models = {}
        for rep in range(args.repeats):
            print(f"bench_serving: round {rep + 1}/{args.repeats}: batching models ...",
                  file=sys.stderr, flush=True)
            _batching_models(args, tmp, batching_files, monitoring_file, models)
        result[f"grpc_batching_speedup_c{max(args.concurrency)}_by_model"] = \
            _speedups(models, batching_files, max(args.concurrency))
        result["batching_models"] = models
        result["load_average_end"] = os.getloadavg()
        print(json.dumps(result, indent=2))
        return 0
    kserve = None
    if not args.no_kserve:
        try:
            script = os.path.join(tmp, "kserve_server.py")
            with open(script, "w") as f:
                f.write(KSERVE_SERVER)
            kserve = (kserve_python(args.kserve_venv), script)
        except (OSError, subprocess.CalledProcessError) as exc:
            result["kserve_error"] = f"KServe environment unavailable: {exc}"
    batched = {"batching_file": batching_file, "monitoring_file": monitoring_file}
    runs = [("tfdeploy", {}), ("tfdeploy_batching", batched),
            # the same server without gc.freeze() after loading (REST only)
            ("tfdeploy_no_gc_freeze", {"flags": ["--gc_freeze=false"]})]
    if kserve:
        runs.append(("kserve", {"kserve": kserve}))
    if args.ref_pythonpath:
        runs.append(("ref", {"pythonpath": args.ref_pythonpath}))
    exits = result["server_exit_codes"] = {}
    result["model_call"] = {"cnn": _call_costs(fn, input_name, item_shape)}
    models = {}
    for rep in range(args.repeats):
        print(f"bench_serving: round {rep + 1}/{args.repeats}: breakdown ...", file=sys.stderr,
              flush=True)
        breakdown = _breakdown(base, args.model_name, body, image, input_name,
                               args.latency_requests)
        latency = {"in_process": _percentiles(_latency(lambda: fn(**{input_name: const}),
                                                       args.latency_requests))}
        tp, batches = {}, {}
        for label, kw in runs:
            print(f"bench_serving: round {rep + 1}/{args.repeats}: measuring {label} ...",
                  file=sys.stderr, flush=True)
            server = _Server(args.model_name, base, **kw)
            try:
                errors.update(_measure(server, args.model_name, body, image, args,
                                       None if label == "tfdeploy_batching" else latency, tp,
                                       label, grpc_=label in ("tfdeploy",
                                                              "tfdeploy_batching", "ref"),
                                       batches=batches))
                if label == "kserve":
                    error = _kserve_grpc(kserve, server, args.model_name, shape, args, tmp,
                                         latency, tp)
                    if error:
                        result["kserve_grpc_error"] = error
                if label == "tfdeploy_batching" and rep == 0:
                    result["load"] = _load_run(server, args, body, image)
            finally:
                exits.setdefault(label, []).append(server.stop())
        _batching_models(args, tmp, batching_files, monitoring_file, models)
        rounds.append({"latency": latency, "throughput_rps": tp, "mean_batch_size": batches,
                       "breakdown_ms": breakdown,
                       "targets": _targets(latency, tp, args.concurrency, kserve),
                       "load_average": os.getloadavg()})
    latency = {k: {m: round(float(np.median([r["latency"][k][m] for r in rounds])), 3)
                   for m in ("p50_ms", "p99_ms")} for k in rounds[0]["latency"]}
    tp = {k: round(float(np.median([r["throughput_rps"][k] for r in rounds])), 1)
          for k in rounds[0]["throughput_rps"]}
    result["latency"], result["throughput_rps"] = latency, tp   # medians over the rounds
    result["breakdown_ms"] = {k: round(float(np.median([r["breakdown_ms"][k] for r in rounds])),
                                       3) for k in rounds[0]["breakdown_ms"]}
    c = max(args.concurrency)
    result[f"grpc_batching_speedup_c{c}_by_model"] = _speedups(models, batching_files, c)
    result["batching_models"] = models
    result["validation"] = _validation_cost(base, args.model_name, body, image, input_name,
                                            args.latency_requests)
    result["rounds"] = rounds
    if errors:
        result["errors"] = errors
    result["targets"] = _targets(latency, tp, args.concurrency, kserve)
    result["targets_met_in_rounds"] = {
        k: sum(bool(r["targets"].get(k)) for r in rounds)
        for k in ("rest_overhead_target_1ms_met", "rest_throughput_target_met",
                  "grpc_batching_target_3x_met")}
    result["load_average_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    return 0


def _speedups(models, batching_files, c):
    """Per model: its in-process ceiling and, per batching configuration, the median speed-up
    over unbatched at ``c`` clients with every round's figure and mean batch size."""
    speedups = {}
    for kind, m in models.items():
        speedups[kind] = {"model_call": m["model_call"]}
        for label in batching_files:
            per = [r["speedup"][label] for r in m["rounds"]]
            speedups[kind][label] = {
                "median": round(float(np.median(per)), 2), "rounds": per,
                f"mean_batch_size_c{c}": [r["mean_batch_size"].get(f"{label}_grpc_c{c}")
                                          for r in m["rounds"]]}
    return speedups


def _load_run(server, args, body, image):
    """A fixed number of requests, half REST half gRPC, 8 clients; 5xx count, memory growth."""
    warm = [_RestWorker(server.rest_port, args.model_name, body) for _ in range(4)] + \
        [_GrpcWorker(server.grpc_port, args.model_name, image) for _ in range(4)]
    _run_clients(warm, 400)
    rss_start = _rss_mib(server.proc.pid)
    _, counts = _run_clients(warm, args.load_requests)
    rss_end = _rss_mib(server.proc.pid)
    return {"requests": args.load_requests, "clients": len(warm),
            "status_counts": {str(k): v for k, v in sorted(counts.items())},
            "errors_5xx": sum(v for k, v in counts.items() if k >= 500),
            "rss_start_mib": round(rss_start, 1), "rss_end_mib": round(rss_end, 1),
            "rss_growth_mib": round(rss_end - rss_start, 1)}


if __name__ == "__main__":
    sys.exit(main())
