"""Benchmark the Open Inference Protocol (V2): ``tfdeploy serve`` beside MLServer.

Both servers run as separate processes on loopback ports and serve the same SavedModel
(``bench_serving``'s tiny CNN unless ``--model_base_path``), MLServer through a custom runtime
that loads it with ``tf.saved_model.load`` and calls ``serving_default``, as tfdeploy does.
The same V2 JSON body (REST) and the same ``ModelInferRequest`` with ``fp32_contents`` (gRPC)
go to both. Prints one JSON object:

- ``throughput_rps``: batch-1 requests/s at 1, 8 and 32 clients (keep-alive http.client
  threads; one gRPC channel per client), V2 REST and V2 gRPC, each server;
- ``p50_ms``: in-process signature call, tfdeploy V1 REST predict and V2 REST infer (the
  two sent alternately on one server);
- ``targets``: tfdeploy / MLServer per protocol and concurrency (>= 1 wanted), and V2 REST
  p50 overhead over in-process minus V1's (<= 0.1 ms wanted).

Every figure is the median over ``--repeats`` rounds; each round measures every server in
turn. MLServer runs from its own virtual environment (``--mlserver_venv``; made on first
use: ``python3.11 -m venv V && V/bin/pip install mlserver "tensorflow-cpu==2.21.*"``) with
``parallel_workers: 0`` (inference in its server process, as tfdeploy's).

    python benchmarks/bench_serving_v2.py
"""

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

from bench_serving import (_build_model, _free_port, _p50_ms, _run_clients,  # noqa: E402
                           _serving_default)

MLSERVER_RUNTIME = '''
import tensorflow as tf
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class SavedModelRuntime(MLModel):
    async def load(self):
        self.fn = tf.saved_model.load(self.settings.parameters.uri).signatures[
            "serving_default"]
        self.input = next(iter(self.fn.structured_input_signature[1]))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        out = self.fn(**{self.input: tf.constant(x)})
        return InferenceResponse(model_name=self.name, outputs=[
            NumpyCodec.encode_output(name=k, payload=v.numpy()) for k, v in out.items()])
'''


def mlserver_python(venv):
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(os.path.join(venv, "bin", "mlserver")):
        print(f"bench_serving_v2: creating {venv} (mlserver + tensorflow-cpu) ...",
              file=sys.stderr, flush=True)
        subprocess.run(["python3.11", "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "mlserver",
                        "tensorflow-cpu==2.21.*"], check=True)
    return python


