"""Hostile input: a bounded fuzz of the REST and gRPC APIs over real sockets.

The server is ``tfdeploy serve`` in its own process with TensorFlow's oneDNN kernels
forced on (``TF_ENABLE_ONEDNN_OPTS=1``), where a convolution given a tensor of the wrong
rank aborts the process unless the request is validated first. Every answer must be a
4xx with TF Serving's error JSON (or 2xx), never a 5xx; the process is alive after every
request, valid requests keep their exact answers, and the server's memory stays bounded
(a tiny gRPC request declaring a huge tensor is refused before anything is allocated).
"""

import http.client
import json
import random
import threading

import numpy as np
import pytest

from test_serving_support import (ServerProcess, build_digits_classifier, build_half_plus_two,
                                  build_tf2_model, raw_exchange, rest_outcome)

pytest_plugins = ("test_serving_support",)

N_REST = 2200
N_GRPC = 80


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    build_half_plus_two(str(root / "half" / "1"))
    build_tf2_model(str(root / "tf2" / "1"))
    build_digits_classifier(str(root / "digits"))
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{root / name}" model_platform: "tensorflow"'
        f'{extra} }}\n' for name, extra in (
            ("half", ' version_labels { key: "stable" value: 1 }'), ("tf2", ""),
            ("digits", ""))) + "}\n")
    with ServerProcess(["--model_config_file", str(config), "--file_system_poll_wait_seconds",
                        "0", "--max_body_bytes", str(1 << 20), "--max_num_load_retries",
                        "0"]) as server:
        assert server.onednn_on(), "oneDNN must be on in the served process for this test"
        yield server


VALID = [  # (path, body, expected answer)
    ("/v1/models/half:predict", {"instances": [1.0, 2.0]}, {"predictions": [2.5, 3.0]}),
    ("/v1/models/half/labels/stable:predict", {"inputs": {"x": [4.0]}}, {"outputs": [4.0]}),
    ("/v1/models/half:regress", {"signature_name": "tensorflow/serving/regress",
                                 "examples": [{"x": 2.0}]}, {"results": [3.0]}),
    ("/v1/models/tf2:predict", {"signature_name": "multi",
                                "inputs": {"a": [1.0], "b": [[1, 2]]}},
     {"outputs": {"sum": [4.0], "b_twice": [[2, 4]]}}),
    ("/v1/models/tf2:predict", {"signature_name": "echo", "instances": ["hé"]},
     {"predictions": [{"echo_bytes": {"b64": "aMOp"}, "length": 3, "upper": "Hé"}]}),
]

_ODD_VALUES = [None, True, False, 0, -1, 1.5, "", "x", "\ud800", "a\udfffb", [], {}, [[]],
               {"b64": "!!"}, {"b64": 3}, {"b64": "\ud800"}, 10 ** 30, -(10 ** 30),
               10 ** 19, 2 ** 63, 1e308, [1, "a"], [1.5, 10 ** 400], [True, 1.5],
               [[1], 2], [1, [2]], {"\ud800": 1}, [None], ["a", {"b64": "YQ=="}],
               [{"b64": "YQ=="}, 1], [10 ** 400], [[1, 2], [3]], [1e400], float("nan")]


def _huge_int_body():
    return b'{"instances": [1' + b"0" * 5000 + b"]}"


