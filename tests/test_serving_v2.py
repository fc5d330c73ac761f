"""The Open Inference Protocol (KServe V2) beside TF Serving's API, over real sockets, with
clients we did not write: ``tritonclient.http`` and ``tritonclient.grpc`` (health, metadata,
infer with binary data on and off, output selection), answers equal to V1 predict's; KServe's
own V2 clients (its own virtual environment, as a subprocess); V2 test cases of KServe's and
MLServer's own suites translated into tables; the protocol's messages checked against the clients'
generated ones; errors, metrics and batching.
"""

import json
import os
import random
import subprocess
import sys
import warnings

import numpy as np
import pytest

from test_serving_support import (build_digits_classifier, build_tf2_model, digit_images,
                                  rest_call)

warnings.filterwarnings("ignore", message=".*gencode.*")   # tritonclient's protobuf 6 gencode
import tritonclient.grpc as grpcclient  # noqa: E402  (the test extra: pip install -e .[test])
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

METRICS = "/monitoring/prometheus/metrics"
KSERVE_VENV = os.environ.get("TFDEPLOY_KSERVE_VENV",
                             os.path.expanduser("~/.cache/tfdeploy/kserve-client-venv"))


@pytest.fixture(scope="module")
def kserve_python():
    """The Python of a virtual environment holding KServe (its pins clash with ours), made
    on first use (about a minute: ``python3.11 -m venv V && V/bin/pip install kserve``)."""
    import sys

    python = os.path.join(KSERVE_VENV, "bin", "python")
    check = [python, "-c", "import kserve, kserve.protocol.grpc.grpc_predict_v2_pb2"]
    if not os.path.exists(python) or subprocess.run(check, capture_output=True).returncode:
        subprocess.run([sys.executable, "-m", "venv", "--clear", KSERVE_VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "kserve"], check=True,
                       timeout=900)
    return python

# Every V2 datatype a signature can take (TF has no V2 name for complex or resource types).
DTYPES = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "INT8": np.int8,
          "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8,
          "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64, "BOOL": np.bool_,
          "BYTES": np.object_}


def build_dtypes_model(path):
    """TF2 SavedModel: ``serving_default`` echoes one [None, 2] input of every V2 datatype
    (``in_fp32`` -> ``out_fp32``, ...); ``fp16`` casts ``fp32_input`` to ``fp16_output`` and
    ``fp32_output`` (KServe's FP16 test model)."""
    import tensorflow as tf

    tf_types = {"FP16": tf.float16, "FP32": tf.float32, "FP64": tf.float64, "INT8": tf.int8,
                "INT16": tf.int16, "INT32": tf.int32, "INT64": tf.int64, "UINT8": tf.uint8,
                "UINT16": tf.uint16, "UINT32": tf.uint32, "UINT64": tf.uint64,
                "BOOL": tf.bool, "BYTES": tf.string}
    specs = [tf.TensorSpec([None, 2], t, name="in_" + k.lower()) for k, t in tf_types.items()]
    keys = [k.lower() for k in tf_types]

    class Echo(tf.Module):
        @tf.function(input_signature=specs)
        def echo(self, *args):
            return {"out_" + k: tf.identity(a) for k, a in zip(keys, args)}

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="fp32_input")])
        def fp16(self, fp32_input):
            return {"fp16_output": tf.cast(fp32_input, tf.float16), "fp32_output": fp32_input}

    m = Echo()
    tf.saved_model.save(m, path, signatures={"serving_default": m.echo, "fp16": m.fp16})


@pytest.fixture(scope="module")
def v2_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2_models")
    build_tf2_model(str(root / "tf2" / "1"))
    build_digits_classifier(str(root / "digits"))
    build_dtypes_model(str(root / "dtypes" / "1"))
    (root / "monitoring.config").write_text(
        f'prometheus_config {{ enable: true path: "{METRICS}" }}\n')
    return root


@pytest.fixture(scope="module")
def server(v2_root):
    from tfdeploy.serving import ModelConfig, create_server

    server = create_server(
        configs=[ModelConfig(n, str(v2_root / n)) for n in ("tf2", "digits", "dtypes")],
        port=0, rest_api_port=0, file_system_poll_wait_seconds=0,
        monitoring_config_file=str(v2_root / "monitoring.config"), max_body_bytes=1 << 20)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def clients(server):
    http = httpclient.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    yield {"http": http, "grpc": grpc}
    http.close()
    grpc.close()


def _client_module(kind):
    return httpclient if kind == "http" else grpcclient


def _metadata_dict(meta):
    """tritonclient.grpc answers a message; .http a dict: compare them as dicts."""
    if isinstance(meta, dict):
        return meta
    from google.protobuf.json_format import MessageToDict

    d = MessageToDict(meta, preserving_proto_field_name=True)
    for t in d.get("inputs", []) + d.get("outputs", []):
        t["shape"] = [int(s) for s in t["shape"]]
    return d


def _input(kind, name, array, datatype, binary=True):
    tensor = _client_module(kind).InferInput(name, list(array.shape), datatype)
    if kind == "http":
        tensor.set_data_from_numpy(array, binary_data=binary)
    else:
        tensor.set_data_from_numpy(array)
    return tensor


def _outputs(kind, names, binary=True):
    if names is None:
        return None
    if kind == "http":
        return [httpclient.InferRequestedOutput(n, binary_data=binary) for n in names]
    return [grpcclient.InferRequestedOutput(n) for n in names]


# -- the protocol's messages ------------------------------------------------------------------
def _repeated(field):
    return field.is_repeated if hasattr(field, "is_repeated") else field.label == 3


def _signature(descriptor):
    fields = [(f.number, f.name, f.type, _repeated(f), f.message_type.full_name if f.message_type
               else "", f.containing_oneof.name if f.containing_oneof else "")
              for f in descriptor.fields]
    nested = [(n.name, n.GetOptions().map_entry, _signature(n)) for n in descriptor.nested_types]
    return fields, nested


def test_messages_are_the_protocols_field_for_field():
    """Every message we declare equals tritonclient's generated one (names, numbers, types,
    labels, oneofs, map entries), and the bytes cross both ways."""
    from tritonclient.grpc import service_pb2

    from tfdeploy.serving.protos_v2 import METHODS, messages

    ours = messages()
    names = {n for pair in METHODS.values() for n in pair} | {"InferParameter",
                                                              "InferTensorContents"}
    for name in sorted(names):
        assert _signature(getattr(ours, name).DESCRIPTOR) == \
            _signature(service_pb2.DESCRIPTOR.message_types_by_name[name]), name
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for rpc, (req, resp) in METHODS.items():
        method = service.methods_by_name[rpc]
        assert (method.input_type.name, method.output_type.name) == (req, resp)
    theirs = service_pb2.ModelInferRequest(model_name="m", raw_input_contents=[b"\x01"])
    theirs.parameters["p"].int64_param = 3
    theirs.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(2.0)
    back = service_pb2.ModelInferRequest.FromString(
        ours.ModelInferRequest.FromString(theirs.SerializeToString()).SerializeToString())
    assert back == theirs