class Server:
    """A server process; ``rest``/``grpc`` its ports; ready when the V2 ready route is 200."""

    def __init__(self, cmd, rest, grpc, env=None, cwd=None, timeout=300):
        self.rest, self.grpc = rest, grpc
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env, cwd=cwd)
        end = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[:3]} exited:\n{open(self.log.name).read()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", rest, timeout=5)
                conn.request("GET", "/v2/health/ready")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            except OSError:
                pass
            if time.monotonic() > end:
                self.close()
                raise RuntimeError(f"{cmd[:3]} not ready in {timeout} s")
            time.sleep(0.5)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.unlink(self.log.name)


def _rest_worker(port, path, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call():
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path}: {resp.status}")
    return call


def _grpc_worker(port, request):
    import grpc

    from tfdeploy.serving.protos_v2 import SERVICE, messages

    m = messages()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    infer = channel.unary_unary(f"/{SERVICE}/ModelInfer",
                                request_serializer=m.ModelInferRequest.SerializeToString,
                                response_deserializer=m.ModelInferResponse.FromString)
    return lambda: infer(request, timeout=60)


def _throughput(make, clients, total):
    """Requests/s of ``total`` calls over ``clients`` workers from ``make`` (each called once
    first), with bench_serving's client loop."""
    calls = [make() for _ in range(clients)]
    for call in calls:
        call()
    return _run_clients([lambda c=c: c() or 200 for c in calls], total)[0]


def _p50_pair_ms(call_a, call_b, n, warmup=20):
    """Medians of two calls made alternately (a, b, a, b, ...), so the machine's drift (this
    one is shared) falls on both alike."""
    for _ in range(warmup):
        call_a()
        call_b()
    times = ([], [])
    for _ in range(n):
        for call, out in ((call_a, times[0]), (call_b, times[1])):
            t = time.perf_counter()
            call()
            out.append(time.perf_counter() - t)
    return float(np.median(times[0])) * 1000, float(np.median(times[1])) * 1000


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_base_path", default=None)
    parser.add_argument("--model_name", default="bench")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--throughput_requests", type=int, default=400)
    parser.add_argument("--latency_requests", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mlserver_venv",
                        default=os.path.expanduser("~/.cache/tfdeploy/mlserver-venv"))
    args = parser.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="bench_serving_v2_")
    base = args.model_base_path or os.path.join(tmp, "model")
    if args.model_base_path is None:
        _build_model(base)
    import tensorflow as tf

    from tfdeploy.runtime.versions import latest_version_dir
    from tfdeploy.serving.protos_v2 import messages

    fn, input_name, item_shape = _serving_default(base)
    shape = [1] + item_shape
    x = np.random.default_rng(0).integers(0, 256, size=shape).astype(np.float32)
    name = args.model_name
    v2_body = json.dumps({"inputs": [{"name": input_name, "shape": shape, "datatype": "FP32",
                                      "data": x.reshape(-1).tolist()}]}).encode()
    v1_body = json.dumps({"instances": x.tolist()}).encode()
    request = messages().ModelInferRequest(model_name=name)
    tensor = request.inputs.add(name=input_name, datatype="FP32", shape=shape)
    tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())

    # MLServer: settings, the model's settings and the runtime module in one directory.
    ml_dir = os.path.join(tmp, "mlserver")
    os.makedirs(os.path.join(ml_dir, name))
    ml_rest, ml_grpc, ml_metrics = _free_port(), _free_port(), _free_port()
    with open(os.path.join(ml_dir, "settings.json"), "w") as f:
        json.dump({"host": "127.0.0.1", "http_port": ml_rest, "grpc_port": ml_grpc,
                   "metrics_port": ml_metrics, "parallel_workers": 0, "debug": False}, f)
    with open(os.path.join(ml_dir, name, "model-settings.json"), "w") as f:
        json.dump({"name": name, "implementation": "runtime.SavedModelRuntime",
                   "parameters": {"uri": latest_version_dir(base)[1]}}, f)
    with open(os.path.join(ml_dir, "runtime.py"), "w") as f:
        f.write(MLSERVER_RUNTIME)
    ml_python = mlserver_python(args.mlserver_venv)
    td_rest, td_grpc = _free_port(), _free_port()
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    servers = {
        "tfdeploy": Server([sys.executable, "-m", "tfdeploy.cli", "serve", "--model_name", name,
                            "--model_base_path", base, "--port", str(td_grpc),
                            "--rest_api_port", str(td_rest)], td_rest, td_grpc, env=env),
        "mlserver": Server([os.path.join(os.path.dirname(ml_python), "mlserver"), "start",
                            ml_dir], ml_rest, ml_grpc, cwd=ml_dir,
                           env=dict(os.environ, PYTHONPATH=ml_dir, TF_CPP_MIN_LOG_LEVEL="2")),
    }
    const = tf.constant(x)
    rounds = []
    try:
        for rep in range(args.repeats):
            print(f"bench_serving_v2: round {rep + 1}/{args.repeats}", file=sys.stderr,
                  flush=True)
            r = {"load_average": os.getloadavg()[0]}
            r["p50_ms_in_process"] = _p50_ms(lambda: fn(**{input_name: const}),
                                             args.latency_requests)
            td = servers["tfdeploy"]
            r["p50_ms_tfdeploy_v1_rest"], r["p50_ms_tfdeploy_v2_rest"] = _p50_pair_ms(
                _rest_worker(td.rest, f"/v1/models/{name}:predict", v1_body),
                _rest_worker(td.rest, f"/v2/models/{name}/infer", v2_body),
                args.latency_requests)
            for label, s in servers.items():
                for c in args.concurrency:
                    total = max(args.throughput_requests, c)
                    r[f"{label}_v2_rest_c{c}"] = _throughput(
                        lambda s=s: _rest_worker(s.rest, f"/v2/models/{name}/infer", v2_body),
                        c, total)
                    r[f"{label}_v2_grpc_c{c}"] = _throughput(
                        lambda s=s: _grpc_worker(s.grpc, request), c, total)
            rounds.append(r)
    finally:
        for s in servers.values():
            s.close()

    def med(key):
        return round(float(np.median([r[key] for r in rounds])), 3)
    result = {"model_base_path": base, "input_shape": shape, "repeats": args.repeats,
              "p50_ms": {k[len("p50_ms_"):]: med(k) for k in rounds[0] if k.startswith("p50")},
              "throughput_rps": {k: round(med(k), 1) for k in rounds[0]
                                 if k.startswith(("tfdeploy_v2", "mlserver_v2"))},
              "rounds": rounds}
    p = result["p50_ms"]
    targets = {"v2_rest_overhead_ms": round(p["tfdeploy_v2_rest"] - p["in_process"], 3),
               "v1_rest_overhead_ms": round(p["tfdeploy_v1_rest"] - p["in_process"], 3)}
    targets["v2_minus_v1_overhead_ms"] = round(targets["v2_rest_overhead_ms"] -
                                               targets["v1_rest_overhead_ms"], 3)
    targets["v2_overhead_within_0.1ms_of_v1"] = targets["v2_minus_v1_overhead_ms"] <= 0.1
    tp = result["throughput_rps"]
    for proto in ("rest", "grpc"):
        for c in args.concurrency:
            ratio = tp[f"tfdeploy_v2_{proto}_c{c}"] / tp[f"mlserver_v2_{proto}_c{c}"]
            targets[f"v2_{proto}_vs_mlserver_c{c}"] = round(ratio, 2)
    targets["at_least_mlserver_everywhere"] = all(
        v >= 1.0 for k, v in targets.items() if "_vs_mlserver_" in k)
    result["targets"] = targets
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