def _mutations(rng):
    """Yield ``(method, path, raw_body_or_None)`` hostile requests across the categories."""
    paths = ["/v1/models/half", "/v1/models/tf2", "/v1/models/half/versions/1",
             "/v1/models/half/labels/stable", "/v1/models/digits"]
    verbs = [":predict", ":classify", ":regress"]
    while True:
        kind = rng.randrange(10)
        path = rng.choice(paths) + rng.choice(verbs)
        if kind == 0:    # huge integers everywhere
            yield "POST", path, rng.choice([
                _huge_int_body(),
                b'{"inputs": {"a": [1.0], "b": [[1' + b"9" * 4400 + b', 2]]}, '
                b'"signature_name": "multi"}',
                b'{"examples": [{"x": 1' + b"0" * 4400 + b'}]}',
                json.dumps({"instances": [10 ** rng.randrange(18, 400)]}).encode(),
                json.dumps({"signature_name": "multi", "inputs": {
                    "a": [1.0], "b": [[2 ** 63, -(2 ** 64)]]}}).encode()])
        elif kind == 1:  # lone surrogates in strings and names
            s = rng.choice(["\ud800", "\udfff", "a\ud83d", "\udc00x"])
            yield "POST", path, rng.choice([
                json.dumps({"instances": [s]}),
                json.dumps({"signature_name": s, "instances": [1.0]}),
                json.dumps({"instances": [{s: 1.0}]}),
                json.dumps({"inputs": {s: [1.0]}}),
                json.dumps({"signature_name": "echo", "instances": [s]}),
                json.dumps({"examples": [{s: 1.0}]}),
                json.dumps({"examples": [{"x": s}]}),
                json.dumps({"context": {s: [s]}, "examples": [{"x": 1.0}]})]).encode()
        elif kind == 2:  # mixed / odd types in classify & regress features
            feature = rng.choice(_ODD_VALUES)
            body = {"examples": [{"x": feature}, {"x": rng.choice(_ODD_VALUES)}]}
            if rng.random() < 0.3:
                body["context"] = {"y": rng.choice(_ODD_VALUES)}
            yield "POST", rng.choice(paths) + rng.choice([":classify", ":regress"]), \
                json.dumps(body).encode()
        elif kind == 3:  # oversized / odd versions and labels in the URL
            version = rng.choice(["9" * 19, "9" * 20, "1" + "0" * 5000, "%C2%B2", "%D9%A1",
                                  "-1", "00000000000000000000001", str(2 ** 63), "1e3"])
            label = rng.choice(["%ED%A0%80", "a" * 3000, "%00", "stable%2F..", "%FF"])
            base = rng.choice(["/v1/models/half/versions/" + version,
                               "/v1/models/half/labels/" + label,
                               "/v1/models/%ED%A0%80", "/v1/models/" + "m" * 5000])
            yield rng.choice(["GET", "POST"]), base + rng.choice(["", ":predict",
                                                                  "/metadata"]), \
                b'{"instances": [1.0]}'
        elif kind == 4:  # structural mutations of valid bodies
            body = json.loads(json.dumps(rng.choice(VALID)[1]))
            key = rng.choice(list(body))
            body[key] = rng.choice(_ODD_VALUES)
            if rng.random() < 0.3:
                body[rng.choice(["instances", "inputs", "examples", "context"])] = \
                    rng.choice(_ODD_VALUES)
            yield "POST", path, json.dumps(body).encode()
        elif kind == 5:  # broken bytes
            valid = json.dumps(rng.choice(VALID)[1]).encode()
            cut = rng.randrange(len(valid))
            yield "POST", path, rng.choice([
                valid[:cut], bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))),
                valid.replace(b'"', b"'"), b"\xef\xbb\xbf" + valid, valid + b"garbage",
                b"[" * 5000, b'{"instances": ' + b"[" * 3000 + b"]" * 3000 + b"}"])
        elif kind == 6:  # deep nesting, ragged and empty shapes, wrong ranks and dims
            if rng.random() < 0.4:   # a convolution fed these aborts under oneDNN unchecked
                yield "POST", "/v1/models/digits:predict", json.dumps(rng.choice([
                    {"instances": [0]}, {"instances": [[[0]]]}, {"instances": [[0, 0, 0]]},
                    {"inputs": [[[0]]]}, {"inputs": 0}, {"instances": [[[[[0]]]]]},
                    {"inputs": {"images": [[[0.0] * 3] * 32] * 32}},
                    {"instances": [[[[0.0]] * 31] * 32]}, {"instances": [[[[0.0, 1.0]] * 32] * 32]},
                    {"instances": []}, {"inputs": [[]]},
                    {"signature_name": "serving_bytes", "instances": [[{"b64": "AA=="}]]},
                    {"signature_name": "serving_bytes", "inputs": {"b64": "AA=="}}])).encode()
                continue
            yield "POST", path, json.dumps(rng.choice([
                {"instances": [[1.0], [2.0, 3.0]]}, {"instances": [[]]},
                {"inputs": {"x": [[[[1.0]]]]}}, {"instances": [{"x": 1.0}, 2.0]},
                {"instances": [1.0], "inputs": [1.0]}, {"inputs": []},
                {"signature_name": "multi", "inputs": {"a": [1.0], "b": [[1, 2, 3]]}},
                {"signature_name": "multi", "instances": [{"a": 1.0, "b": [1, 2]}, {"a": 2.0}]},
                {"signature_name": "multi", "inputs": {"a": [1.0], "b": [[1.5, 2]]}},
                {"signature_name": "complex", "inputs": {"c": [1.0]}},
                {"signature_name": "slow", "inputs": {"n": 10 ** 12}},
                {"signature_name": "echo", "instances": [{"b64": "%%%"}]}])).encode()
        elif kind == 7:  # numbers at the edge of every dtype
            value = rng.choice([1e39, -1e39, 65504.0, 1e-46, 2 ** 31, 2 ** 53 + 1, -2 ** 63])
            yield "POST", rng.choice(paths[:2]) + ":predict", json.dumps(rng.choice([
                {"instances": [value]},
                {"signature_name": "multi", "inputs": {"a": [value], "b": [[1, 2]]}},
                {"signature_name": "multi", "inputs": {"a": [1.0], "b": [[int(value), 1]]}},
            ])).encode()
        elif kind == 8:  # odd methods and paths
            yield rng.choice(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]), rng.choice([
                "/", "/v1", "/v1/models", "/v1/models/", "/v1/models/half:explain",
                "/v1/models/half/versions/1/metadata:predict", "/v1/models/half/labels/",
                "/v1/models/..%2F..%2Fetc%2Fpasswd", "/monitoring/prometheus/metrics",
                "/v1/models/half?x=%ED%A0%80", "//v1//models//half"]), b"{}"
        else:            # valid requests whose answers must not change
            p, body, _ = rng.choice(VALID)
            yield "POST", p, json.dumps(body).encode()