def test_messages_equal_kserves_grpc_predict_v2(kserve_python):
    """KServe's own generated grpc_predict_v2_pb2 (its venv: KServe's pins clash with ours)
    has the same messages as ours."""
    script = ("import json, kserve.protocol.grpc.grpc_predict_v2_pb2 as p\n"
              "def sig(d):\n"
              "    return [[[f.number, f.name, f.type, f.is_repeated if hasattr(f, 'is_repeated') "
              "else f.label == 3, f.message_type.full_name if "
              "f.message_type else '', f.containing_oneof.name if f.containing_oneof else ''] "
              "for f in d.fields], [[n.name, n.GetOptions().map_entry, sig(n)] for n in "
              "d.nested_types]]\n"
              "print(json.dumps({n: sig(d) for n, d in p.DESCRIPTOR.message_types_by_name."
              "items()}))\n")
    out = subprocess.run([kserve_python, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    theirs = json.loads(out)
    from tfdeploy.serving.protos_v2 import METHODS, messages

    ours = messages()
    for name in {n for pair in METHODS.values() for n in pair}:
        assert json.loads(json.dumps(_signature(getattr(ours, name).DESCRIPTOR))) == \
            theirs[name], name


# -- health and metadata ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_health_and_server_metadata(clients, kind):
    c = clients[kind]
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("digits") and c.is_model_ready("digits", "1")
    assert not c.is_model_ready("digits", "7")
    meta = _metadata_dict(c.get_server_metadata())
    assert meta["name"] == "tfdeploy" and "binary_tensor_data" in meta["extensions"]


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_model_metadata_comes_from_the_signature(clients, kind):
    c = clients[kind]
    for version in ("", "1"):
        meta = _metadata_dict(c.get_model_metadata("digits", version))
        assert meta["name"] == "digits" and meta["versions"] == ["1"]
        assert meta["platform"] == "tensorflow_savedmodel"
        assert meta["inputs"] == [{"name": "images", "datatype": "FP32",
                                   "shape": [-1, 32, 32, 1]}]
        assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
            "class_index": ("INT64", [-1]), "class_label": ("BYTES", [-1]),
            "probabilities": ("FP32", [-1, 10])}
    meta = _metadata_dict(c.get_model_metadata("dtypes"))
    assert sorted(t["datatype"] for t in meta["inputs"]) == sorted(DTYPES)


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_unknown_model_and_version_are_errors_naming_them(clients, kind):
    c = clients[kind]
    with pytest.raises(InferenceServerException, match="nope"):
        c.get_model_metadata("nope")
    with pytest.raises(InferenceServerException, match="7"):
        c.get_model_metadata("digits", "7")
    with pytest.raises(InferenceServerException, match="nope"):
        c.is_model_ready("nope") or c.get_model_metadata("nope")


# -- infer: answers equal V1 predict's ---------------------------------------------------------
def _v1_predict(server, model, body):
    status, answer = rest_call(server.rest_port, "POST", f"/v1/models/{model}:predict", body)
    assert status == 200, answer
    return answer


@pytest.mark.parametrize("kind,binary", [("http", True), ("http", False), ("grpc", True)])
def test_digits_infer_equals_v1_predict(server, clients, kind, binary):
    images = digit_images(3, seed=4)
    v1 = _v1_predict(server, "digits", {"instances": images.tolist()})["predictions"]
    r = clients[kind].infer("digits", [_input(kind, "images", images, "FP32", binary)],
                            outputs=_outputs(kind, ["probabilities", "class_index",
                                                    "class_label"], binary))
    np.testing.assert_allclose(r.as_numpy("probabilities"),
                               [p["probabilities"] for p in v1], rtol=1e-6)
    assert r.as_numpy("class_index").tolist() == [p["class_index"] for p in v1]
    labels = [b.decode() if isinstance(b, bytes) else b for b in r.as_numpy("class_label")]
    assert labels == [p["class_label"] for p in v1]   # (tritonclient: str from JSON BYTES)
    assert r.get_response(as_json=True)["model_version"] == "1" if kind == "grpc" else \
        r.get_response()["model_version"] == "1"


@pytest.mark.parametrize("kind,binary", [("http", True), ("http", False), ("grpc", True)])
def test_output_selection_returns_only_the_named_outputs(clients, kind, binary):
    images = digit_images(2)
    r = clients[kind].infer("digits", [_input(kind, "images", images, "FP32", binary)],
                            outputs=_outputs(kind, ["class_index"], binary))
    response = r.get_response(as_json=True) if kind == "grpc" else r.get_response()
    assert [o["name"] for o in response["outputs"]] == ["class_index"]
    assert r.as_numpy("probabilities") is None


@pytest.mark.parametrize("kind,binary", [("http", True), ("http", False), ("grpc", True)])
def test_multi_input_and_bytes_signatures_equal_v1(server, clients, kind, binary):
    a, b = np.array([1.0, 2.5], np.float32), np.array([[1, 2], [3, 2 ** 40]], np.int64)
    v1 = _v1_predict(server, "tf2", {"signature_name": "multi",
                                     "inputs": {"a": a.tolist(), "b": b.tolist()}})["outputs"]
    r = clients[kind].infer("tf2", [_input(kind, "a", a, "FP32", binary),
                                    _input(kind, "b", b, "INT64", binary)],
                            outputs=_outputs(kind, ["sum", "b_twice"], binary),
                            parameters={"signature_name": "multi"})
    np.testing.assert_allclose(r.as_numpy("sum"), v1["sum"], rtol=1e-6)   # (V1: 7 digits)
    assert r.as_numpy("b_twice").tolist() == v1["b_twice"]

    words = np.array(["hé".encode(), b"\x00ab", b""], dtype=object)
    v1 = _v1_predict(server, "tf2", {"signature_name": "echo", "inputs": {"data_bytes": [
        {"b64": "aMOp"}, {"b64": "AGFi"}, {"b64": ""}]}})["outputs"]
    r = clients[kind].infer("tf2", [_input(kind, "data_bytes", words, "BYTES", binary)],
                            outputs=_outputs(kind, ["length", "echo_bytes"], True),
                            parameters={"signature_name": "echo"})
    assert r.as_numpy("length").tolist() == v1["length"] == [3, 3, 0]
    assert r.as_numpy("echo_bytes").tolist() == list(words)


@pytest.mark.parametrize("kind,binary", [("http", True), ("http", False), ("grpc", True)])
def test_every_datatype_round_trips(clients, kind, binary):
    rng = np.random.default_rng(1)
    arrays = {}
    for dt, np_type in DTYPES.items():
        if dt == "BYTES":
            arrays[dt] = np.array([[b"a", "é".encode()], [b"", b"xyz"]], dtype=object)
        elif dt == "BOOL":
            arrays[dt] = np.array([[True, False], [False, True]])
        elif dt.startswith("FP"):
            arrays[dt] = rng.normal(size=(2, 2)).astype(np_type)
        else:
            info = np.iinfo(np_type)
            arrays[dt] = np.array([[info.min, info.max], [0, 1]], np_type)
    inputs = [_input(kind, "in_" + dt.lower(), a, dt, binary) for dt, a in arrays.items()]
    names = ["out_" + dt.lower() for dt in arrays]
    r = clients[kind].infer("dtypes", inputs, outputs=_outputs(kind, names, binary))
    for dt, a in arrays.items():
        got = r.as_numpy("out_" + dt.lower())
        assert got.dtype == a.dtype if dt != "BYTES" else got.dtype == object, dt
        if dt == "BYTES":   # (tritonclient gives JSON BYTES as str)
            got = np.vectorize(lambda v: v.encode() if isinstance(v, str) else v,
                               otypes=[object])(got)
        assert got.tolist() == a.tolist(), dt


def test_grpc_typed_contents_and_raw_output_parameter(server):
    """A request with ``contents`` (no raw buffers), answered in ``contents`` when
    ``raw_output`` is false (grpc_v2's parameter)."""
    import grpc

    from tfdeploy.serving.protos_v2 import SERVICE, messages

    m = messages()
    req = m.ModelInferRequest(model_name="tf2")
    req.parameters["signature_name"].string_param = "multi"
    req.parameters["raw_output"].bool_param = False
    req.inputs.add(name="a", datatype="FP32", shape=[1]).contents.fp32_contents.append(1.5)
    req.inputs.add(name="b", datatype="INT64", shape=[1, 2]).contents.int64_contents.extend(
        [2, 3])
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        call = channel.unary_unary(f"/{SERVICE}/ModelInfer",
                                   request_serializer=m.ModelInferRequest.SerializeToString,
                                   response_deserializer=m.ModelInferResponse.FromString)
        resp = call(req, timeout=30)
        out = {o.name: o for o in resp.outputs}
        assert list(out["sum"].contents.fp32_contents) == [6.5]
        assert list(out["b_twice"].contents.int64_contents) == [4, 6]
        assert not resp.raw_output_contents
        # FP16 has no contents field: then every output is raw (all or none, the protocol's
        # rule), whatever raw_output says.
        req = m.ModelInferRequest(model_name="dtypes")
        req.parameters["signature_name"].string_param = "fp16"
        req.parameters["raw_output"].bool_param = False
        req.inputs.add(name="fp32_input", datatype="FP32",
                       shape=[1, 4]).contents.fp32_contents.extend([1, 2, 3, 4.5])
        resp = call(req, timeout=30)
        assert [o.datatype for o in resp.outputs] == ["FP16", "FP32"]
        assert not any(o.HasField("contents") for o in resp.outputs)
        assert np.frombuffer(resp.raw_output_contents[0], "<f2").tolist() == [1, 2, 3, 4.5]
        assert np.frombuffer(resp.raw_output_contents[1], "<f4").tolist() == [1, 2, 3, 4.5]


# -- KServe's V2 test cases, translated (python/kserve/test/test_server.py TestV2Endpoints) --
FP32_DATA = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]
KSERVE_CASES = [
    # (KServe test, body, expected status, check of the answer)
    ("test_infer_v2: nested data, flat answer",
     {"inputs": [{"name": "in_int32", "shape": [1, 2], "datatype": "INT32", "data": [[1, 2]]}]
      + [{"name": "in_" + k.lower(), "shape": [0, 2], "datatype": k, "data": []}
         for k in DTYPES if k != "INT32"], "outputs": [{"name": "out_int32"}]},
     200, lambda r: r["outputs"][0]["data"] == [1, 2] and r["outputs"][0]["shape"] == [1, 2]),
    ("test_infer_parameters_v2: id and custom parameters accepted, id echoed",
     {"id": "123", "parameters": {"test-str": "dummy", "test-bool": True, "test-int": 100,
                                  "test-float": 1.3, "signature_name": "fp16"},
      "inputs": [{"name": "fp32_input", "shape": [2, 4], "datatype": "FP32", "data": FP32_DATA,
                  "parameters": {"test-str": "dummy"}}]},
     200, lambda r: r["id"] == "123" and r["model_name"] == "dtypes"),
    ("test_requested_output: only the requested output",
     {"id": "123", "parameters": {"signature_name": "fp16"},
      "inputs": [{"name": "fp32_input", "shape": [2, 4], "datatype": "FP32", "data": FP32_DATA}],
      "outputs": [{"name": "fp32_output", "parameters": {"binary_data": False}}]},
     200, lambda r: [o["name"] for o in r["outputs"]] == ["fp32_output"] and np.allclose(
         r["outputs"][0]["data"], np.array(FP32_DATA, np.float32).reshape(-1))),
    ("test_fp16_output_not_binary_data: FP16 as JSON numbers (Triton's rule; KServe: 400)",
     {"parameters": {"signature_name": "fp16"},
      "inputs": [{"name": "fp32_input", "shape": [2, 4], "datatype": "FP32", "data": FP32_DATA}],
      "outputs": [{"name": "fp16_output"}]},
     200, lambda r: r["outputs"][0]["datatype"] == "FP16" and r["outputs"][0]["data"][0] ==
     float(np.float16(6.8))),
    ("test_infer_v2 with a wrong datatype: 400 naming both",
     {"parameters": {"signature_name": "fp16"},
      "inputs": [{"name": "fp32_input", "shape": [2, 4], "datatype": "FP64", "data": FP32_DATA}]},
     400, lambda r: "FP64" in r["error"] and "FP32" in r["error"]),
    ("model.validate: 'inputs' not a list is invalid input",
     {"inputs": "invalid"}, 400, lambda r: "'inputs'" in r["error"]),
]


