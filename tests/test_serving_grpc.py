"""TF Serving's gRPC API through a running server, with the tensorflow-serving-api stubs."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from test_serving_support import digit_images

pytest_plugins = ("test_serving_support",)  # fixtures: model_root, served


@pytest.fixture(scope="module")
def channel(served):
    ch = grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}")
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def _predict_request(name, signature="", version=None, label=None, **inputs):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    for key, value in inputs.items():
        req.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return req


def _example(**features):
    return tf.train.Example(features=tf.train.Features(feature={
        k: tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(v)))
        for k, v in features.items()}))


def test_predict_tf1(stub):
    resp = stub.Predict(_predict_request("half", x=np.array([1.0, 2.0, 5.0], np.float32)),
                        timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(resp.outputs["y"]), [2.5, 3.0, 4.5])
    assert resp.model_spec.name == "half" and resp.model_spec.version.value == 1
    assert resp.model_spec.signature_name == "serving_default"
    resp = stub.Predict(_predict_request("half", "predict", label="stable",
                                         x=np.array([0.0], np.float32)), timeout=30)
    assert resp.model_spec.signature_name == "predict"
    np.testing.assert_allclose(tf.make_ndarray(resp.outputs["y"]), [2.0])


def test_predict_multi_output_filter_and_strings(stub):
    req = _predict_request("tf2", "multi", a=np.array([1.0], np.float32),
                           b=np.array([[1, 2]], np.int64))
    req.output_filter.append("b_twice")
    resp = stub.Predict(req, timeout=30)
    assert list(resp.outputs) == ["b_twice"]
    assert resp.outputs["b_twice"].dtype == tf.int64.as_datatype_enum
    np.testing.assert_array_equal(tf.make_ndarray(resp.outputs["b_twice"]), [[2, 4]])
    resp = stub.Predict(_predict_request("tf2", "echo", data_bytes=np.array([b"\x00ab"])),
                        timeout=30)
    assert list(tf.make_ndarray(resp.outputs["echo_bytes"])) == [b"\x00ab"]


@pytest.mark.parametrize("value", [
    np.array([b"3"], dtype=object), np.array([["cat"], ["\u00e9t\u00e9"]], dtype=object),
    np.array(["\u00e9", "b"]), np.array([b"x", b"\xff"], dtype="S"),
    np.array([[b"a\x00b", b""]], dtype=object), np.array([], dtype=object),
    np.array("x", dtype=object),
])
def test_string_response_tensors_are_what_make_tensor_proto_writes(value):
    """ndarray_to_tensor writes string outputs itself (no tf.make_tensor_proto per output):
    the same TensorProto, byte for byte."""
    from tfdeploy.serving import inference

    ours, theirs = inference.ndarray_to_tensor(value), tf.make_tensor_proto(value)
    assert ours == theirs and ours.SerializeToString() == theirs.SerializeToString()


@pytest.mark.parametrize("value", [np.float32([[0.5, 2]]), np.int64([3]), np.array([True]),
                                   np.uint8([[1], [255]])])
def test_numeric_response_tensors_hold_what_make_tensor_proto_holds(value):
    """Numbers are packed into tensor_content (as TF Serving sends them): same dtype, shape
    and values as tf.make_tensor_proto's."""
    from tfdeploy.serving import inference

    ours, theirs = inference.ndarray_to_tensor(value), tf.make_tensor_proto(value)
    assert ours.dtype == theirs.dtype and ours.tensor_shape == theirs.tensor_shape
    np.testing.assert_array_equal(tf.make_ndarray(ours), value)


def test_response_tensor_of_objects_that_are_not_strings_fails_as_in_tf():
    from tfdeploy.serving import inference

    with pytest.raises(TypeError, match="Expected binary or unicode string, got 1"):
        inference.ndarray_to_tensor(np.array([1, 2], dtype=object))


def test_predict_tfdeploy_export_matches_in_process(stub, model_root):
    images = digit_images(2, seed=5)
    fn = tf.saved_model.load(str(model_root / "digits" / "1")).signatures["serving_default"]
    resp = stub.Predict(_predict_request("digits", images=images), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(resp.outputs["probabilities"]),
                               fn(images=tf.constant(images))["probabilities"].numpy(),
                               rtol=1e-5, atol=1e-6)


def test_classify_and_regress(stub):
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "half"
    req.model_spec.signature_name = "tensorflow/serving/classify"
    req.input.example_list.examples.extend([_example(x=1.0), _example(x=3.0)])
    resp = stub.Classify(req, timeout=30)
    got = [[(c.label, round(c.score, 5)) for c in cl.classes]
           for cl in resp.result.classifications]
    assert got == [[("y", 2.5)], [("y", 3.5)]]
    assert resp.model_spec.version.value == 1

    req = regression_pb2.RegressionRequest()
    req.model_spec.name = "half"
    req.model_spec.signature_name = "tensorflow/serving/regress"
    ctx = req.input.example_list_with_context
    ctx.context.CopyFrom(_example(x=4.0))
    ctx.examples.extend([tf.train.Example(), tf.train.Example()])
    resp = stub.Regress(req, timeout=30)
    assert [r.value for r in resp.result.regressions] == [4.0, 4.0]


