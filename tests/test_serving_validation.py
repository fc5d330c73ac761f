"""Every input checked against its signature before a model runs, on every method and front
end, in a ``tfdeploy serve`` process with TensorFlow's oneDNN kernels forced on (where a
convolution given a tensor of the wrong rank aborts the process); model errors reach
clients without graph dumps; classify/regress scores print as TF Serving prints them.
"""

import json

import numpy as np
import pytest

from test_serving_support import (ServerProcess, build_digits_classifier, build_half_plus_two,
                                  rest_call)

pytest_plugins = ("test_serving_support",)


def build_checks_model(path):
    """TF2 SavedModel: ``classify`` (constant scores 0.2/0.7/0.1, as TF Serving's own
    ClassifyRegressnResultTest), ``regress`` (0.2/0.9/1.0 cycling), ``conv`` (a 3x3 valid
    convolution with free spatial dimensions), ``lookup`` (an embedding gather: ids past 9
    are the client's error) and ``broken`` (reads a file the model lacks: the server's)."""
    import tensorflow as tf

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(tf.ones([3, 3, 1, 2]) / 9.0)
            self.table = tf.Variable(tf.range(10, dtype=tf.float32))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            n = tf.shape(inputs)[0]
            scores = tf.tile([[0.2, 0.7, 0.1]], [n, 1])
            classes = tf.tile([["car", "bike", "bus"]], [n, 1])
            return {"classes": classes, "scores": scores}

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.string, name="inputs")])
        def classify_2d(self, inputs):
            return self.classify(tf.reshape(inputs, [-1]))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            n = tf.shape(inputs)[0]
            return {"outputs": tf.gather([0.2, 0.9, 1.0], tf.range(n) % 3)}

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.string, name="inputs")])
        def regress_2d(self, inputs):
            return self.regress(tf.reshape(inputs, [-1]))

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32,
                                                    name="pixels")])
        def conv(self, pixels):
            return {"y": tf.nn.conv2d(pixels, self.kernel, 1, "VALID")}

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.int32, name="ids")])
        def lookup(self, ids):
            return {"values": tf.gather(self.table, ids, validate_indices=True)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def broken(self, x):
            return {"y": x + tf.strings.to_number(tf.io.read_file("/nonexistent/tfdeploy"))}

    m = M()
    tf.saved_model.save(m, path, signatures={
        "serving_default": m.conv, "classify": m.classify, "regress": m.regress,
        "classify_2d": m.classify_2d, "regress_2d": m.regress_2d,
        "lookup": m.lookup, "broken": m.broken})
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("validation")
    build_digits_classifier(str(root / "digits"))
    build_checks_model(str(root / "checks" / "1"))
    build_half_plus_two(str(root / "half" / "1"))
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{n}" base_path: "{root / n}" model_platform: "tensorflow" }}\n'
        for n in ("digits", "checks", "half")) + "}\n")
    with ServerProcess(["--model_config_file", str(config), "--file_system_poll_wait_seconds",
                        "0", "--max_num_load_retries", "0"]) as proc:
        assert proc.onednn_on(), "oneDNN must be on in the served process for this test"
        yield proc


def _zeros(shape):
    return np.zeros(shape, np.float32).tolist()


