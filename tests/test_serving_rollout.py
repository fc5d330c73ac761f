"""Rollouts and faults over real sockets: zero failures while versions change under load,
load retries, listings that fail, deadlines, reload safety, MultiInference, flags."""

import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest

from test_serving_support import (build_half_plus_two, build_hold_model, free_port,
                                  rest_call)


def _wait_for(predicate, timeout=120.0, every=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return False


def _start(**kwargs):
    from tfdeploy.serving import create_server

    kwargs.setdefault("max_num_load_retries", 0)
    return create_server(port=0, rest_api_port=0, **kwargs).start()


def _versions(server, name="half"):
    status, body = rest_call(server.rest_port, "GET", f"/v1/models/{name}")
    if status != 200:
        return {}
    return {int(s["version"]): s["state"] for s in body["model_version_status"]}


@pytest.fixture(scope="module")
def half_versions(tmp_path_factory):
    """Three finished versions of half_plus_two (scale 0.5, 1.0, 2.0) to copy in."""
    root = tmp_path_factory.mktemp("half_versions")
    for v, scale in ((1, 0.5), (2, 1.0), (3, 2.0)):
        build_half_plus_two(str(root / str(v)), scale=scale)
    return root


def test_rollout_under_16_clients_with_batching_has_zero_failures(half_versions, tmp_path):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    base = tmp_path / "half"
    shutil.copytree(half_versions / "1", base / "1")
    server = _start(model_name="half", model_base_path=str(base),
                    file_system_poll_wait_seconds=0.1,
                    batching_options={"max_batch_size": 8, "batch_timeout_micros": 20000,
                                      "num_batch_threads": 2, "max_enqueued_batches": 64})
    answers, failures, stop = [], [], threading.Event()
    lock = threading.Lock()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([2.0], np.float32)))

    def rest_client():
        while not stop.is_set():
            try:
                status, body = rest_call(server.rest_port, "POST", "/v1/models/half:predict",
                                         {"instances": [2.0]})
                result = (status, body)
            except OSError as exc:
                result = (0, repr(exc))
            with lock:
                (answers if result[0] == 200 else failures).append(result)

    def grpc_client():
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not stop.is_set():
                try:
                    y = tf.make_ndarray(stub.Predict(request, timeout=60).outputs["y"])
                    result = (200, {"predictions": y.tolist()})
                except grpc.RpcError as exc:
                    result = (exc.code(), exc.details())
                with lock:
                    (answers if result[0] == 200 else failures).append(result)

    threads = [threading.Thread(target=rest_client) for _ in range(8)] + \
        [threading.Thread(target=grpc_client) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        assert _wait_for(lambda: len(answers) >= 32)
        for version in (2, 3):      # two rollouts, each unloading the previous version
            shutil.copytree(half_versions / str(version), base / f"temp-{version}")
            os.rename(base / f"temp-{version}", base / str(version))
            assert _wait_for(lambda: _versions(server).get(version - 1) == "END")
            n = len(answers)
            assert _wait_for(lambda: len(answers) >= n + 32)
    finally:
        stop.set()
        for t in threads:
            t.join()
        server.stop()
    assert not failures, f"{len(failures)} failed requests, e.g. {failures[:3]}"
    seen = {tuple(body["predictions"]) for _, body in answers}
    assert seen == {(3.0,), (4.0,), (6.0,)}, seen   # every version answered, nothing else


def test_version_copied_non_atomically_loads_on_retry_without_leaking_paths(
        half_versions, tmp_path):
    base = tmp_path / "half"
    shutil.copytree(half_versions / "1", base / "1")
    server = _start(model_name="half", model_base_path=str(base),
                    file_system_poll_wait_seconds=0.1, max_num_load_retries=100,
                    load_retry_interval_micros=200_000)
    try:
        os.makedirs(base / "2" / "variables")          # a copy in progress: no saved_model.pb
        assert _wait_for(lambda: _versions(server).get(2) == "LOADING")
        # not ready is a 4xx over the Open Inference Protocol (its spec; Triton answers 400),
        # never a 5xx; Triton's own client reads it as not ready
        status, body = rest_call(server.rest_port, "GET", "/v2/models/half/versions/2/ready")
        assert status == 400 and "not ready yet" in body["error"], (status, body)
        assert rest_call(server.rest_port, "GET", "/v2/models/half/versions/1/ready")[0] == 200
        import tritonclient.http as triton_http
        client = triton_http.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
        assert client.is_model_ready("half", "1") and not client.is_model_ready("half", "2")
        # status and predictions answer while version 2 keeps failing and retrying
        assert rest_call(server.rest_port, "POST", "/v1/models/half:predict",
                         {"instances": [2.0]}) == (200, {"predictions": [3.0]})
        time.sleep(0.5)
        for name in os.listdir(half_versions / "2" / "variables"):
            shutil.copy(half_versions / "2" / "variables" / name, base / "2" / "variables")
        shutil.copy(half_versions / "2" / "saved_model.pb", base / "2")
        assert _wait_for(lambda: _versions(server).get(2) == "AVAILABLE")
        assert rest_call(server.rest_port, "POST", "/v1/models/half:predict",
                         {"instances": [2.0]}) == (200, {"predictions": [4.0]})
    finally:
        server.stop()
    # a version that never loads ends in END with an error that names no absolute path
    server = _start(model_name="half", model_base_path=str(base),
                    file_system_poll_wait_seconds=0, max_num_load_retries=1,
                    load_retry_interval_micros=1000)
    try:
        os.makedirs(base / "7")
        server.repository.poll_once()
        (status,) = rest_call(server.rest_port, "GET", "/v1/models/half/versions/7")[1][
            "model_version_status"]
        assert status["state"] == "END" and status["status"]["error_code"] != "OK"
        assert str(tmp_path) not in status["status"]["error_message"]
        assert "<base_path of half>" in status["status"]["error_message"]
    finally:
        server.stop()


def test_missing_or_empty_base_path_never_unloads(half_versions, tmp_path):
    base = tmp_path / "half"
    shutil.copytree(half_versions / "1", base / "1")
    server = _start(model_name="half", model_base_path=str(base),
                    file_system_poll_wait_seconds=0.05)
    try:
        os.rename(base, tmp_path / "moved")             # base path gone (unmounted volume)
        time.sleep(0.5)
        os.makedirs(base)                                # back, but empty (listing glitch)
        time.sleep(0.5)
        assert _versions(server) == {1: "AVAILABLE"}
        assert rest_call(server.rest_port, "POST", "/v1/models/half:predict",
                         {"instances": [2.0]}) == (200, {"predictions": [3.0]})
    finally:
        server.stop()


def _build_slow(path):
    """y = x, after a loop of x[0] iterations: the first value sets how long a batch runs."""
    import tensorflow as tf

    class Slow(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            n = tf.cast(x[0], tf.int32)
            s = tf.while_loop(lambda i, s: i < n, lambda i, s: (i + 1, s + 1.0),
                              [tf.constant(0), tf.constant(0.0)])[1]
            return {"y": x + 0.0 * s}

    m = Slow()
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve})