# MLServer's (tests/rest/test_endpoints.py), on tf2 (y = 0.5 x + 2) in place of its sum-model.
_X = {"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]}
MLSERVER_CASES = [  # (MLServer test, method, path, body, status, check of the answer)
    ("test_live", "GET", "/v2/health/live", None, 200, lambda r: r == {"live": True}),
    ("test_ready", "GET", "/v2/health/ready", None, 200, lambda r: r == {"ready": True}),
    ("test_model_ready", "GET", "/v2/models/tf2/versions/1/ready", None, 200,
     lambda r: r["ready"] is True),
    ("test_metadata", "GET", "/v2", None, 200,
     lambda r: r["name"] == "tfdeploy" and r["version"] == tfdeploy_version()
     and isinstance(r["extensions"], list)),
    ("test_model_metadata", "GET", "/v2/models/tf2", None, 200,
     lambda r: r["name"] == "tf2" and r["platform"] == "tensorflow_savedmodel"
     and r["versions"] == ["1"]
     and r["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1]}]),
    ("test_infer (no version)", "POST", "/v2/models/tf2/infer", _X, 200,
     lambda r: len(r["outputs"]) == 1 and r["outputs"][0]["data"] == [2.5, 3.0, 3.5]),
    ("test_infer (version)", "POST", "/v2/models/tf2/versions/1/infer", _X, 200,
     lambda r: r["outputs"][0]["data"] == [2.5, 3.0, 3.5] and r["model_version"] == "1"),
    ("test_infer_error: unknown model", "POST", "/v2/models/my-model/versions/v0/infer", _X,
     404, lambda r: "my-model" in r["error"]),
    ("test_infer_error: unknown version", "POST", "/v2/models/tf2/versions/v0/infer", _X,
     404, lambda r: "v0" in r["error"]),
    ("test_infer_invalid_datatype_error (MLServer: 422; the protocol: 400)", "POST",
     "/v2/models/tf2/infer",
     {"inputs": [{"name": "x", "shape": [3], "datatype": "FP31", "data": [1, 2, 3]}]}, 400,
     lambda r: "FP31" in r["error"] and "FP32" in r["error"]),
]


def tfdeploy_version():
    import tfdeploy

    return tfdeploy.__version__


@pytest.mark.parametrize("case", MLSERVER_CASES, ids=[c[0].split(" ")[0] + str(i)
                                                      for i, c in enumerate(MLSERVER_CASES)])
def test_mlserver_v2_cases(server, case):
    _, method, path, body, status, check = case
    got, answer = rest_call(server.rest_port, method, path, body)
    assert got == status, answer
    assert check(answer), answer


def _binary_body(header, blobs):
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head)),
                                    "Content-Type": "application/octet-stream"}