# (REST body, words the 400's message must hold) for the digits model: [-1, 32, 32, 1]
RANKS = [
    ({"instances": [0]}, ["'images'", "[-1,32,32,1]", "received shape [1]", "rank 1"]),
    ({"instances": [[[0]]]}, ["'images'", "[-1,32,32,1]", "received shape [1,1,1]"]),
    ({"instances": [[0, 0, 0]]}, ["'images'", "received shape [1,3]"]),
    ({"inputs": [[[0]]]}, ["'images'", "received shape [1,1,1]"]),
    ({"inputs": {"images": 0.0}}, ["'images'", "received shape []", "rank 0"]),
    ({"instances": _zeros([1, 32, 32, 1, 1])}, ["received shape [1,32,32,1,1]", "rank 5"]),
    ({"instances": _zeros([1, 32, 32, 3])}, ["dimension 3 must be 1, not 3"]),
    ({"instances": _zeros([2, 31, 32, 1])}, ["dimension 1 must be 32, not 31"]),
    ({"inputs": _zeros([1, 32, 33, 1])}, ["dimension 2 must be 32, not 33"]),
    ({"instances": [{"images": _zeros([32, 32])}]}, ["received shape [1,32,32]"]),
    ({"instances": _zeros([4, 32, 32, 2])}, ["dimension 3 must be 1, not 2"]),  # (fast path)
    ({"signature_name": "serving_bytes", "instances": [[{"b64": "AA=="}]]},
     ["'image_bytes'", "[-1]", "received shape [1,1]"]),
    ({"signature_name": "serving_bytes", "inputs": {"b64": "AA=="}},
     ["'image_bytes'", "received shape []"]),
    ({"instances": [[["a"] * 1] * 32] * 32}, ["not of expected type: float"]),
]


@pytest.mark.parametrize("body,words", RANKS)
def test_rest_predict_checks_rank_and_static_dims(server, body, words):
    status, reply = rest_call(server.rest_port, "POST", "/v1/models/digits:predict", body)
    assert server.alive(), server.output()[-2000:]
    assert status == 400, reply
    assert set(reply) == {"error"}
    for word in words:
        assert word in reply["error"], reply["error"]


def test_valid_requests_still_answer(server):
    status, reply = rest_call(server.rest_port, "POST", "/v1/models/digits:predict",
                              {"instances": _zeros([2, 32, 32, 1])})
    assert status == 200 and len(reply["predictions"]) == 2
    status, reply = rest_call(server.rest_port, "POST", "/v1/models/checks:predict",
                              {"instances": _zeros([1, 5, 4, 1])})
    assert status == 200 and np.shape(reply["predictions"]) == (1, 3, 2, 2)
    # TF1 graphs keep TF Serving's rule (Session::Run feeds any shape): not stricter there
    assert rest_call(server.rest_port, "POST", "/v1/models/half:predict",
                     {"instances": [[1.0]]}) == (200, {"predictions": [[2.5]]})


def _grpc_predict(port, model, signature, **inputs):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    for k, v in inputs.items():
        request.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            return "OK", stub.Predict(request, timeout=60)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details()


@pytest.mark.parametrize("value,words", [
    (np.zeros([1], np.float32), ["'images'", "[-1,32,32,1]", "received shape [1]"]),
    (np.zeros([1, 32, 32], np.float32), ["received shape [1,32,32]"]),
    (np.zeros([1, 32, 32, 3], np.float32), ["dimension 3 must be 1, not 3"]),
    (np.zeros([1, 1, 1, 1, 1], np.float32), ["rank 5"]),
    (np.float32(0), ["received shape []"]),
    (np.zeros([1, 32, 32, 1], np.float64), ["to be float32 but float64"]),
    (np.zeros([1, 32, 32, 1], np.int32), ["to be float32 but int32"]),
])
def test_grpc_predict_checks_rank_dims_and_dtype(server, value, words):
    code, details = _grpc_predict(server.grpc_port, "digits", "", images=value)
    assert server.alive(), server.output()[-2000:]
    assert code == "INVALID_ARGUMENT", details
    for word in words:
        assert word in details, details


def test_grpc_huge_tensor_of_the_wrong_shape_is_refused_from_its_declared_shape(server):
    import grpc
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    request.inputs["images"].CopyFrom(tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, float_val=[1.0],
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in (1000, 64, 64, 3)])))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        with pytest.raises(grpc.RpcError) as info:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request,
                                                                              timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "dimension 1 must be 32, not 64" in info.value.details()