def test_get_model_metadata(stub, model_root):
    from tensorflow.core.protobuf import saved_model_pb2

    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "half"
    resp = stub.GetModelMetadata(req, timeout=30)
    assert resp.model_spec.name == "half" and resp.model_spec.version.value == 1
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sig_map)
    pb = saved_model_pb2.SavedModel()
    pb.ParseFromString((model_root / "half" / "1" / "saved_model.pb").read_bytes())
    assert dict(sig_map.signature_def) == dict(pb.meta_graphs[0].signature_def)


def test_get_model_status(model_stub):
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "tf2"
    resp = model_stub.GetModelStatus(req, timeout=30)
    (status,) = resp.model_version_status
    assert status.version == 1
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0 and status.status.error_message == ""


def _code(call, request):
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value.code(), info.value.details()


def test_status_codes(stub, model_stub):
    x = np.array([1.0], np.float32)
    assert _code(stub.Predict, _predict_request("nope", x=x)) == (
        grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)")
    assert _code(stub.Predict, _predict_request("half", version=4, x=x)) == (
        grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(half, 4)")
    assert _code(stub.Predict, _predict_request("half", label="canary", x=x)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: canary")
    code, details = _code(stub.Predict, _predict_request("half", z=x))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Missing but required: {x}" in details
    code, details = _code(stub.Predict, _predict_request("half", "nope", x=x))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and '"nope" not found' in details
    code, details = _code(stub.Predict, _predict_request(   # the graph checks shapes
        "tf2", "multi", a=np.array([1.0, 2.0, 3.0], np.float32),
        b=np.array([[1, 2], [3, 4]], np.int64)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Incompatible shapes" in details
    assert _code(stub.Predict, _predict_request("half", x=np.array([1.0], np.float64))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Expects arg 'x' to be float32 but float64 is provided")
    bad = _predict_request("half", x=x)
    bad.inputs["x"].tensor_content = b"\x00\x01\x02"   # not a whole float
    assert _code(stub.Predict, bad)[0] == grpc.StatusCode.INVALID_ARGUMENT
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def", "x"])
    req.model_spec.name = "half"
    assert _code(stub.GetModelMetadata, req) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Metadata field x is not supported")
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "half"
    assert _code(stub.Classify, req)[0] == grpc.StatusCode.INVALID_ARGUMENT   # empty input
    status_req = get_model_status_pb2.GetModelStatusRequest()
    status_req.model_spec.name = "nope"
    assert _code(model_stub.GetModelStatus, status_req) == (
        grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope")
    # the server still answers after all of that
    resp = stub.Predict(_predict_request("half", x=x), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(resp.outputs["y"]), [2.5])


def test_python_clients_rest_and_grpc_agree(served):
    from tfdeploy.client import GrpcClient, RestClient
    from tfdeploy.serving.status import ServingError

    rest = RestClient(f"127.0.0.1:{served.rest_port}")
    with GrpcClient(f"127.0.0.1:{served.grpc_port}") as grpc_client:
        x = np.array([1.0, 3.0], np.float32)
        assert rest.predict("half", instances=x)["predictions"] == [2.5, 3.5]
        np.testing.assert_allclose(grpc_client.predict("half", {"x": x})["y"], [2.5, 3.5])
        assert rest.regress("half", [{"x": 2.0}], signature_name="tensorflow/serving/regress") \
            == {"results": [3.0]}
        assert grpc_client.regress("half", [{"x": 2.0}],
                                   signature_name="tensorflow/serving/regress") == [3.0]
        assert grpc_client.classify("half", [{}], context={"x": 2.0},
                                    signature_name="tensorflow/serving/classify") == [[("y", 3.0)]]
        assert rest.classify("half", [{}], context={"x": 2.0},
                             signature_name="tensorflow/serving/classify") == {
            "results": [[["y", 3.0]]]}
        assert rest.status("half", label="stable")["model_version_status"][0]["state"] == \
            "AVAILABLE"
        assert grpc_client.status("half") == [(1, "AVAILABLE", "OK", "")]
        version, sigs = grpc_client.metadata("half")
        assert version == 1 and "tensorflow/serving/regress" in sigs
        assert "serving_default" in rest.metadata("half")["metadata"]["signature_def"][
            "signature_def"]
        assert rest.predict("tf2", instances=[b"ab", b"c"], signature_name="echo")[
            "predictions"][1]["length"] == 1
        for call in (lambda: rest.predict("nope", instances=[1.0]),
                     lambda: grpc_client.predict("nope", {"x": x})):
            with pytest.raises(ServingError) as info:
                call()
            assert info.value.code == "NOT_FOUND" and info.value.http_status == 404


def test_oversized_message_is_resource_exhausted(stub, served):
    big = np.zeros(served.max_body_bytes // 4 + 1024, np.float32)
    code, _ = _code(stub.Predict, _predict_request("half", x=big))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.Predict(_predict_request("half", x=np.ones(1, np.float32)), timeout=30).outputs