def _post_raw(port, path, raw, headers):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body=raw, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Inference-Header-Content-Length"), resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("case", KSERVE_CASES, ids=[c[0].split(":")[0] for c in KSERVE_CASES])
def test_kserve_v2_cases(server, case):
    _, body, status, check = case
    got, answer = rest_call(server.rest_port, "POST", "/v2/models/dtypes/infer", body)
    assert got == status, answer
    assert check(answer), answer


def test_kserve_fp16_input_as_binary_data(server):
    """KServe's test_fp16_input_as_binary_data: FP16 sent binary beside BYTES sent as JSON."""
    fp16 = np.array(FP32_DATA, np.float16)
    header = {"id": "123", "inputs": [
        {"name": "in_fp16", "shape": [2, 4], "datatype": "FP16",
         "parameters": {"binary_data_size": fp16.nbytes}}],
        "outputs": [{"name": "out_fp16", "parameters": {"binary_data": False}}]}
    header["inputs"][0]["shape"] = [4, 2]
    for k in DTYPES:
        if k != "FP16":
            header["inputs"].append({"name": "in_" + k.lower(), "shape": [1, 2], "datatype": k,
                                     "data": ["cat", "dog"] if k == "BYTES" else
                                     [True, False] if k == "BOOL" else [1, 2]})
    raw, headers = _binary_body(header, [fp16.tobytes()])
    status, _, body = _post_raw(server.rest_port, "/v2/models/dtypes/infer", raw, headers)
    answer = json.loads(body)
    assert status == 200, answer
    assert answer["outputs"][0]["data"] == fp16.reshape(-1).astype(float).tolist()


@pytest.mark.parametrize("all_binary,per_output,binary_names", [
    (False, {"fp16_output": True, "fp32_output": False}, ["fp16_output"]),   # fp16_output_as_binary
    (True, None, ["fp16_output", "fp32_output"]),                            # all_output_as_binary
    (True, {"fp16_output": True, "fp32_output": False}, ["fp16_output"]),    # parameter_precedence
])
def test_kserve_binary_output_cases(server, all_binary, per_output, binary_names):
    body = {"id": "123", "parameters": {"signature_name": "fp16"},
            "inputs": [{"name": "fp32_input", "shape": [2, 4], "datatype": "FP32",
                        "data": FP32_DATA}]}
    if all_binary:
        body["parameters"]["binary_data_output"] = True
    if per_output:
        body["outputs"] = [{"name": n, "parameters": {"binary_data": b}}
                           for n, b in per_output.items()]
    status, length, raw = _post_raw(server.rest_port, "/v2/models/dtypes/infer",
                                    json.dumps(body).encode(), {})
    assert status == 200 and length is not None
    header, blobs = json.loads(raw[:int(length)]), raw[int(length):]
    assert [o["name"] for o in header["outputs"] if "parameters" in o] == binary_names
    expect = {"fp16_output": np.array(FP32_DATA, np.float16),
              "fp32_output": np.array(FP32_DATA, np.float32)}
    offset = 0
    for o in header["outputs"]:
        if "parameters" in o:
            size = o["parameters"]["binary_data_size"]
            got = np.frombuffer(blobs[offset:offset + size], expect[o["name"]].dtype)
            offset += size
            assert got.tolist() == expect[o["name"]].reshape(-1).tolist()
        else:
            np.testing.assert_allclose(o["data"], expect[o["name"]].reshape(-1))
    assert offset == len(blobs)


