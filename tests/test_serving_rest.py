"""TF Serving's REST API through a running server on a real socket."""

import base64
import json
import socket

import numpy as np
import pytest

from test_serving_support import digit_images, rest_call

pytest_plugins = ("test_serving_support",)  # fixtures: model_root, served


@pytest.fixture()
def rest(served):
    def call(method, path, body=None, **kw):
        return rest_call(served.rest_port, method, path, body, **kw)
    return call


# -- status and metadata --------------------------------------------------------------------
def test_status_exact_shape(rest):
    assert rest("GET", "/v1/models/half") == (200, {"model_version_status": [
        {"version": "1", "state": "AVAILABLE",
         "status": {"error_code": "OK", "error_message": ""}}]})
    assert rest("GET", "/v1/models/half/versions/1")[0] == 200
    assert rest("GET", "/v1/models/half/labels/stable")[1]["model_version_status"][0]["version"] \
        == "1"


def test_status_errors(rest):
    assert rest("GET", "/v1/models/nope") == (
        404, {"error": "Could not find any versions of model nope"})
    assert rest("GET", "/v1/models/half/versions/7") == (
        404, {"error": "Could not find version 7 of model half"})


def test_metadata_matches_saved_model_pb(rest, model_root):
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2

    status, body = rest("GET", "/v1/models/half/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "half", "signature_name": "", "version": "1"}
    sigs = body["metadata"]["signature_def"]["signature_def"]
    pb = saved_model_pb2.SavedModel()
    pb.ParseFromString((model_root / "half" / "1" / "saved_model.pb").read_bytes())
    expected = pb.meta_graphs[0].signature_def
    assert set(sigs) == set(expected)
    x = sigs["serving_default"]["inputs"]["x"]
    assert x == {"name": "x:0", "dtype": "DT_FLOAT",
                 "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False}}
    assert sigs["tensorflow/serving/regress"]["method_name"] == "tensorflow/serving/regress"
    for key in expected:
        assert json_format.ParseDict(sigs[key], type(expected[key])()) == expected[key]


def test_metadata_of_tfdeploy_export(rest):
    status, body = rest("GET", "/v1/models/digits/metadata")
    assert status == 200
    sig = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    dims = [d["size"] for d in sig["inputs"]["images"]["tensor_shape"]["dim"]]
    assert dims == ["-1", "32", "32", "1"]
    assert {"probabilities", "class_index", "class_label"} <= set(sig["outputs"])


# -- predict ----------------------------------------------------------------------------------
def test_predict_row_and_columnar_tf1(rest):
    assert rest("POST", "/v1/models/half:predict", {"instances": [1.0, 2.0, 5.0]}) == (
        200, {"predictions": [2.5, 3.0, 4.5]})
    assert rest("POST", "/v1/models/half/versions/1:predict", {"inputs": [1.0, 2.0, 5.0]}) == (
        200, {"outputs": [2.5, 3.0, 4.5]})
    assert rest("POST", "/v1/models/half/labels/stable:predict",
                {"signature_name": "predict", "instances": [{"x": 4.0}]}) == (
        200, {"predictions": [4.0]})


def test_predict_named_inputs_and_multiple_outputs_tf2(rest):
    status, body = rest("POST", "/v1/models/tf2:predict", {
        "signature_name": "multi", "instances": [{"a": 1.0, "b": [1, 2]}, {"a": 0.5, "b": [3, 4]}]})
    assert status == 200
    assert body == {"predictions": [{"sum": 4.0, "b_twice": [2, 4]},
                                    {"sum": 7.5, "b_twice": [6, 8]}]}
    status, body = rest("POST", "/v1/models/tf2:predict", {
        "signature_name": "multi", "inputs": {"a": [1.0], "b": [[1, 2]]}})
    assert (status, body) == (200, {"outputs": {"sum": [4.0], "b_twice": [[2, 4]]}})


def test_float32_outputs_keep_their_precision(rest):
    status, body = rest("POST", "/v1/models/tf2:predict", {"instances": [0.2]})
    # float32(2.1) is 2.0999999046325684 as a double; TF Serving prints it as 2.1.
    assert (status, body) == (200, {"predictions": [2.1]})


def test_b64_strings_in_and_bytes_outputs(rest):
    payload = bytes(range(256))
    status, body = rest("POST", "/v1/models/tf2:predict", {
        "signature_name": "echo",
        "instances": [{"b64": base64.b64encode(payload).decode()}, "héllo"]})
    assert status == 200
    first, second = body["predictions"]
    assert base64.b64decode(first["echo_bytes"]["b64"]) == payload   # *_bytes outputs are b64
    assert first["length"] == 256
    assert second == {"echo_bytes": {"b64": base64.b64encode("héllo".encode()).decode()},
                      "length": 6, "upper": "HéLLO"}


def test_tfdeploy_export_predict_matches_in_process(rest, model_root):
    import tensorflow as tf

    images = digit_images(3, seed=1)
    fn = tf.saved_model.load(str(model_root / "digits" / "1")).signatures["serving_default"]
    expected = fn(images=tf.constant(images))
    status, body = rest("POST", "/v1/models/digits:predict", {"instances": images.tolist()})
    assert status == 200
    rows = body["predictions"]
    np.testing.assert_allclose([r["probabilities"] for r in rows],
                               expected["probabilities"].numpy(), rtol=1e-5, atol=1e-6)
    assert [r["class_label"] for r in rows] == [
        v.decode() for v in expected["class_label"].numpy()]


def test_large_bodies_decode_exactly_and_a_misplaced_number_is_a_parse_error(rest, model_root):
    # Bodies past json_fast.MIN_BODY take the numeric fast path; the answer must be the one
    # the same images give in-process, whatever digits the numbers are written with.
    import tensorflow as tf

    fn = tf.saved_model.load(str(model_root / "digits" / "1")).signatures["serving_default"]
    images = digit_images(3, seed=2) / 7 + np.float32(1e-3)   # 17-digit reprs, e-notation
    text = json.dumps({"instances": images.tolist()})
    status, body = rest("POST", "/v1/models/digits:predict", raw=text.encode())
    assert status == 200, body
    np.testing.assert_array_equal([r["class_index"] for r in body["predictions"]],
                                  fn(images=tf.constant(images))["class_index"].numpy())
    # A number moved outside its innermost brackets keeps the brackets-and-commas skeleton
    # of a 3x32x32x1 array; json refuses it, and so must the server (it once answered with
    # the digits glued onto the neighbouring number).
    for bad in (text.replace("], [", "]7, [", 1), text.replace("], [", "], 7[", 1)):
        with pytest.raises(json.JSONDecodeError) as exc:
            json.loads(bad)
        status, body = rest("POST", "/v1/models/digits:predict", raw=bad.encode())
        assert status == 400, body
        assert body["error"] == f"JSON Parse error: {exc.value.msg} at offset: {exc.value.pos}"


def test_b64_image_bytes_signature_matches_raw_pixels(rest):
    import tensorflow as tf

    status, meta = rest("GET", "/v1/models/digits/metadata")
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    key = next(k for k, s in sigs.items()
               if [i["dtype"] for i in s["inputs"].values()] == ["DT_STRING"]
               and s["method_name"].endswith("predict"))
    name = next(iter(sigs[key]["inputs"]))
    images = digit_images(2, seed=2)
    pngs = [tf.io.encode_png(img.astype(np.uint8)).numpy() for img in images]
    status, by_bytes = rest("POST", "/v1/models/digits:predict", {
        "signature_name": key,
        "instances": [{name: {"b64": base64.b64encode(p).decode()}} for p in pngs]})
    assert status == 200, by_bytes
    status, by_pixels = rest("POST", "/v1/models/digits:predict", {"inputs": images.tolist()})
    np.testing.assert_allclose([r["probabilities"] for r in by_bytes["predictions"]],
                               by_pixels["outputs"]["probabilities"], rtol=1e-5, atol=1e-6)


# -- classify and regress ---------------------------------------------------------------------
def test_regress_documented_example(rest):
    assert rest("POST", "/v1/models/half:regress", {
        "signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}) \
        == (200, {"results": [2.5, 3.0]})


def test_classify_with_and_without_context(rest):
    assert rest("POST", "/v1/models/half:classify", {
        "signature_name": "tensorflow/serving/classify", "examples": [{"x": 1.0}, {"x": 4.0}]}) == (
        200, {"results": [[["y", 2.5]], [["y", 4.0]]]})
    assert rest("POST", "/v1/models/half:classify", {
        "signature_name": "classify_scores_only", "context": {"x": 2.0}, "examples": [{}, {}]}) \
        == (200, {"results": [[["", 3.0]], [["", 3.0]]]})


def test_classify_example_feature_overrides_context(rest):
    # TF Serving sends context + example as one ExampleListWithContext: the example wins
    assert rest("POST", "/v1/models/half:classify", {
        "signature_name": "tensorflow/serving/classify", "context": {"x": 1.0},
        "examples": [{"x": 2.0}, {}]}) == (200, {"results": [[["y", 3.0]], [["y", 2.5]]]})


def test_classify_tfdeploy_export(rest):
    images = digit_images(2, seed=3)
    status, body = rest("POST", "/v1/models/digits:classify", {
        "signature_name": "classify",
        "examples": [{"images": im.ravel().tolist()} for im in images]})
    assert status == 200, body
    status, pred = rest("POST", "/v1/models/digits:predict", {"inputs": images.tolist()})
    for row, probs in zip(body["results"], pred["outputs"]["probabilities"]):
        assert [label for label, _ in row] == [f"digit_{i}" for i in range(10)]
        np.testing.assert_allclose([s for _, s in row], probs, rtol=1e-5, atol=1e-6)


def test_classify_needs_classify_outputs(rest):
    # TF Serving's default (--enable_signature_method_name_check=false): the method_name is
    # not checked, the signature's outputs are (tests/test_serving_hostile.py covers the flag)
    status, body = rest("POST", "/v1/models/half:classify", {"examples": [{"x": 1.0}]})
    assert status == 400
    assert body == {"error": "Expected classification signature outputs to contain at least "
                             "one of {classes, scores}, found ['y']."}


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("path,body,code,message", [
    ("/v1/models/nope:predict", {"instances": [1.0]}, 404,
     "Servable not found for request: Latest(nope)"),
    ("/v1/models/half/versions/3:predict", {"instances": [1.0]}, 404,
     "Servable not found for request: Specific(half, 3)"),
    ("/v1/models/half/labels/canary:predict", {"instances": [1.0]}, 400,
     "Unrecognized servable version label: canary"),
    ("/v1/models/half:predict", {"instances": [1.0], "inputs": [1.0]}, 400, "both"),
    ("/v1/models/half:predict", {"signature_name": "predict"}, 400,
     "Missing 'inputs' or 'instances' key"),
    ("/v1/models/half:predict", {"instances": 3}, 400, "Expecting 'instances' to be an list"),
    ("/v1/models/half:predict", {"instances": ["a"]}, 400,
     'JSON Value: "a" Type: String is not of expected type: float'),
    ("/v1/models/half:predict", {"instances": [True]}, 400,
     "JSON Value: true Type: True is not of expected type: float"),
    # shapes are the graph's to check (as in TF Serving): its op error is a 400
    ("/v1/models/tf2:predict", {"signature_name": "multi", "inputs": {"a": [1.0, 2.0, 3.0],
                                                                      "b": [[1, 2], [3, 4]]}},
     400, "Incompatible shapes: [2] vs. [3]"),
    ("/v1/models/tf2:predict", {"signature_name": "multi", "instances": [
        {"a": 1.0, "b": [1, 2]}, {"a": 1.0, "b": [1]}]}, 400, "same shape"),
    ("/v1/models/tf2:predict", {"signature_name": "multi", "instances": [
        {"a": 1.0, "b": [1.5, 2]}]}, 400,
     "JSON Value: 1.5 Type: Number is not of expected type: int64"),
    ("/v1/models/tf2:predict", {"signature_name": "multi", "inputs": {"a": [1.0]}}, 400,
     "Missing but required: ['b']"),
    ("/v1/models/half:predict", {"signature_name": "nope", "instances": [1.0]}, 400,
     'Serving signature name: "nope" not found'),
    ("/v1/models/half:predict", {"signature_name": "complex", "instances": [1.0]}, 400,
     "complex64"),
    ("/v1/models/tf2:predict", {"signature_name": "echo", "instances": [{"b64": "%%%"}]}, 400,
     "base64"),
    ("/v1/models/half:regress", {"examples": {"x": 1}}, 400, "'examples'"),
    # JSON 4 is an int64 feature; the graph parses a float feature (as in TF Serving).
    ("/v1/models/half:regress", {"signature_name": "tensorflow/serving/regress",
                                 "examples": [{"x": 4}]}, 400, "x"),
])
def test_documented_errors(rest, path, body, code, message):
    status, reply = rest("POST", path, body)
    assert status == code, reply
    assert set(reply) == {"error"} and message in reply["error"]


@pytest.mark.parametrize("raw,message", [
    (b"{not json", "JSON Parse error"), (b"[1, 2]", "JSON Value: [1, 2] Is not object"),
    (b"\xff\xfe", "not UTF-8"), (b'{"signature_name": 3, "instances": [1]}', "signature_name"),
    (b'{"instances": ' + b"[" * 100000 + b"]" * 100000 + b"}", "nested too deeply"),
])
def test_malformed_bodies_are_400(rest, raw, message):
    status, reply = rest("POST", "/v1/models/half:predict", raw=raw)
    assert status == 400 and message in reply["error"]


def test_signature_shapes_are_the_graphs_to_check(rest):
    # TF Serving feeds any shape to a TF1 graph (Session::Run does not check the
    # TensorInfo's shape); this graph is elementwise, so [[1.0]] runs.
    assert rest("POST", "/v1/models/half:predict", {"instances": [[1.0]]}) == (
        200, {"predictions": [[2.5]]})


def test_nan_and_infinity_tokens_accepted(rest):
    status, reply = rest("POST", "/v1/models/half:predict", raw=b'{"instances": [NaN, Infinity]}')
    assert status == 200
    assert np.isnan(reply["predictions"][0]) and reply["predictions"][1] == float("inf")


def test_paths_methods_and_limits(rest, served):
    assert rest("GET", "/v1/models/half/versions/x")[0] == 400          # malformed
    # routes match the encoded path; the decoded name is only ever a name (as TF Serving)
    assert rest("GET", "/v1/models/..%2F..%2Fetc%2Fpasswd") == (
        404, {"error": "Could not find any versions of model ../../etc/passwd"})
    assert rest("GET", "/v1/models/%2E%2E")[0] == 404                    # a name, never a path
    assert rest("GET", "/v1/models/half/labels/..%2F1")[0] == 400
    assert rest("GET", "/index.html")[0] == 404
    assert rest("DELETE", "/v1/models/half")[0] == 405
    # the limit is checked on Content-Length, before any of the body is read
    with socket.create_connection(("127.0.0.1", served.rest_port), timeout=10) as s:
        s.sendall(b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: %d\r\n\r\n" % (served.max_body_bytes + 1))
        reply = b""
        while chunk := s.recv(65536):       # the server closes the connection after a 413
            reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
    assert b" 413 " in head.split(b"\r\n")[0]   # answered before any body byte is read
    assert b"exceeds" in body
    assert rest("GET", "/v1/models/half")[0] == 200


def test_garbage_and_truncated_requests_do_not_wedge_the_server(rest, served):
    with socket.create_connection(("127.0.0.1", served.rest_port), timeout=10) as s:
        s.sendall(b"\x00\x01GARBAGE\r\n\r\n")
        assert b" 400 " in s.recv(4096).split(b"\r\n")[0]
    with socket.create_connection(("127.0.0.1", served.rest_port), timeout=10) as s:
        s.sendall(b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"instances\":")   # then hang up
    with socket.create_connection(("127.0.0.1", served.rest_port), timeout=10) as s:
        s.sendall(b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 400 " in s.recv(4096).split(b"\r\n")[0]   # no Content-Length: empty body
    assert rest("POST", "/v1/models/half:predict", {"instances": [2.0]}) == (
        200, {"predictions": [3.0]})


def test_keep_alive_connection_serves_many_requests(served):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", served.rest_port, timeout=30)
    for x in range(5):
        conn.request("POST", "/v1/models/half:predict", json.dumps({"instances": [float(x)]}))
        resp = conn.getresponse()
        assert json.loads(resp.read()) == {"predictions": [0.5 * x + 2]}
    conn.request("POST", "/v1/models/nope:predict", b"{}")   # an error keeps the connection usable
    resp = conn.getresponse()
    assert (resp.status, json.loads(resp.read())) == (
        404, {"error": "Servable not found for request: Latest(nope)"})
    conn.request("GET", "/v1/models/half")
    assert conn.getresponse().status == 200
    conn.close()


def test_prometheus_metrics(rest):
    for _ in range(3):
        rest("POST", "/v1/models/tf2:predict", {"instances": [1.0]})
    rest("POST", "/v1/models/tf2/versions/9:predict", {"instances": [1.0]})
    status, text = rest("GET", "/monitoring/prometheus/metrics")
    assert status == 200
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    count_of = ':tensorflow:serving:request_count{{model_name="tf2",status="{}"}}'.format
    assert float(lines[count_of("OK")]) >= 3 and float(lines[count_of("NOT_FOUND")]) >= 1
    labels = 'API="predict",entrypoint="REST",model_name="tf2"'  # prometheus_client sorts
    count = int(float(lines[f":tensorflow:serving:request_latency_count{{{labels}}}"]))
    assert count >= 4
    inf = ':tensorflow:serving:request_latency_bucket{API="predict",entrypoint="REST",le="+Inf",' \
        'model_name="tf2"}'
    assert int(float(lines[inf])) == count
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    assert float(lines[':tensorflow:serving:runtime_latency_count{model_name="tf2"}']) >= 3