def _send(conn, method, path, raw):
    conn.request(method, path, body=raw if method in ("POST", "PUT", "PATCH") else None,
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.getheader("Content-Type", ""), resp.read()


def test_rest_fuzz_never_answers_5xx_and_valid_answers_do_not_change(hostile_server):
    port = hostile_server.rest_port
    rng = random.Random(1234)
    gen = _mutations(rng)
    requests = [next(gen) for _ in range(N_REST)]
    rss_before = hostile_server.rss_mb()
    failures, counts = [], {}
    lock = threading.Lock()

    def worker(chunk):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for method, path, raw in chunk:
            try:
                status, ctype, body = _send(conn, method, path, raw)
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                status, ctype, body = _send(conn, method, path, raw)
            with lock:
                counts[status] = counts.get(status, 0) + 1
            if not hostile_server.alive():
                with lock:
                    failures.append(("the server process ended after", method, path,
                                     raw[:200] if raw else raw,
                                     hostile_server.output()[-1500:]))
                return
            bad = status >= 500
            if 400 <= status < 500 and ctype.startswith("application/json"):
                reply = json.loads(body)
                bad = bad or set(reply) != {"error"} or not isinstance(reply["error"], str)
            if bad:
                with lock:
                    failures.append((method, path, raw[:120] if raw else raw, status, body[:200]))
        conn.close()

    threads = [threading.Thread(target=worker, args=(requests[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, f"{len(failures)} bad answers, e.g. {failures[:5]}"
    assert sum(counts.values()) == N_REST
    assert sum(v for k, v in counts.items() if 400 <= k < 500) > N_REST // 2, counts
    # still alive, still right
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for path, body, expected in VALID:
        status, _, reply = _send(conn, "POST", path, json.dumps(body).encode())
        assert (status, json.loads(reply)) == (200, expected), path
    conn.close()
    assert hostile_server.rss_mb() - rss_before < 400, (rss_before, hostile_server.rss_mb())


def _grpc_cases():
    """(method, request) pairs of malformed gRPC requests built with the official stubs."""
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                         get_model_status_pb2, inference_pb2, predict_pb2,
                                         regression_pb2)

    def predict(name="half", sig="", version=None, label=None, **inputs):
        r = predict_pb2.PredictRequest()
        r.model_spec.name = name
        r.model_spec.signature_name = sig
        if version is not None:
            r.model_spec.version.value = version
        if label is not None:
            r.model_spec.version_label = label
        for k, v in inputs.items():
            r.inputs[k].CopyFrom(v)
        return r

    def declared(dims, dtype=types_pb2.DT_FLOAT, **values):
        t = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]))
        for k, v in values.items():
            getattr(t, k).extend(v) if isinstance(v, list) else setattr(t, k, v)
        return t

    cases = [
        ("Predict", predict(x=declared([1 << 26], float_val=[1.0]))),           # 39 bytes, 256 MB
        ("Predict", predict(x=declared([1 << 20, 1 << 20], float_val=[1.0]))),
        ("Predict", predict(x=declared([(1 << 62)], float_val=[1.0]))),
        ("Predict", predict(x=declared([-1], float_val=[1.0]))),
        ("Predict", predict(x=declared([3], tensor_content=b"\x00" * 5))),
        ("Predict", predict(x=declared([1 << 25], dtype=types_pb2.DT_STRING,
                                       string_val=[b"a"]))),
        ("Predict", predict(x=declared([2], dtype=types_pb2.DT_DOUBLE, double_val=[1.0, 2.0]))),
        ("Predict", predict(x=declared([2], dtype=types_pb2.DT_STRING, string_val=[b"a", b"b"]))),
        ("Predict", predict(x=declared([1], dtype=types_pb2.DT_COMPLEX64, scomplex_val=[1, 2]))),
        ("Predict", predict(x=declared([1], dtype=999, float_val=[1.0]))),
        ("Predict", predict(x=declared([1], dtype=types_pb2.DT_RESOURCE))),
        ("Predict", predict(x=declared([1], dtype=types_pb2.DT_VARIANT))),
        ("Predict", predict(x=tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(unknown_rank=True)))),
        ("Predict", predict(name="", x=declared([1], float_val=[1.0]))),
        ("Predict", predict(name="nope", x=declared([1], float_val=[1.0]))),
        ("Predict", predict(version=(1 << 63) - 1, x=declared([1], float_val=[1.0]))),
        ("Predict", predict(version=-(1 << 63), x=declared([1], float_val=[1.0]))),
        ("Predict", predict(label="nope", x=declared([1], float_val=[1.0]))),
        ("Predict", predict(sig="nope", x=declared([1], float_val=[1.0]))),
        ("Predict", predict(sig="slow",
                            n=declared([], dtype=types_pb2.DT_INT32, int_val=[-5]))),
        ("Predict", predict(y=declared([1], float_val=[1.0]))),
        ("Predict", predict()),
        ("Predict", predict(x=declared([2, 2], float_val=[1.0, 2, 3, 4]))),
        ("Predict", predict(x=declared([0], float_val=[]))),
        ("Predict", predict(name="tf2", sig="multi", a=declared([1], float_val=[1.0]),
                            b=declared([1, 3], dtype=types_pb2.DT_INT64, int64_val=[1, 2, 3]))),
        ("Predict", predict(name="tf2", sig="multi", a=declared([2], float_val=[1.0, 2.0]),
                            b=declared([1, 2], dtype=types_pb2.DT_INT64, int64_val=[1, 2]))),
        ("Predict", predict(name="tf2", sig="echo",
                            data_bytes=declared([1], dtype=types_pb2.DT_STRING,
                                                string_val=[b"\xff\xfe"]))),
    ]
    for dims in ([1], [], [1, 32, 32], [1, 1, 32, 32, 1], [1, 32, 32, 3], [1, 31, 32, 1],
                 [0, 32, 32, 1], [2, 1, 1, 1]):   # wrong ranks and dims for a convolution
        n = int(np.prod(dims)) if dims else 1
        cases.append(("Predict", predict(name="digits", images=declared(
            dims, tensor_content=np.zeros(n, np.float32).tobytes()))))
    cases.append(("Predict", predict(name="digits", images=declared(
        [1, 32, 32, 1], dtype=types_pb2.DT_DOUBLE,
        tensor_content=np.zeros(1024, np.float64).tobytes()))))
    r = predict(x=declared([1], float_val=[1.0]))
    r.output_filter.extend(["nope"])
    cases.append(("Predict", r))
    r = predict(x=declared([1], float_val=[1.0]))
    r.output_filter.extend(["y", "y"])
    cases.append(("Predict", r))
    for kind, req_cls in (("Classify", classification_pb2.ClassificationRequest),
                          ("Regress", regression_pb2.RegressionRequest)):
        for sig in ("", "tensorflow/serving/classify", "tensorflow/serving/regress", "nope",
                    "complex"):
            r = req_cls()
            r.model_spec.name = "half"
            r.model_spec.signature_name = sig
            ex = r.input.example_list.examples.add()
            ex.features.feature["x"].bytes_list.value.append(b"not a float")
            cases.append((kind, r))
            r2 = req_cls()
            r2.model_spec.name = "half"
            r2.model_spec.signature_name = sig
            cases.append((kind, r2))                                    # empty input
            r3 = req_cls()
            r3.model_spec.name = "half"
            r3.model_spec.signature_name = sig
            ctx = r3.input.example_list_with_context
            ctx.context.features.feature["x"].float_list.value.extend([1.0, 2.0])
            ctx.examples.add().features.feature["z"].int64_list.value.append(1)
            cases.append((kind, r3))
    for tasks in ([], [("half", "tensorflow/serving/regress", "tensorflow/serving/regress"),
                       ("tf2", "tensorflow/serving/regress", "tensorflow/serving/regress")],
                  [("half", "tensorflow/serving/regress", "tensorflow/serving/regress")] * 2,
                  [("half", "tensorflow/serving/regress", "tensorflow/serving/predict")],
                  [("half", "nope", "tensorflow/serving/classify")],
                  [("nope", "x", "tensorflow/serving/classify")]):
        r = inference_pb2.MultiInferenceRequest()
        for name, sig, method in tasks:
            t = r.tasks.add(method_name=method)
            t.model_spec.name, t.model_spec.signature_name = name, sig
        r.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
        cases.append(("MultiInference", r))
    for fields in ([], ["nope"], ["signature_def", "x"]):
        r = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
        r.model_spec.name = "half"
        cases.append(("GetModelMetadata", r))
    for version in (-1, 7, (1 << 63) - 1):
        r = get_model_status_pb2.GetModelStatusRequest()
        r.model_spec.name = "half"
        r.model_spec.version.value = version
        cases.append(("GetModelStatus", r))
    del tf
    return cases


