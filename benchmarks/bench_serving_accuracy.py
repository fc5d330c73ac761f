"""Accuracy of the served answers, per ``--runtime``: a test split sent through a running server.

    python benchmarks/mobilenet_v2_224_model.py --out /tmp/mnv2      # the model and its test split
    python benchmarks/bench_serving_accuracy.py --model_base_path /tmp/mnv2/mobilenet_v2 \\
        --model_name mobilenet_v2 --data /tmp/mnv2/test --model_json /tmp/mnv2/model.json \\
        --out docs/bench_serving_accuracy_mobilenet_v2.json

For every ``--runtimes`` policy (default: tensorflow, auto, litert, onnxruntime, openvino) one
``tfdeploy serve --runtime POLICY`` process is started (one at a time), and every image of
``--data`` (class folders, read at the model's input size; labels in folder order) is sent to
it at batch ``--batch`` over REST V1 (``instances``) and over gRPC (the official
``tensorflow-serving-api`` stubs); the answer's ``class_index`` is compared with the label.
Recorded per policy: what served ``serving_default`` (``metadata.runtime.serving``), REST and
gRPC top-1 accuracy, their difference from the SavedModel served through TensorFlow (float,
the reference) in points, and how many answers differ from it. Target (issue 21): every
runtime's, and ``auto``'s in particular, within 1 point of float.
"""

import argparse
import http.client
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_serving as bs  # noqa: E402  (this folder's bench: _Server, _served_runtime)
from _record import write_result  # noqa: E402

REPO = bs.REPO


def single_artifact_base(version_dir, name, root):
    """A model base path whose version 1 is ``version_dir`` (links) with a manifest listing
    only artifact ``name``: a server started with a named ``--runtime`` then serves exactly
    that file (the named runtime takes the first artifact it can run)."""
    from tfdeploy.runtime.artifacts import MANIFEST_PATH, VERIFICATION_PATH

    base = os.path.join(root, name)
    target = os.path.join(base, "1")
    os.makedirs(os.path.join(target, os.path.dirname(MANIFEST_PATH)), exist_ok=True)
    with open(os.path.join(version_dir, MANIFEST_PATH)) as f:
        manifest = json.load(f)
    files = {a["file"] for a in manifest["artifacts"]}
    for entry in os.listdir(version_dir):
        if entry in files:   # (the manifest's files must lie in the version directory)
            shutil.copy(os.path.join(version_dir, entry), os.path.join(target, entry))
        elif entry != os.path.dirname(MANIFEST_PATH):
            os.symlink(os.path.join(version_dir, entry), os.path.join(target, entry))
    extra = os.path.join(version_dir, os.path.dirname(MANIFEST_PATH))
    for entry in os.listdir(extra):
        if entry == os.path.basename(VERIFICATION_PATH):   # must lie in the version directory
            shutil.copy(os.path.join(extra, entry), os.path.join(target, VERIFICATION_PATH))
        elif entry != os.path.basename(MANIFEST_PATH):
            os.symlink(os.path.join(extra, entry),
                       os.path.join(target, os.path.dirname(MANIFEST_PATH), entry))
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["name"] == name]
    with open(os.path.join(target, MANIFEST_PATH), "w") as f:
        json.dump(manifest, f)
    return base