# -- errors: 4xx with the protocol's {"error"} body, before the model runs -----------------------
ERRORS = [  # (method, path, body or raw bytes, status, substring of the error)
    ("GET", "/v2/models/nope", None, 404, "nope"),
    ("GET", "/v2/models/nope/ready", None, 404, "nope"),
    ("GET", "/v2/models/digits/versions/abc", None, 404, "no version 'abc'"),
    ("GET", "/v2/models/nope/versions/abc", None, 404, "nope"),
    ("GET", "/v2/models/digits/versions/9/ready", None, 404, "no version 9"),
    ("POST", "/v2/models/digits/ready", {}, 404, "V2 routes"),
    ("GET", "/v2/models/digits/infer", None, 404, "V2 routes"),
    ("GET", "/v2/nowhere", None, 404, "V2 routes"),
    ("POST", "/v2/models/digits/infer", b"{", 400, "JSON"),
    ("POST", "/v2/models/digits/infer", [1], 400, "object"),
    ("POST", "/v2/models/digits/infer", {"inputs": []}, 400, "'inputs'"),
    ("POST", "/v2/models/digits/infer", {"inputs": [{"name": "images", "shape": [1, 32, 32],
                                                     "datatype": "FP32", "data": [0] * 1024}]},
     400, "rank 4"),
    ("POST", "/v2/models/digits/infer", {"inputs": [{"name": "images", "shape": [1],
                                                     "datatype": "FP32", "data": [0]}]},
     400, "rank 4"),
    ("POST", "/v2/models/digits/infer", {"inputs": [{"name": "images", "shape": [1, 32, 32, 1],
                                                     "datatype": "FP32", "data": [0] * 5}]},
     400, "1024 elements but 5"),
    ("POST", "/v2/models/digits/infer", {"inputs": [{"name": "images", "shape": [1, 32, 32, 1],
                                                     "datatype": "INT64", "data": [0] * 1024}]},
     400, "expects FP32"),
    ("POST", "/v2/models/digits/infer", {"inputs": [{"name": "images", "shape": [1, 32, 32, 1],
                                                     "datatype": "FP32", "data": ["a"] * 1024}]},
     400, "numbers"),
    ("POST", "/v2/models/digits/infer", {"inputs": [{"name": "pixels", "shape": [1],
                                                     "datatype": "FP32", "data": [0]}]},
     400, "['images']"),
    ("POST", "/v2/models/digits/infer", {"inputs": [{"name": "images", "shape": [-1, 32, 32, 1],
                                                     "datatype": "FP32", "data": []}]},
     400, "non-negative"),
    ("POST", "/v2/models/digits/infer", {"inputs": [{"name": "images", "shape": [1, 32, 32, 1],
                                                     "datatype": "FP32", "data": [0] * 1024}],
                                         "outputs": [{"name": "logits"}]}, 400, "logits"),
    ("POST", "/v2/models/digits/infer", {"inputs": [{"name": "images", "shape": [1, 32, 32, 1],
                                                     "datatype": "FP32"}]}, 400, "no 'data'"),
    ("POST", "/v2/models/tf2/infer", {"parameters": {"signature_name": "multi"}, "inputs": [
        {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}, 400, "Missing"),
    ("POST", "/v2/models/tf2/infer", {"parameters": {"signature_name": "multi"}, "inputs": [
        {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]},
        {"name": "b", "shape": [1, 2], "datatype": "INT64", "data": [1, 2 ** 70]}]},
     400, "INT64"),
    ("POST", "/v2/models/tf2/infer", {"parameters": {"signature_name": "nope"}, "inputs": [
        {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}, 400, "nope"),
    ("POST", "/v2/models/tf2/infer", {"parameters": {"binary_data_output": "yes"}, "inputs": [
        {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}, 400,
     "binary_data_output"),
    ("POST", "/v2/models/tf2/infer", {"inputs": [
        {"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]},
     400, "binary_data_size"),
]


@pytest.mark.parametrize("method,path,body,status,words", ERRORS)
def test_errors_are_4xx_naming_the_problem(server, method, path, body, status, words):
    raw = body if isinstance(body, bytes) else None
    got, answer = rest_call(server.rest_port, method, path, None if raw else body, raw=raw)
    assert got == status, answer
    assert isinstance(answer, dict) and words in answer["error"], answer


BINARY_ERRORS = [  # (header, blob, Inference-Header-Content-Length or None, words)
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                  "parameters": {"binary_data_size": 8}}]}, b"\0" * 7, None, "exceeds the 7"),
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                  "parameters": {"binary_data_size": 4}}]}, b"\0" * 4, None, "needs 8 bytes"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                  "parameters": {"binary_data_size": 4}}]}, b"\0" * 8, None, "no input"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                  "parameters": {"binary_data_size": 4}}]}, b"\0" * 4, "999", "0 to the body"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                  "parameters": {"binary_data_size": 4}}]}, b"\0" * 4, "-1", "integer"),
    ({"parameters": {"signature_name": "echo"}, "inputs": [
        {"name": "data_bytes", "shape": [1], "datatype": "BYTES",
         "parameters": {"binary_data_size": 6}}]}, b"\x09\0\0\0ab", None, "declares 9 bytes"),
    ({"parameters": {"signature_name": "echo"}, "inputs": [
        {"name": "data_bytes", "shape": [1], "datatype": "BYTES",
         "parameters": {"binary_data_size": 2}}]}, b"\x01\0", None, "length prefix"),
]


@pytest.mark.parametrize("header,blob,length,words", BINARY_ERRORS)
def test_binary_data_errors_are_400(server, header, blob, length, words):
    raw, headers = _binary_body(header, [blob])
    if length is not None:
        headers["Inference-Header-Content-Length"] = length
    status, _, body = _post_raw(server.rest_port, "/v2/models/tf2/infer", raw, headers)
    assert status == 400 and words in json.loads(body)["error"], body


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_client_errors_reach_tritonclient_as_invalid_argument(clients, kind):
    c = clients[kind]
    bad = _input(kind, "images", np.zeros((1, 32, 32), np.float32), "FP32")
    with pytest.raises(InferenceServerException, match="rank 4") as info:
        c.infer("digits", [bad])
    assert info.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")


# -- metrics and batching: one data plane ------------------------------------------------------
def test_v2_requests_are_recorded_with_their_protocol(server, clients):
    clients["http"].get_model_metadata("digits")
    clients["grpc"].get_model_metadata("digits")
    status, text = rest_call(server.rest_port, "GET", METRICS)
    assert status == 200
    lines = text.splitlines()
    for protocol in ("REST_V2", "GRPC_V2"):
        assert any('entrypoint="' + protocol + '"' in line and 'model_name="digits"' in line
                   for line in lines), protocol


def test_v2_requests_share_v1s_batcher(tmp_path):
    """With batching on, V1 and V2 requests sent together run in the same batches."""
    import concurrent.futures

    from tfdeploy.serving import ModelConfig, create_server

    build_tf2_model(str(tmp_path / "tf2" / "1"))
    (tmp_path / "batching.config").write_text(
        "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 200000 }\n"
        "num_batch_threads { value: 1 }\n")
    (tmp_path / "monitoring.config").write_text(
        f'prometheus_config {{ enable: true path: "{METRICS}" }}\n')
    server = create_server(configs=[ModelConfig("tf2", str(tmp_path / "tf2"))], port=0,
                           rest_api_port=0, file_system_poll_wait_seconds=0,
                           enable_batching=True,
                           batching_parameters_file=str(tmp_path / "batching.config"),
                           monitoring_config_file=str(tmp_path / "monitoring.config"))
    server.start()
    try:
        def v1(i):
            return rest_call(server.rest_port, "POST", "/v1/models/tf2:predict",
                             {"instances": [float(i)]})

        def v2(i):
            return rest_call(server.rest_port, "POST", "/v2/models/tf2/infer", {"inputs": [
                {"name": "x", "shape": [1], "datatype": "FP32", "data": [float(i)]}]})
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(v1 if i % 2 else v2, i) for i in range(8)]
            answers = [f.result() for f in futures]
        for i, (status, answer) in enumerate(answers):
            assert status == 200, answer
            value = answer["predictions"][0] if i % 2 else answer["outputs"][0]["data"][0]
            assert value == 0.5 * i + 2.0
        _, text = rest_call(server.rest_port, "GET", METRICS)
        from tfdeploy.serving.metrics import BATCH_SIZE

        def series(suffix):
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith(BATCH_SIZE + suffix) and 'model_name="tf2"' in line)
        # Every request, V1 or V2, went through the one batcher, in fewer batches than requests.
        assert series("_sum") == 8, text[:3000]
        assert series("_count") < 8, f"8 requests ran in {series('_count')} batches"
    finally:
        server.stop()