def test_classify_regress_and_multi_inference_are_checked_too(server):
    import grpc
    from tensorflow.core.framework import types_pb2  # noqa: F401  (TF protos registered)
    from tensorflow_serving.apis import (classification_pb2, inference_pb2,
                                         prediction_service_pb2_grpc)

    # a classify signature taking [-1, 1] strings: serialized examples are [N]
    status, reply = rest_call(server.rest_port, "POST", "/v1/models/checks:classify", {
        "signature_name": "classify_2d", "examples": [{"x": 1.0}, {"x": 2.0}]})
    assert status == 400, reply
    assert "'inputs' expects shape [-1,1] and dtype string" in reply["error"]
    assert "received shape [2]" in reply["error"]
    status, reply = rest_call(server.rest_port, "POST", "/v1/models/checks:regress", {
        "signature_name": "regress_2d", "examples": [{"x": 1.0}]})
    assert status == 400 and "received shape [1]" in reply["error"], reply
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = "checks", "classify_2d"
    request.input.example_list.examples.add()
    multi = inference_pb2.MultiInferenceRequest()
    task = multi.tasks.add(method_name="tensorflow/serving/classify")
    task.model_spec.name, task.model_spec.signature_name = "checks", "classify_2d"
    multi.input.example_list.examples.add()
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for call, req in ((stub.Classify, request), (stub.MultiInference, multi)):
            with pytest.raises(grpc.RpcError) as info:
                call(req, timeout=60)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "received shape [1]" in info.value.details()
    assert server.alive()


# -- error texts ---------------------------------------------------------------------------
def _no_internals(text):
    for leak in ("Graph execution error", "Detected at node", "{{node", "[Op:", ".cc:",
                 "File \"", "StatefulPartitionedCall", "__inference"):
        assert leak not in text, text


def test_model_errors_say_what_the_client_sent_wrong_without_the_graph(server):
    # passes validation (free spatial dims), but a 3x3 valid conv cannot run on 1x1
    status, reply = rest_call(server.rest_port, "POST", "/v1/models/checks:predict",
                              {"instances": _zeros([1, 1, 1, 1])})
    assert status == 400, reply
    assert "pixels: shape [1,1,1,1] float32" in reply["error"]
    assert "Computed output size would be negative" in reply["error"]
    _no_internals(reply["error"])
    # an id past the table: the client's values
    status, reply = rest_call(server.rest_port, "POST", "/v1/models/checks:predict",
                              {"signature_name": "lookup", "instances": [[1, 42]]})
    assert status == 400 and "42 is not in [0, 10)" in reply["error"], reply
    _no_internals(reply["error"])
    code, details = _grpc_predict(server.grpc_port, "checks", "",
                                  pixels=np.zeros([1, 1, 1, 1], np.float32))
    assert code == "INVALID_ARGUMENT" and "would be negative" in details
    _no_internals(details)
    assert server.alive()


def test_server_faults_are_5xx_with_no_detail_for_the_client(server):
    status, reply = rest_call(server.rest_port, "POST", "/v1/models/checks:predict",
                              {"signature_name": "broken", "instances": [1.0]})
    assert status == 500, reply
    assert "server-side error, logged as incident" in reply["error"]
    _no_internals(reply["error"])
    assert "/nonexistent" not in reply["error"]
    assert "/nonexistent/tfdeploy" in server.output()       # the log keeps the details


def test_classify_and_regress_print_float32_scores_as_tf_serving(server):
    # TF Serving's ClassifyRegressnResultTest: 0.7 as float32 prints as 0.7
    import http.client

    def raw(path, body):
        conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
        conn.request("POST", path, body=json.dumps(body))
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        return resp.status, text

    examples = {"examples": [{"x": 1.0}, {"x": 2.0}]}
    status, text = raw("/v1/models/checks:classify", dict(examples, signature_name="classify"))
    assert status == 200, text
    assert text.replace(" ", "") == ('{"results":[[["car",0.2],["bike",0.7],["bus",0.1]],'
                                     '[["car",0.2],["bike",0.7],["bus",0.1]]]}')
    status, text = raw("/v1/models/checks:regress", {
        "signature_name": "regress", "examples": [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}]})
    assert status == 200 and text.replace(" ", "") == '{"results":[0.2,0.9,1.0]}', text