def rest_classes(server, name, bodies):
    """``class_index`` of a server's REST predict answers to ``bodies`` (a new connection
    for a request the server closed the connection on, once)."""
    out = []
    for body in bodies:
        for attempt in (0, 1):
            conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=600)
            try:
                conn.request("POST", f"/v1/models/{name}:predict", body,
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = json.loads(resp.read())
                break
            except (ConnectionError, http.client.HTTPException):
                if attempt:
                    raise
            finally:
                conn.close()
        if resp.status != 200:
            raise RuntimeError(f"accuracy request failed: {resp.status} {data}")
        out.extend(int(p["class_index"]) for p in data["predictions"])
    return np.asarray(out, dtype=np.int64)


def grpc_classes(server, name, input_name, x, batch):
    """``class_index`` of a server's gRPC Predict answers on ``x``, at ``batch`` per request."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}",
                               options=[("grpc.max_receive_message_length", 64 << 20),
                                        ("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        out = []
        for i in range(0, len(x), batch):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = name
            request.inputs[input_name].CopyFrom(tf.make_tensor_proto(x[i:i + batch]))
            request.output_filter.append("class_index")
            reply = stub.Predict(request, timeout=300)
            out.append(tf.make_ndarray(reply.outputs["class_index"]))
    return np.concatenate(out).astype(np.int64)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_base_path", required=True)
    p.add_argument("--model_name", default="model")
    p.add_argument("--data", required=True, help="the test split: one folder per class")
    p.add_argument("--runtimes", nargs="+",
                   default=["tensorflow", "auto", "litert", "onnxruntime", "openvino"])
    p.add_argument("--artifacts", action="store_true",
                   help="also serve every artifact of the version on each runtime that runs "
                        "it (int8 files included), one server each (policy RUNTIME/ARTIFACT)")
    p.add_argument("--batch", type=int, default=16, help="examples per request")
    p.add_argument("--model_json", default=None,
                   help="the JSON mobilenet_v2_224_model.py wrote (how the model was made), "
                        "copied into the output")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    sys.path.insert(0, REPO)
    import tfdeploy as td

    _, input_name, item_shape = bs._serving_default(args.model_base_path)
    h, w, ch = item_shape
    ds = td.data.image_dataset(args.data, image_size=(h, w),
                               color_mode="grayscale" if ch == 1 else "rgb")
    x, y = td.data.to_numpy(ds)
    result = {"benchmark": "bench_serving_accuracy", "argv": sys.argv[1:] if argv is None
              else list(argv), "model_base_path": args.model_base_path,
              "version_dir": bs.latest_dir(args.model_base_path), "data": args.data,
              "test_examples": int(len(y)), "classes": list(ds.class_names),
              "input_shape": [None] + item_shape, "batch_per_request": args.batch,
              "load_average_start": os.getloadavg()}
    if args.model_json:
        with open(args.model_json) as f:
            result["model"] = json.load(f)
    bodies = [json.dumps({"instances": [{input_name: row.tolist()} for row in
                                        x[i:i + args.batch]]}).encode()
              for i in range(0, len(x), args.batch)]
    served = result["servers"] = {}
    classes = {}
    plan = [(policy, policy, args.model_base_path) for policy in args.runtimes]
    if args.artifacts:
        import tempfile

        from tfdeploy.runtime.artifacts import read_artifacts

        root = tempfile.mkdtemp(prefix="bench_serving_accuracy_")
        for entry in read_artifacts(result["version_dir"])[1:]:
            one = single_artifact_base(result["version_dir"], entry["name"], root)
            plan += [(f"{rt}/{entry['name']}", rt, one) for rt in entry["runtimes"]]
    for policy, runtime_flag, base in plan:
        print(f"bench_serving_accuracy: {policy} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        server = bs._Server(args.model_name, base, flags=[f"--runtime={runtime_flag}"])
        try:
            row = served[policy] = {"ready_s": round(time.perf_counter() - start, 1)}
            runtime = bs._served_runtime(server, args.model_name) or {}
            row["serving"] = runtime.get("serving")
            if policy == "auto":
                row["verified_on"] = runtime.get("verified_on")
                row["candidates"] = [{k: c.get(k) for k in ("runtime", "artifact", "passed",
                                                            "agreement", "examples",
                                                            "verified_on", "p50_ms", "reason")}
                                     for c in runtime.get("candidates", [])]
            rest_pred = rest_classes(server, args.model_name, bodies)
            rest_acc = float(np.mean(rest_pred == y))
            grpc_pred = grpc_classes(server, args.model_name, input_name, x, args.batch)
            row["rest_accuracy"] = round(rest_acc, 4)
            row["grpc_accuracy"] = round(float(np.mean(grpc_pred == y)), 4)
            row["rest_grpc_answers_differ"] = int(np.sum(rest_pred != grpc_pred))
            classes[policy] = rest_pred
        finally:
            row["exit_code"] = server.stop()
    if "tensorflow" in classes:
        ref, ref_acc = classes["tensorflow"], served["tensorflow"]["rest_accuracy"]
        for policy, row in served.items():
            row["minus_float_points"] = round((row["rest_accuracy"] - ref_acc) * 100, 2)
            row["answers_differing_from_float"] = int(np.sum(classes[policy] != ref))
            row["within_1_point_of_float"] = abs(row["minus_float_points"]) <= 1.0
        result["target_within_1_point_met"] = all(r["within_1_point_of_float"]
                                                  for r in served.values())
    result["load_average_end"] = os.getloadavg()
    write_result(result, args.out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
