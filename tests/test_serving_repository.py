"""Version directories, policies, labels, polling, failed loads and warmup, through a server."""

import os
import threading
import time

import numpy as np
import pytest

from test_serving_support import build_half_plus_two, rest_call

pytest_plugins = ("test_serving_support",)  # fixture: model_root


def _start(**kwargs):
    from tfdeploy.serving import create_server

    kwargs.setdefault("max_num_load_retries", 0)   # a broken version fails at once here
    return create_server(port=0, rest_api_port=0, **kwargs).start()


def _wait_for(predicate, timeout=60.0, every=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return False


def _predict(server, x, path="/v1/models/half"):
    return rest_call(server.rest_port, "POST", path + ":predict", {"instances": [x]})


def test_new_version_is_picked_up_while_requests_keep_succeeding(tmp_path):
    base = tmp_path / "half"
    build_half_plus_two(str(base / "1"), scale=0.5)
    server = _start(model_name="half", model_base_path=str(base),
                    file_system_poll_wait_seconds=0.1)
    results, stop = [], threading.Event()

    def hammer():
        while not stop.is_set():
            results.append(_predict(server, 2.0))

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        assert _wait_for(lambda: len(results) >= 5)
        # an export in progress: invisible under its temp- name, then renamed into place
        build_half_plus_two(str(base / "temp-2-abc"), scale=1.0)
        time.sleep(0.5)
        assert all(r == (200, {"predictions": [3.0]}) for r in results)
        os.rename(base / "temp-2-abc", base / "2")
        assert _wait_for(lambda: results[-1] == (200, {"predictions": [4.0]}))
        n = len(results)
        assert _wait_for(lambda: len(results) >= n + 5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    statuses = [r[0] for r in results]
    assert statuses.count(200) == len(results), f"non-200 answers: {set(statuses)}"
    assert {tuple(r[1]["predictions"]) for r in results} == {(3.0,), (4.0,)}
    # v1 unloaded once v2 was available; the status says so (newest first)
    status = rest_call(server.rest_port, "GET", "/v1/models/half")[1]["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("2", "AVAILABLE"), ("1", "END")]
    assert _predict(server, 2.0, "/v1/models/half/versions/1")[0] == 404

    # a broken version 3 fails to load; version 2 keeps serving
    os.makedirs(base / "3")
    (base / "3" / "saved_model.pb").write_bytes(b"not a protobuf")
    assert _wait_for(lambda: rest_call(server.rest_port, "GET", "/v1/models/half/versions/3")[0]
                     == 200)
    (v3,) = rest_call(server.rest_port, "GET", "/v1/models/half/versions/3")[1][
        "model_version_status"]
    assert v3["state"] == "END" and v3["status"]["error_code"] != "OK"
    assert v3["status"]["error_message"]
    assert _predict(server, 2.0) == (200, {"predictions": [4.0]})
    server.stop()


def test_saved_model_without_serve_tag_is_reported(tmp_path):
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        tf.compat.v1.placeholder(tf.float32, [None], name="x")
        builder = tf.compat.v1.saved_model.Builder(str(tmp_path / "1"))
        builder.add_meta_graph_and_variables(sess, ["train"])
        builder.save()
    server = _start(model_name="m", model_base_path=str(tmp_path),
                    file_system_poll_wait_seconds=0)
    try:
        (status,) = rest_call(server.rest_port, "GET", "/v1/models/m")[1]["model_version_status"]
        assert status["state"] == "END" and status["status"]["error_code"] == "NOT_FOUND"
        assert "Could not find meta graph def matching supplied tags: { serve }" in \
            status["status"]["error_message"]
        assert _predict(server, 1.0, "/v1/models/m") == (
            404, {"error": "Servable not found for request: Latest(m)"})
    finally:
        server.stop()


def test_model_config_file_policies_and_labels(tmp_path):
    for v, scale in ((1, 0.5), (2, 1.0), (3, 2.0)):
        build_half_plus_two(str(tmp_path / "a" / str(v)), scale=scale)
    os.makedirs(tmp_path / "b")
    for v in (1, 2, 3):
        os.symlink(tmp_path / "a" / str(v), tmp_path / "b" / str(v))
    config = tmp_path / "models.config"
    config.write_text(f"""
model_config_list {{
  config {{
    name: "all_versions"  base_path: "{tmp_path / 'a'}"  model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 3 }}
  }}
  config {{
    name: "pinned"  base_path: "{tmp_path / 'b'}"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
  }}
  config {{
    name: "latest_two"  base_path: "{tmp_path / 'a'}"
    model_version_policy {{ latest {{ num_versions: 2 }} }}
  }}
}}""")
    server = _start(model_config_file=str(config), file_system_poll_wait_seconds=0)
    try:
        def versions(name):
            body = rest_call(server.rest_port, "GET", f"/v1/models/{name}")[1]
            return sorted(int(s["version"]) for s in body["model_version_status"])

        assert versions("all_versions") == [1, 2, 3]
        assert versions("pinned") == [1, 2]
        assert versions("latest_two") == [2, 3]
        assert _predict(server, 2.0, "/v1/models/all_versions/labels/stable")[1] == {
            "predictions": [3.0]}
        assert _predict(server, 2.0, "/v1/models/all_versions/labels/canary")[1] == {
            "predictions": [6.0]}
        assert _predict(server, 2.0, "/v1/models/pinned")[1] == {"predictions": [4.0]}  # latest
        assert _predict(server, 2.0, "/v1/models/latest_two/versions/1")[0] == 404
    finally:
        server.stop()


def test_bad_model_config_file_is_a_clear_error(tmp_path):
    from tfdeploy.serving import create_server

    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "x" base_pth: "/m" } }')
    with pytest.raises(ValueError, match="Could not parse .*models.config.*ModelServerConfig"):
        create_server(model_config_file=str(config))
    config.write_text('model_config_list { config { name: "../x" base_path: "/m" } }')
    with pytest.raises(ValueError, match="Invalid model name '../x'"):
        create_server(model_config_file=str(config))


def test_warmup_records_are_replayed_at_load(tmp_path):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, regression_pb2

    from tfdeploy.serving.warmup import write_warmup_requests

    good, bad = tmp_path / "good", tmp_path / "bad"
    build_half_plus_two(str(good / "1"))
    build_half_plus_two(str(bad / "1"))
    req = predict_pb2.PredictRequest()
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0, 2.0], np.float32)))
    reg = regression_pb2.RegressionRequest()
    reg.model_spec.signature_name = "tensorflow/serving/regress"
    reg.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    write_warmup_requests(str(good / "1"), [req, req, reg])
    wrong = predict_pb2.PredictRequest()
    wrong.inputs["not_an_input"].CopyFrom(tf.make_tensor_proto([1.0]))
    write_warmup_requests(str(bad / "1"), [wrong])

    from tfdeploy.serving import ModelConfig

    server = _start(configs=[ModelConfig("good", str(good)), ModelConfig("bad", str(bad))],
                    file_system_poll_wait_seconds=0)
    try:
        text = server.metrics.render()
        # three warmup runs happened before any request was sent
        assert ':tensorflow:serving:runtime_latency_count{model_name="good"} 3.0' in text
        assert _predict(server, 2.0, "/v1/models/good")[1] == {"predictions": [3.0]}
        (status,) = rest_call(server.rest_port, "GET", "/v1/models/bad")[1]["model_version_status"]
        assert status["state"] == "END" and status["status"]["error_code"] == "INVALID_ARGUMENT"
        assert "not_an_input" in status["status"]["error_message"]
        assert _predict(server, 2.0, "/v1/models/bad")[0] == 404
    finally:
        server.stop()