# -- the validator itself ----------------------------------------------------------------
def _signature(**inputs):
    from tensorflow.core.protobuf import meta_graph_pb2

    sig = meta_graph_pb2.SignatureDef()
    for name, (dtype, shape) in inputs.items():
        info = sig.inputs[name]
        info.dtype = dtype
        if shape is None:
            info.tensor_shape.unknown_rank = True
        else:
            for d in shape:
                info.tensor_shape.dim.add(size=d)
    return sig


@pytest.mark.parametrize("strict,shape,message", [
    (True, (2, 32, 32, 1), None),
    (True, (0, 32, 32, 1), None),
    (True, (2, 32, 32), "rank 4"),
    (True, (2, 32, 31, 1), "dimension 2 must be 32, not 31"),
    (False, (2, 32), None),             # TF1 graphs: shapes are the graph's (TF Serving)
])
def test_validator_table(strict, shape, message):
    from tfdeploy.serving.status import ServingError
    from tfdeploy.serving.validation import SignatureValidator

    validator = SignatureValidator(_signature(x=(1, [-1, 32, 32, 1])), strict_shapes=strict)
    if message is None:
        validator.check({"x": np.zeros(shape, np.float32)})
    else:
        with pytest.raises(ServingError, match=message) as info:
            validator.check({"x": np.zeros(shape, np.float32)})
        assert info.value.code == "INVALID_ARGUMENT" and "'x'" in info.value.message


def test_validator_knows_what_it_cannot_check():
    from tfdeploy.serving.validation import SignatureValidator

    assert SignatureValidator(_signature(x=(1, [-1, 2]))).fully_checked
    assert not SignatureValidator(_signature(x=(1, None))).fully_checked
    assert not SignatureValidator(_signature(x=(1, [-1, 2])), strict_shapes=False).fully_checked


# -- what validation cannot check: contained in a worker process ---------------------------
def _wait_for(predicate, timeout):
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("isolation", ["auto", "none"])
def test_an_abort_validation_cannot_prevent_is_contained(tmp_path, isolation):
    """A TF1 conv on a placeholder of unknown rank: no signature says the rank, so a rank-1
    request reaches the kernel and, with oneDNN on, aborts. ``--model_isolation auto`` (the
    default) runs that model in a worker process: the request answers 503, the server stays
    up, the version stays AVAILABLE and answers again once its worker is back. With
    ``none`` the same request ends the server (the hazard this guards against)."""
    from test_serving_isolation import build_unknown_rank_conv

    build_unknown_rank_conv(str(tmp_path / "conv" / "1"))
    with ServerProcess(["--model_name", "conv", "--model_base_path", str(tmp_path / "conv"),
                        "--file_system_poll_wait_seconds", "0", "--model_isolation",
                        isolation]) as proc:
        good = {"instances": np.zeros([1, 4, 4, 1], np.float32).tolist()}
        status, reply = rest_call(proc.rest_port, "POST", "/v1/models/conv:predict", good)
        assert status == 200 and np.shape(reply["predictions"]) == (1, 4, 4, 2), reply
        try:
            status, reply = rest_call(proc.rest_port, "POST", "/v1/models/conv:predict",
                                      {"instances": [0.0]}, timeout=60)
        except OSError:
            status, reply = None, "connection lost"
        if isolation == "none":
            assert _wait_for(lambda: not proc.alive(), 30), "the abort did not happen"
            assert "Check failed" in proc.output()
            return
        assert proc.alive(), proc.output()[-2000:]
        assert status == 503 and "worker process ended" in reply["error"], (status, reply)
        assert "runs in a worker process" in proc.output()
        assert rest_call(proc.rest_port, "GET", "/v1/models/conv")[1][
            "model_version_status"][0]["state"] == "AVAILABLE"
        assert _wait_for(lambda: rest_call(proc.rest_port, "POST", "/v1/models/conv:predict",
                                           good)[0] == 200, 90)
        assert proc.alive()