# -- KServe's own clients (its venv) ------------------------------------------------------------
_KSERVE_CLIENTS = r"""
import asyncio, json, sys
import numpy as np
from kserve import InferenceRESTClient, InferenceGRPCClient, InferInput, InferRequest
from kserve.inference_client import RESTConfig
rest_port, grpc_port, images = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
x = np.array(images, np.float32)
out = {}
async def main():
    rest = InferenceRESTClient(RESTConfig(protocol="v2"))
    base = f"http://127.0.0.1:{rest_port}"
    out["rest_live"] = await rest.is_server_live(base)
    out["rest_ready"] = await rest.is_server_ready(base)
    out["rest_model_ready"] = await rest.is_model_ready(base, "digits")
    for binary in (False, True):
        inp = InferInput("images", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        req = InferRequest(model_name="digits", infer_inputs=[inp], request_id="r1")
        res = await rest.infer(base, req, model_name="digits")
        out[f"rest_probabilities_{binary}"] = res.get_output_by_name(
            "probabilities").as_numpy().tolist()
    await rest.close()
    grpc = InferenceGRPCClient(f"127.0.0.1:{grpc_port}")
    out["grpc_live"] = await grpc.is_server_live()
    out["grpc_model_ready"] = await grpc.is_model_ready("digits")
    inp = InferInput("images", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    res = await grpc.infer(InferRequest(model_name="digits", infer_inputs=[inp],
                                        request_id="g1"))
    out["grpc_probabilities"] = res.get_output_by_name("probabilities").as_numpy().tolist()
    await grpc.close()
asyncio.run(main())
print(json.dumps(out))
"""


def test_kserve_clients_get_v1s_answers(server, kserve_python):
    images = digit_images(2, seed=9)
    v1 = _v1_predict(server, "digits", {"instances": images.tolist()})["predictions"]
    proc = subprocess.run([kserve_python, "-c", _KSERVE_CLIENTS, str(server.rest_port),
                           str(server.grpc_port), json.dumps(images.tolist())],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rest_live"] and out["rest_ready"] and out["rest_model_ready"]
    assert out["grpc_live"] and out["grpc_model_ready"]
    want = [p["probabilities"] for p in v1]
    for key in ("rest_probabilities_False", "rest_probabilities_True", "grpc_probabilities"):
        np.testing.assert_allclose(out[key], want, rtol=1e-6, err_msg=key)


# -- fuzz: a `tfdeploy serve` process with oneDNN forced on ----------------------------------
N_REST_FUZZ = 500
N_GRPC_FUZZ = 200
_ODD = [None, True, False, 0, -1, 1.5, "", "x", "\ud800", [], {}, [[]], 10 ** 30, -(10 ** 30),
        2 ** 64, 1e308, [1, "a"], [[1], 2], [None], [10 ** 400], float("nan"), "FP32", [-1],
        [10 ** 12, 10 ** 12], [2 ** 63], [0.5], [True], {"binary_data_size": 4}]
_DATATYPES = list(DTYPES) + ["BF16", "fp32", "FLOAT", "", "INT128"]
_SHAPES = [[], [0], [1], [1024], [1, 1024], [1, 32, 32], [1, 32, 32, 1], [1, 32, 32, 3],
           [2, 32, 32, 1], [1, 1, 1, 1, 1], [32, 32, 1], [0, 32, 32, 1], [10 ** 9, 10 ** 9],
           [2 ** 62, 4], [-1, 32, 32, 1], [1.5], ["1"], [True], [1, 2], [2], [3]]
V2_VALID = [  # (path, body, the answer's outputs' data by name)
    ("/v2/models/tf2/infer", {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                                          "data": [1.0, 2.0]}]}, {"y": [2.5, 3.0]}),
    ("/v2/models/tf2/versions/1/infer",
     {"parameters": {"signature_name": "multi"}, "inputs": [
         {"name": "a", "shape": [1], "datatype": "FP32", "data": [1.0]},
         {"name": "b", "shape": [1, 2], "datatype": "INT64", "data": [[1, 2]]}]},
     {"sum": [4.0], "b_twice": [2, 4]}),
    ("/v2/models/tf2/infer", {"parameters": {"signature_name": "echo"}, "inputs": [
        {"name": "data_bytes", "shape": [1], "datatype": "BYTES", "data": ["hé"]}],
        "outputs": [{"name": "length"}]}, {"length": [3]}),
]