def test_grpc_fuzz_never_internal_and_huge_declared_tensors_allocate_nothing(hostile_server):
    import grpc
    from tensorflow_serving.apis import (model_service_pb2_grpc, predict_pb2,
                                         prediction_service_pb2_grpc)

    import tensorflow as tf

    cases = _grpc_cases()
    raw = [b"\x0a\x05\x0a\x03\xff\xfe\xfd", b"\xff" * 40, b"\x0a", b"\x12\x80\x80\x80\x80\x10"]
    assert len(cases) + len(raw) >= 50
    rss_before = hostile_server.rss_mb()
    bad = []
    with grpc.insecure_channel(f"127.0.0.1:{hostile_server.grpc_port}") as channel:
        pred = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        for method, request in cases * 2:
            stub = models if method == "GetModelStatus" else pred
            try:
                getattr(stub, method)(request, timeout=60)
            except grpc.RpcError as exc:
                if exc.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                                  grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNAVAILABLE):
                    bad.append((method, exc.code(), exc.details()))
            assert hostile_server.alive(), (method, str(request)[:300],
                                            hostile_server.output()[-2000:])
        # bytes that are not a valid request at all (invalid UTF-8 in a string field, etc.)
        call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                   request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        for payload in raw * 3:
            try:
                call(payload, timeout=60)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.INVALID_ARGUMENT and \
                        exc.code() != grpc.StatusCode.NOT_FOUND:
                    bad.append(("raw", exc.code(), exc.details()))
        # the 39-byte request declaring 67 M floats is refused from its declared shape alone
        with pytest.raises(grpc.RpcError) as info:
            pred.Predict(cases[0][1], timeout=60)
        assert len(cases[0][1].SerializeToString()) < 64
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "declared shape needs 268435456 bytes" in info.value.details()
        ok = predict_pb2.PredictRequest()
        ok.model_spec.name = "half"
        ok.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([2.0], np.float32)))
        answer = pred.Predict(ok, timeout=60)
        assert tf.make_ndarray(answer.outputs["y"]).tolist() == [3.0]
    assert not bad, bad
    assert hostile_server.alive()
    assert hostile_server.rss_mb() - rss_before < 150, (rss_before, hostile_server.rss_mb())