def test_deadlines_cancel_queued_batches_and_the_server_recovers(tmp_path):
    """REST timeouts and gRPC deadlines (official tensorflow-serving-api stubs) take queued
    work out of the batch queue: after a burst of timeouts a valid request waits at most for
    the one batch already running, not for the whole burst."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    _build_slow(str(tmp_path / "slow" / "1"))
    server = _start(model_name="slow", model_base_path=str(tmp_path / "slow"),
                    file_system_poll_wait_seconds=0, rest_api_timeout_in_ms=300,
                    batching_options={"max_batch_size": 1, "batch_timeout_micros": 0,
                                      "num_batch_threads": 1, "max_enqueued_batches": 100})
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def request(x):
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "slow"
        req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([x], np.float32)))
        return req

    def burst(call, n=12):
        results = []
        threads = [threading.Thread(target=lambda: results.append(call())) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    def grpc_slow():
        try:
            return stub.Predict(request(1e5), timeout=0.3)
        except grpc.RpcError as exc:
            return exc.code()

    batcher = server.repository.get("slow").batcher
    try:
        start = time.monotonic()                  # one slow batch, run alone: its duration
        stub.Predict(request(1e5), timeout=120)
        one_batch = time.monotonic() - start
        for name, call, expected in (
                ("REST", lambda: rest_call(server.rest_port, "POST", "/v1/models/slow:predict",
                                           {"instances": [1e5]})[0], 504),
                ("gRPC", grpc_slow, grpc.StatusCode.DEADLINE_EXCEEDED)):
            assert burst(call) == [expected] * 12, name
            start = time.monotonic()
            # the queued work is gone (each caller takes its task out as its deadline passes)
            assert _wait_for(lambda: batcher._enqueued == 0 and not batcher._queues,
                             one_batch + 1.0), name
            # and a valid request is answered once the one running batch ends
            if name == "REST":   # (tried until then: a try still meets the 300 ms deadline)
                assert _wait_for(lambda: rest_call(
                    server.rest_port, "POST", "/v1/models/slow:predict",
                    {"instances": [1.0]}) == (200, {"predictions": [1.0]}), 60)
            else:
                out = stub.Predict(request(1.0), timeout=120).outputs["y"]
                assert tf.make_ndarray(out).tolist() == [1.0]
            waited = time.monotonic() - start
            # 11 queued slow batches would take 11 x one_batch
            assert waited < 2 * one_batch + 1.0, (name, waited, one_batch)
        text = server.metrics.render()
        batches = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(
            ":tensorflow:serving:batching_session:processed_batch_size_count")]
        assert batches and batches[0] < 12      # of 27 requests; the 24 timeouts mostly never ran
    finally:
        channel.close()
        server.stop()


def test_reload_keeps_old_version_when_new_base_path_fails_and_honours_allowed_roots(
        half_versions, tmp_path):
    import grpc
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    allowed = tmp_path / "allowed"
    shutil.copytree(half_versions / "1", allowed / "half" / "1")
    shutil.copytree(half_versions / "2", tmp_path / "outside" / "2")
    server = _start(configs=None, model_name="half", model_base_path=str(allowed / "half"),
                    file_system_poll_wait_seconds=0, model_config_allowed_roots=[str(allowed)])

    def reload(base_path):
        request = model_management_pb2.ReloadConfigRequest()
        request.config.model_config_list.config.add(name="half", base_path=str(base_path))
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            return model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
                request, timeout=120)
    try:
        for outside in (tmp_path / "outside", allowed / ".." / "outside"):
            with pytest.raises(grpc.RpcError) as info:
                reload(outside)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert str(tmp_path) not in info.value.details()
        os.symlink(tmp_path / "outside", allowed / "link")
        with pytest.raises(grpc.RpcError) as info:
            reload(allowed / "link")                         # a symlink cannot escape either
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as info:
            reload(allowed / "missing")                     # allowed, but nothing loads there
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert rest_call(server.rest_port, "POST", "/v1/models/half:predict",
                         {"instances": [2.0]}) == (200, {"predictions": [3.0]})
        shutil.copytree(half_versions / "2", allowed / "new" / "2")
        assert reload(allowed / "new").status.error_code == 0
        assert rest_call(server.rest_port, "POST", "/v1/models/half:predict",
                         {"instances": [2.0]}) == (200, {"predictions": [4.0]})
    finally:
        server.stop()


def test_multi_inference_and_signature_method_name_check(half_versions, tmp_path):
    import grpc
    from tensorflow_serving.apis import inference_pb2, prediction_service_pb2_grpc

    # a TF2 tf.function signature (method_name "predict") with classify-style inputs/outputs
    import tensorflow as tf

    class Scores(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def serve(self, inputs):
            x = tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
            return {"scores": tf.concat([x, 2 * x], axis=1), "outputs": x + 1.0}

    m = Scores()
    tf.saved_model.save(m, str(tmp_path / "tf2cls" / "1"), signatures={"serving_default": m.serve})
    shutil.copytree(half_versions / "1", tmp_path / "half" / "1")
    from tfdeploy.serving import ModelConfig

    configs = [ModelConfig("half", str(tmp_path / "half")),
               ModelConfig("tf2cls", str(tmp_path / "tf2cls"))]
    body = {"examples": [{"x": 2.0}]}
    server = _start(configs=configs, file_system_poll_wait_seconds=0)
    try:
        assert rest_call(server.rest_port, "POST", "/v1/models/tf2cls:classify", body) == (
            200, {"results": [[["", 2.0], ["", 4.0]]]})
        assert rest_call(server.rest_port, "POST", "/v1/models/tf2cls:regress", body) == (
            200, {"results": [3.0]})
        request = inference_pb2.MultiInferenceRequest()
        for sig, method in (("tensorflow/serving/classify", "tensorflow/serving/classify"),
                            ("tensorflow/serving/regress", "tensorflow/serving/regress")):
            task = request.tasks.add(method_name=method)
            task.model_spec.name, task.model_spec.signature_name = "half", sig
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(
            2.0)
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.MultiInference(request, timeout=60)
            bad = inference_pb2.MultiInferenceRequest()
            bad.CopyFrom(request)
            bad.tasks[1].model_spec.name = "tf2cls"
            with pytest.raises(grpc.RpcError) as info:
                stub.MultiInference(bad, timeout=60)
        classes = response.results[0].classification_result.classifications[0].classes
        assert [(c.label, c.score) for c in classes] == [("y", 3.0)]
        assert response.results[1].regression_result.regressions[0].value == 3.0
        assert [r.model_spec.version.value for r in response.results] == [1, 1]
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "same model name" in info.value.details()
    finally:
        server.stop()
    server = _start(configs=configs, file_system_poll_wait_seconds=0,
                    enable_signature_method_name_check=True)
    try:
        status, reply = rest_call(server.rest_port, "POST", "/v1/models/tf2cls:classify", body)
        assert status == 400 and reply["error"] == (
            "Expected classification signature method_name to be tensorflow/serving/classify. "
            "Was: tensorflow/serving/predict")
    finally:
        server.stop()


def test_port_in_use_and_bad_numbers_fail_in_one_line_before_loading(half_versions, tmp_path,
                                                                     capsys, caplog):
    from tfdeploy.serving import create_server

    shutil.copytree(half_versions / "1", tmp_path / "half" / "1")
    base = str(tmp_path / "half")
    for bad in ({"max_body_bytes": -1}, {"rest_api_timeout_in_ms": -5},
                {"max_num_load_retries": -1}, {"max_connections": 0},
                {"file_system_poll_wait_seconds": float("nan")}, {"rest_api_port": 70000}):
        with pytest.raises(ValueError, match="must be"):
            create_server(model_name="half", model_base_path=base, port=0, **bad)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = create_server(model_name="half", model_base_path=base, port=port,
                               rest_api_port=0)
        with pytest.raises(OSError, match=f"Could not bind the gRPC port 127.0.0.1:{port}"):
            server.start()
        assert not server.repository._models["half"].status       # nothing was loaded
        # the CLI (in-process): one line naming the port, before any model loads
        import logging

        from tfdeploy.cli import main

        with caplog.at_level(logging.INFO):
            code = main(["serve", "--model_name=half", f"--model_base_path={base}",
                         f"--rest_api_port={port}", f"--port={free_port()}",
                         "--max_body_bytes=1000"])
        err = capsys.readouterr().err
        ours = [line for line in err.splitlines() if line.startswith("tfdeploy")]
        assert code != 0
        assert len(ours) == 1 and "error" in ours[0] and f"REST port 127.0.0.1:{port}" in ours[0]
        assert str(tmp_path) not in ours[0] and "Traceback" not in err
        assert "Loading servable" not in caplog.text, caplog.text


def test_status_and_requests_do_not_wait_behind_a_slow_load(half_versions, tmp_path):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from tfdeploy.serving import ModelConfig
    from tfdeploy.serving.warmup import write_warmup_requests

    shutil.copytree(half_versions / "1", tmp_path / "fast" / "1")
    build_hold_model(str(tmp_path / "slow" / "1"))
    held = tmp_path / "held"
    held.mkdir()
    warm = predict_pb2.PredictRequest()
    warm.model_spec.signature_name = "hold"
    warm.inputs["dir"].CopyFrom(tf.make_tensor_proto(str(held)))
    # loading "slow" runs this warmup, which holds until the test creates held/release
    write_warmup_requests(str(tmp_path / "slow" / "1"), [warm])
    server = _start(configs=[ModelConfig("fast", str(tmp_path / "fast"))],
                    file_system_poll_wait_seconds=0)
    configs = [ModelConfig("fast", str(tmp_path / "fast")),
               ModelConfig("slow", str(tmp_path / "slow"))]
    reload = threading.Thread(target=server.repository.reload, args=(configs,))
    try:
        reload.start()
        assert _wait_for((held / "started").exists, 120)     # the load is in its warmup
        for _ in range(3):
            start = time.monotonic()
            assert rest_call(server.rest_port, "GET", "/v1/models/fast", timeout=10)[0] == 200
            assert rest_call(server.rest_port, "POST", "/v1/models/fast:predict",
                             {"instances": [2.0]}, timeout=10) == (200, {"predictions": [3.0]})
            assert time.monotonic() - start < 10
            assert reload.is_alive()                           # still loading meanwhile
        status = rest_call(server.rest_port, "GET", "/v1/models/slow", timeout=10)
        assert status[0] == 404 or status[1]["model_version_status"][0]["state"] != "AVAILABLE"
        (held / "release").write_text("")
        reload.join(120)
        assert _versions(server, "slow") == {1: "AVAILABLE"}
    finally:
        (held / "release").write_text("")
        reload.join()
        server.stop()