def _v2_mutations(rng):
    """Yield ``(path, raw_body, headers)`` hostile V2 requests."""
    paths = ["/v2/models/digits/infer", "/v2/models/tf2/infer",
             "/v2/models/digits/versions/1/infer", "/v2/models/tf2/versions/1/infer"]
    names = ["images", "x", "a", "b", "data_bytes", "", "\ud800", "images " * 3]
    while True:
        kind = rng.randrange(8)
        path = rng.choice(paths)
        if kind == 0:   # wrong ranks and dims to the convolution: a oneDNN abort unchecked
            shape = rng.choice(_SHAPES)
            numel = int(np.prod([d for d in shape if isinstance(d, int)] or [1])) \
                if all(isinstance(d, int) and 0 <= d < 5000 for d in shape) else 1
            body = {"inputs": [{"name": "images", "shape": shape, "datatype": "FP32",
                                "data": [0.0] * min(numel, 5000)}]}
            yield "/v2/models/digits/infer", json.dumps(body).encode(), {}
        elif kind == 1:   # odd values in every field of a tensor
            tensor = {"name": rng.choice(names), "shape": rng.choice(_SHAPES + _ODD),
                      "datatype": rng.choice(_DATATYPES + _ODD), "data": rng.choice(_ODD)}
            if rng.random() < 0.3:
                tensor["parameters"] = rng.choice(_ODD + [{"binary_data_size": rng.choice(
                    _ODD)}])
            body = {"inputs": [tensor]}
            if rng.random() < 0.3:
                body[rng.choice(["outputs", "parameters", "id"])] = rng.choice(_ODD + [
                    [{"name": "y"}], [{"name": "y", "parameters": {"binary_data": "yes"}}],
                    {"signature_name": rng.choice(_ODD)}, {"binary_data_output": 1}])
            yield path, json.dumps(body).encode(), {}
        elif kind == 2:   # binary extension: lying lengths and sizes
            header = {"inputs": [{"name": rng.choice(names), "shape": rng.choice(_SHAPES),
                                  "datatype": rng.choice(_DATATYPES),
                                  "parameters": {"binary_data_size": rng.choice(
                                      [0, 1, 4, 7, 8, 4096, 2 ** 40, -4])}}]}
            head = json.dumps(header).encode()
            blob = bytes(rng.randrange(256) for _ in range(rng.choice([0, 3, 4, 8, 64])))
            length = rng.choice([len(head), len(head) + 1, len(head) - 1, 0, -5, 10 ** 20,
                                 "x", " 12", "1e3"])
            yield path, head + blob, {"Inference-Header-Content-Length": str(length)}
        elif kind == 3:   # BYTES with broken length prefixes
            blob = rng.choice([b"\xff\xff\xff\xff", b"\x01\x00", b"\x02\x00\x00\x00a",
                               b"\x00\x00\x00\x00" * 3, b"\x01\x00\x00\x00\xff"])
            header = {"parameters": {"signature_name": "echo"}, "inputs": [
                {"name": "data_bytes", "shape": [rng.choice([1, 2, 3])], "datatype": "BYTES",
                 "parameters": {"binary_data_size": len(blob)}}]}
            head = json.dumps(header).encode()
            yield "/v2/models/tf2/infer", head + blob, \
                {"Inference-Header-Content-Length": str(len(head))}
        elif kind == 4:   # broken JSON
            valid = json.dumps(rng.choice(V2_VALID)[1]).encode()
            cut = rng.randrange(len(valid))
            yield path, rng.choice([valid[:cut], valid + b"x", b"[" * 5000, b"\xff\xfe",
                                    b'{"inputs": ' + b"[" * 3000 + b"]" * 3000 + b"}"]), {}
        elif kind == 5:   # odd paths
            yield rng.choice(["/v2/models/%ED%A0%80/infer", "/v2/models/digits/versions/" +
                              "9" * 30 + "/infer", "/v2/models/digits/versions/-1/infer",
                              "/v2/models/" + "m" * 5000 + "/infer", "/v2/models//infer",
                              "/v2/models/digits/versions//infer", "/v2//models/digits/infer",
                              "/v2/models/digits/infer/x"]), b"{}", {}
        elif kind == 6:   # numbers at the edge of each integer datatype
            body = {"parameters": {"signature_name": "multi"}, "inputs": [
                {"name": "a", "shape": [1], "datatype": "FP32", "data": [rng.choice(
                    [1e39, -1e39, 1e-46, 2 ** 63, 0])]},
                {"name": "b", "shape": [1, 2], "datatype": "INT64", "data": [rng.choice(
                    [2 ** 63, -2 ** 63 - 1, 2 ** 64, 1.5, True]), 1]}]}
            yield "/v2/models/tf2/infer", json.dumps(body).encode(), {}
        else:             # valid requests whose answers must not change
            p, body, _ = rng.choice(V2_VALID)
            yield p, json.dumps(body).encode(), {}


@pytest.fixture(scope="module")
def hostile_v2(tmp_path_factory):
    from test_serving_support import ServerProcess

    root = tmp_path_factory.mktemp("hostile_v2")
    build_tf2_model(str(root / "tf2" / "1"))
    build_digits_classifier(str(root / "digits"))
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{n}" base_path: "{root / n}" model_platform: "tensorflow" }}\n'
        for n in ("tf2", "digits")) + "}\n")
    with ServerProcess(["--model_config_file", str(config), "--file_system_poll_wait_seconds",
                        "0", "--max_body_bytes", str(1 << 20)]) as server:
        assert server.onednn_on(), "oneDNN must be on in the served process for this test"
        yield server


def test_v2_rest_fuzz_never_5xx_and_the_process_lives(hostile_v2):
    import http.client

    rng = random.Random(2207)
    gen = _v2_mutations(rng)
    valid = {json.dumps(b): want for _, b, want in V2_VALID}
    conn = http.client.HTTPConnection("127.0.0.1", hostile_v2.rest_port, timeout=60)
    failures, statuses = [], {}
    for i in range(N_REST_FUZZ):
        path, raw, headers = next(gen)
        try:
            conn.request("POST", path, body=raw, headers=headers)
            resp = conn.getresponse()
            status, body = resp.status, resp.read()
        except (http.client.HTTPException, OSError) as exc:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", hostile_v2.rest_port, timeout=60)
            status, body = None, repr(exc).encode()
        statuses[status] = statuses.get(status, 0) + 1
        assert hostile_v2.alive(), f"request {i} ended the process: {path} {raw[:300]!r}\n" \
                                   f"{hostile_v2.output()[-2000:]}"
        if status is None or status >= 500:
            failures.append((status, path, raw[:200], body[:300]))
            continue
        want = valid.get(raw.decode("utf-8", "replace"))
        if want is not None:
            answer = json.loads(body)
            assert status == 200, answer
            got = {o["name"]: o["data"] for o in answer["outputs"]}
            assert {k: got[k] for k in want} == want
        elif status >= 400:
            assert "error" in json.loads(body)
    conn.close()
    print(f"V2 REST fuzz: {N_REST_FUZZ} requests, statuses {statuses}")
    assert not failures, failures[:5]
    assert statuses.get(200, 0) > 0 and statuses.get(400, 0) > N_REST_FUZZ // 3