def _png(width, height, rows=None):
    """A grayscale PNG; ``rows`` None writes all-zero pixel rows (compresses to almost nothing)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = rows if rows is not None else b"\x00" * ((width + 1) * height)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def test_serving_bytes_checks_the_image_header_before_decoding(served):
    import base64

    from test_serving_support import rest_call

    small = _png(32, 32)
    status, body = rest_call(served.rest_port, "POST", "/v1/models/digits:predict", {
        "signature_name": "serving_bytes",
        "instances": [{"b64": base64.b64encode(small).decode()}]})
    assert status == 200 and len(body["predictions"][0]["probabilities"]) == 10
    big = _png(6000, 6000)          # 36 M pixels declared, ~36 KB sent
    assert len(big) < 200_000
    rss_before = _rss_mb()
    for image in (big, big[:64], b"RIFF0000WEBPVP8 " + b"\x00" * 64):
        status, body = rest_call(served.rest_port, "POST", "/v1/models/digits:predict", {
            "signature_name": "serving_bytes",
            "instances": [{"b64": base64.b64encode(image).decode()}]})
        assert status == 400, body
        assert "serving_bytes: the image is not a PNG/JPEG/GIF/BMP whose header declares at " \
               "most 16777216 pixels" in body["error"]
    assert _rss_mb() - rss_before < 100, (rss_before, _rss_mb())


def test_large_json_bodies_decode_within_a_small_multiple_of_their_size(monkeypatch):
    import tracemalloc

    import tensorflow as tf

    from tfdeploy.serving import json_fast, rest_json
    from tfdeploy.serving.rest import RestApi

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 32, 32, 1)).astype(np.float32) / 7
    floats = {"x": tf.float32}
    bodies = [
        json.dumps({"instances": images.tolist()}),
        json.dumps({"inputs": {"x": images.tolist()}}),
        json.dumps({"signature_name": "s", "instances": [{"x": im.tolist()} for im in images]}),
        json.dumps({"instances": images.tolist()[:-1] + [[[[1.0]]]]}),          # ragged
        json.dumps({"instances": images.tolist()}).replace("1.0,", "01,", 1),  # not JSON
        json.dumps({"instances": images.tolist()}).replace("1.0,", "NaN,", 1),
        json.dumps({"instances": images.astype(int).tolist()}),
        json.dumps({"instances": [images.tolist(), "x"]}),
        # a number outside its innermost brackets: the skeleton of a rectangular array
        json.dumps({"instances": images.tolist()}).replace("], [", "]7, [", 1),
        json.dumps({"instances": images.tolist()}).replace("], [", "], 7[", 1),
        json.dumps({"instances": images.tolist()}).replace("]]", "]]7", 1),
        # numbers of every form
        json.dumps({"instances": (images * 1e-30).tolist()}),
        json.dumps({"instances": (images.astype(np.float64) * -1e200).tolist()}),
    ]

    assert all(len(b) > json_fast.MIN_BODY for b in bodies)
    for text in bodies:
        for dtypes in (floats, {"x": tf.int64}, {"x": tf.float64}):
            fast = rest_outcome(text, dtypes)
            with monkeypatch.context() as m:
                m.setattr(json_fast, "MIN_BODY", 1 << 62)   # the plain json path
                slow = rest_outcome(text, dtypes)
            assert fast == slow, (text[:80], dtypes)

    body = json.dumps({"instances": (rng.random((32, 32, 32, 1)) * 255).round(2).tolist()})
    peaks = {}
    for path, minimum in (("fast", json_fast.MIN_BODY), ("json", 1 << 62)):
        with monkeypatch.context() as m:
            m.setattr(json_fast, "MIN_BODY", minimum)
            tracemalloc.start()
            rest_json.parse_predict(RestApi._parse_body(body.encode()), floats)
            peaks[path] = tracemalloc.get_traced_memory()[1] / len(body)
            tracemalloc.stop()
    # peak traced memory / body size: a small multiple (the body, its numeric span, the
    # numbers' text and the float64 array), against 11-14x through json.loads
    assert peaks["fast"] < 6 and peaks["json"] > 2 * peaks["fast"], peaks


def test_http_layer_smuggling_and_slowloris(tmp_path):
    import socket
    import time

    from tfdeploy.serving import create_server

    build_half_plus_two(str(tmp_path / "half" / "1"))
    server = create_server(model_name="half", model_base_path=str(tmp_path / "half"), port=None,
                           rest_api_port=0, file_system_poll_wait_seconds=0,
                           rest_api_num_threads=2, max_connections=64).start()
    port = server.rest_port

    def exchange(raw):
        return raw_exchange(port, raw, timeout=10)

    try:
        # two different Content-Length headers: refused, never guessed
        reply = exchange(b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: 5\r\nContent-Length: 20\r\n\r\n"
                         b'{"instances": [1.0]}')
        assert reply.startswith(b"HTTP/1.1 400") and reply.count(b"HTTP/1.1 ") == 1, reply[:200]
        # a GET body is read as a body, not as a second (smuggled) request
        hidden = b"GET /v1/models/nope HTTP/1.1\r\nHost: x\r\n\r\n"
        reply = exchange(b"GET /v1/models/half HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                         b"\r\n" % len(hidden) + hidden)
        assert reply.count(b"HTTP/1.1 ") == 1 and reply.startswith(b"HTTP/1.1 200")
        # 20 trickling clients (10x the worker threads) do not block a real request
        slow = []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nContent-Le")
            slow.append(s)
        time.sleep(0.3)
        for s in slow:
            s.sendall(b"n")
        from test_serving_support import rest_call

        assert rest_call(port, "POST", "/v1/models/half:predict", {"instances": [2.0]},
                         timeout=30) == (200, {"predictions": [3.0]})
        for s in slow:
            s.close()
    finally:
        server.stop()