def test_tfdeploy_export_warmup_replays(model_root, tmp_path):
    import shutil

    import tensorflow as tf

    shutil.copytree(model_root / "digits", tmp_path / "digits")
    warmup = tmp_path / "digits" / "1" / "assets.extra" / "tf_serving_warmup_requests"
    records = sum(1 for _ in tf.compat.v1.io.tf_record_iterator(str(warmup)))
    assert records >= 1
    server = _start(model_name="digits", model_base_path=str(tmp_path / "digits"),
                    file_system_poll_wait_seconds=0, monitoring_config_file=str(
                        model_root / "monitoring.config"))
    try:
        status, text = rest_call(server.rest_port, "GET", "/monitoring/prometheus/metrics")
        assert status == 200
        assert f':tensorflow:serving:runtime_latency_count{{model_name="digits"}} {records}.0' \
            in text
    finally:
        server.stop()


def test_rest_timeout_is_504(tmp_path):
    build_half_plus_two(str(tmp_path / "1"))
    server = _start(model_name="half", model_base_path=str(tmp_path),
                    file_system_poll_wait_seconds=0, rest_api_timeout_in_ms=20)
    try:
        status, body = rest_call(server.rest_port, "POST", "/v1/models/half:predict",
                                 {"signature_name": "slow", "inputs": {"n": 50000}})
        assert status == 504 and body["error"].startswith("Deadline Exceeded")
    finally:
        server.stop()


def test_config_file_polling_and_grpc_reload(tmp_path):
    import grpc
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    from tfdeploy.serving import protos

    build_half_plus_two(str(tmp_path / "a" / "1"), scale=0.5)
    build_half_plus_two(str(tmp_path / "b" / "1"), scale=1.0)
    config = tmp_path / "models.config"

    def write(*models):
        config.write_text("model_config_list {" + "".join(
            f' config {{ name: "{n}" base_path: "{tmp_path / d}" }}' for n, d in models) + " }")

    write(("first", "a"))
    server = _start(model_config_file=str(config), file_system_poll_wait_seconds=0,
                    model_config_file_poll_wait_seconds=0.1)
    try:
        assert _predict(server, 2.0, "/v1/models/first")[1] == {"predictions": [3.0]}
        write(("first", "a"), ("second", "b"))                        # add a model
        assert _wait_for(lambda: _predict(server, 2.0, "/v1/models/second")[0] == 200)
        config.write_text("model_config_list { config { name: ")      # a bad edit is ignored
        time.sleep(0.4)
        assert _predict(server, 2.0, "/v1/models/second")[1] == {"predictions": [4.0]}
        write(("second", "b"))                                         # remove one
        assert _wait_for(lambda: _predict(server, 2.0, "/v1/models/first")[0] == 404)

        # the same through ModelService.HandleReloadConfigRequest
        request = model_management_pb2.ReloadConfigRequest()
        protos.parse_text(f'model_config_list {{ config {{ name: "third" base_path: '
                          f'"{tmp_path / "a"}" }} }}', request.config)
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            response = stub.HandleReloadConfigRequest(request, timeout=60)
            assert response.status.error_code == 0
            bad = model_management_pb2.ReloadConfigRequest()
            bad.config.model_config_list.config.add(name="../x", base_path="/m")
            with pytest.raises(grpc.RpcError) as info:
                stub.HandleReloadConfigRequest(bad, timeout=60)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _predict(server, 2.0, "/v1/models/third")[1] == {"predictions": [3.0]}
        assert _predict(server, 2.0, "/v1/models/second")[0] == 404
    finally:
        server.stop()