def _v2_grpc_cases(rng, m):
    """Yield ModelInferRequests (or raw bytes) built to break the V2 gRPC front end."""
    while True:
        kind = rng.randrange(6)
        req = m.ModelInferRequest(model_name=rng.choice(["digits", "tf2", "", "nope"]))
        if rng.random() < 0.2:
            req.model_version = rng.choice(["1", "x", "9" * 30, "-1", "2"])
        if kind == 0:   # wrong ranks to the convolution, as typed contents or raw
            shape = rng.choice([s for s in _SHAPES if all(
                type(d) is int and 0 <= d < 2 ** 62 for d in s)])
            req.model_name = "digits"
            t = req.inputs.add(name="images", datatype="FP32", shape=shape)
            n = int(np.prod(shape)) if all(d < 5000 for d in shape) else 3
            if rng.random() < 0.5:
                t.contents.fp32_contents.extend([0.0] * min(n, 5000))
            else:
                req.raw_input_contents.append(b"\0" * 4 * min(n, 5000))
        elif kind == 1:  # declared sizes that do not match the buffers
            t = req.inputs.add(name=rng.choice(["images", "x", "a", "b", "data_bytes"]),
                               datatype=rng.choice(_DATATYPES),
                               shape=rng.choice([[1], [10 ** 12], [2 ** 40, 2 ** 40], [0], [3]]))
            req.raw_input_contents.append(bytes(rng.randrange(256) for _ in range(
                rng.choice([0, 1, 4, 12]))))
            if rng.random() < 0.3:
                req.raw_input_contents.append(b"extra")
        elif kind == 2:  # typed contents in the wrong field, or both kinds
            t = req.inputs.add(name="x", datatype=rng.choice(_DATATYPES), shape=[2])
            field = rng.choice(["fp32_contents", "int64_contents", "bytes_contents",
                                "bool_contents", "uint64_contents", "int_contents"])
            getattr(t.contents, field).extend({"fp32_contents": [1.0, 2.0],
                                               "int64_contents": [1, 2 ** 62],
                                               "bytes_contents": [b"a", b"\xff"],
                                               "bool_contents": [True, False],
                                               "uint64_contents": [2 ** 64 - 1, 0],
                                               "int_contents": [-2 ** 31, 2 ** 31 - 1]}[field])
            if rng.random() < 0.3:
                req.raw_input_contents.append(b"\0" * 8)
        elif kind == 3:  # odd parameters and outputs
            req.model_name = "tf2"
            req.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(1)
            key = rng.choice(["signature_name", "raw_output", "binary_data_output", "timeout"])
            p = req.parameters[key]
            choice = rng.randrange(4)
            if choice == 0:
                p.string_param = rng.choice(["multi", "nope", "", "echo"])
            elif choice == 1:
                p.bool_param = rng.random() < 0.5
            elif choice == 2:
                p.int64_param = -1
            if rng.random() < 0.5:
                req.outputs.add(name=rng.choice(["y", "nope", ""]))
        elif kind == 4:  # BYTES with broken length prefixes
            req.model_name = "tf2"
            req.parameters["signature_name"].string_param = "echo"
            req.inputs.add(name="data_bytes", datatype="BYTES", shape=[rng.choice([1, 2])])
            req.raw_input_contents.append(rng.choice([b"\xff\xff\xff\xff", b"\x01\x00",
                                                      b"\x01\x00\x00\x00a"]))
        else:            # bytes that are no message
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
            continue
        yield req


def test_v2_grpc_fuzz_never_internal_and_the_process_lives(hostile_v2):
    import grpc

    from tfdeploy.serving.protos_v2 import SERVICE, messages

    m = messages()
    rng = random.Random(2208)
    gen = _v2_grpc_cases(rng, m)
    codes = {}
    with grpc.insecure_channel(f"127.0.0.1:{hostile_v2.grpc_port}") as channel:
        infer = channel.unary_unary(f"/{SERVICE}/ModelInfer",
                                    request_serializer=lambda r: r if isinstance(r, bytes)
                                    else r.SerializeToString(),
                                    response_deserializer=m.ModelInferResponse.FromString)
        for i in range(N_GRPC_FUZZ):
            req = next(gen)
            try:
                infer(req, timeout=60)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
                assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                                    grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNAVAILABLE), \
                    (req, exc.details())
                assert exc.details(), req
            codes[code.name] = codes.get(code.name, 0) + 1
            assert hostile_v2.alive(), f"request {i} ended the process: {req}\n" \
                                       f"{hostile_v2.output()[-2000:]}"
    print(f"V2 gRPC fuzz: {N_GRPC_FUZZ} requests, codes {codes}")
    assert codes.get("INVALID_ARGUMENT", 0) > N_GRPC_FUZZ // 3


# -- deployment: KServe's InferenceService on tfdeploy serve, probes on the V2 routes --------
def test_kserve_manifest_runs_tfdeploy_serve_with_v2_probes(server, tmp_path):
    import argparse

    import yaml

    from tfdeploy.commands import serve
    from tfdeploy.deploy import write_configs
    from tfdeploy.serving.options import from_flags
    from tfdeploy.serving.repository import ModelConfig

    (tmp_path / "digits" / "1").mkdir(parents=True)
    paths = write_configs([ModelConfig("digits", str(tmp_path / "digits"))], tmp_path / "out")
    runtime, service = yaml.safe_load_all(open(paths["kserve.yaml"]))
    assert runtime["kind"] == "ServingRuntime" and "v2" in runtime["spec"]["protocolVersions"]
    assert service["kind"] == "InferenceService"
    model = service["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == "v2" and model["runtime"] == runtime["metadata"]["name"]
    container = runtime["spec"]["containers"][0]
    # The container's command line is one `tfdeploy serve` takes (KServe fills {{.Name}}).
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    args = [a.replace("{{.Name}}", "digits") for a in container["args"]]
    assert args[0] == "serve"
    options = from_flags(parser.parse_args(args[1:]))
    assert options["model_name"] == "digits" and options["model_base_path"] == "/mnt/models"
    assert options["rest_api_port"] == container["ports"][0]["containerPort"]
    # The probes' routes answer 200 on a server that has loaded its models.
    for probe in ("readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert path.startswith("/v2/health/")
        assert rest_call(server.rest_port, "GET", path)[0] == 200, path


# -- every runtime answers over V2 as over V1 -------------------------------------------------
@pytest.fixture(scope="module")
def artifacts_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2_runtimes")
    build_digits_classifier(str(root / "digits"), artifacts=["tflite_float32", "onnx"])
    return root


@pytest.mark.parametrize("runtime", ["tensorflow", "litert", "onnxruntime", "openvino"])
def test_every_runtime_answers_over_v2_as_over_v1(artifacts_root, runtime):
    """The runtime sits under the data plane, so V1 predict and V2 infer (REST, binary data on
    and off, and gRPC) of one server give the same numbers."""
    from tfdeploy.serving import create_server

    server = create_server(model_name="digits", model_base_path=str(artifacts_root / "digits"),
                           port=0, rest_api_port=0, file_system_poll_wait_seconds=0,
                           max_num_load_retries=0, runtime=runtime).start()
    try:
        status, meta = rest_call(server.rest_port, "GET", "/v1/models/digits/metadata")
        report = meta["metadata"].get("runtime", {"serving": {"runtime": "tensorflow"}})
        assert status == 200 and report["serving"]["runtime"] == runtime, meta
        images = digit_images(3, seed=11)
        v1 = _v1_predict(server, "digits", {"instances": images.tolist()})["predictions"]
        want = np.array([p["probabilities"] for p in v1], np.float32)
        http = httpclient.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        for kind, client, binary in (("http", http, True), ("http", http, False),
                                     ("grpc", grpc, True)):
            r = client.infer("digits", [_input(kind, "images", images, "FP32", binary)],
                             outputs=_outputs(kind, ["probabilities", "class_index"], binary))
            np.testing.assert_allclose(r.as_numpy("probabilities"), want, rtol=1e-6,
                                       err_msg=f"{runtime} {kind} binary={binary}")
            assert r.as_numpy("class_index").tolist() == [p["class_index"] for p in v1]
        http.close()
        grpc.close()
    finally:
        server.stop()
