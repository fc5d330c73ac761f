"""``--runtime``: the server serves a model version's faster artifacts (LiteRT, ONNX Runtime,
OpenVINO) behind TF Serving's API, and with ``auto`` chooses by verifying and timing them.

Real exported files in one version directory (float and int8 TFLite, ONNX, beside the
SavedModel), served over real sockets and checked with TF Serving's own clients.
"""

import json
import os

import numpy as np
import pytest

from test_serving_support import (build_digits_classifier, choice_digits, digit_images,
                                  rest_call)

pytest_plugins = ("test_serving_support",)


@pytest.fixture(scope="module")
def base(tmp_path_factory, train_ds):
    return choice_digits(tmp_path_factory, train_ds)   # (shared with test_serving_shutdown)


def _server(base, **options):
    from tfdeploy.serving import create_server

    return create_server(model_name="digits", model_base_path=str(base / "digits"), port=0,
                         rest_api_port=0, file_system_poll_wait_seconds=0,
                         max_num_load_retries=0, **options).start()


def _rule(timings, cores):
    """The threads `selection` keeps, given an artifact's timings at 1 and ``cores`` threads:
    ``cores`` only when both the median and the fastest call are 10 % faster than 1 thread's."""
    from tfdeploy.serving.selection import THREADS_MARGIN

    many, one = timings[str(cores)], timings["1"]
    faster = all(many[k] <= one[k] * (1 - THREADS_MARGIN) for k in ("p50_ms", "fastest_ms"))
    return cores if cores > 1 and faster else 1


def _chosen(report):
    """The candidate row ``auto`` must serve, by its rule: the lowest ``fastest_ms``; or, when
    others are within `CHOICE_MARGIN` of it (a tie alone), the most calls/s under concurrent
    calls among them (each of which was timed so, and only they)."""
    from tfdeploy.serving.selection import CHOICE_MARGIN, concurrent_callers

    timed = [r for r in report["candidates"] if r.get("passed") and r.get("fastest_ms")]
    fastest = min(timed, key=lambda r: r["fastest_ms"])
    near = [r for r in timed if r["fastest_ms"] <= fastest["fastest_ms"] * (1 + CHOICE_MARGIN)]
    assert [r for r in timed if "concurrent" in r] == (near if len(near) > 1 else []), timed
    if len(near) == 1:
        assert "tie" not in report
        return fastest
    assert report["tie"]["candidates"] == [f"{r['runtime']}/{r['artifact']}" for r in near]
    assert all(r["concurrent"]["callers"] == concurrent_callers() and
               r["concurrent"]["calls_per_s"] > 0 and r["concurrent"]["cpu_ms"] > 0
               for r in near), near
    return max(near, key=lambda r: r["concurrent"]["calls_per_s"])


def _metadata_runtime(server):
    status, reply = rest_call(server.rest_port, "GET", "/v1/models/digits/metadata")
    assert status == 200, reply
    return reply["metadata"].get("runtime")


def test_auto_verifies_times_and_serves_the_fastest_passing_artifact(base):
    server = _server(base, runtime="auto", monitoring_config_file=None)
    try:
        report = _metadata_runtime(server)
        assert report["policy"] == "auto"
        rows = {(r["runtime"], r["artifact"]): r for r in report["candidates"]}
        assert ("tensorflow", "saved_model") in rows and ("litert", "tflite_float32") in rows
        timed = [r for r in rows.values() if r.get("passed") and r.get("fastest_ms")]
        fastest = _chosen(report)
        assert (report["serving"]["runtime"], report["serving"]["artifact"]) == (
            fastest["runtime"], fastest["artifact"])
        for row in rows.values():                  # nothing skipped without a reason
            if row is not fastest:
                assert row.get("passed") is True and "p50_ms" in row or row.get("reason"), row
        servable = server.repository.get("digits")
        assert (servable.runtime is None) == (fastest["runtime"] == "tensorflow")
        # TensorFlow is timed with its intra-op pool (every usable core); each file candidate
        # at 1 thread and at every usable core, keeping the faster by the rule (its row says
        # which it serves with, and both timings); CPU per call recorded beside each time
        cores = len(os.sched_getaffinity(0))
        assert rows[("tensorflow", "saved_model")]["threads"] == cores
        for row in timed:
            if row["runtime"] == "tensorflow":
                continue
            assert set(row["timings"]) == {"1", str(cores)}, row
            assert row["threads_chosen_by"] == ("measured" if cores > 1 else "one usable core")
            assert row["threads"] == _rule(row["timings"], cores), row
            assert {k: row[k] for k in ("p50_ms", "fastest_ms", "cpu_ms")} == \
                row["timings"][str(row["threads"])]
        assert all(r["cpu_ms"] > 0 for r in timed), timed
        assert report["serving"]["threads"] == fastest["threads"]
        if servable.runtime is not None:
            assert servable.runtime.describe()["threads"] == fastest["threads"]
            assert report["serving"]["timings"] == fastest["timings"]
        # answers over REST and gRPC (TF Serving's stubs) are the SavedModel's classes
        images = digit_images(6, seed=3)
        want = servable.tensorflow_call("serving_default", {"images": images})
        status, reply = rest_call(server.rest_port, "POST", "/v1/models/digits:predict",
                                  {"instances": images.tolist()})
        assert status == 200
        assert [p["class_index"] for p in reply["predictions"]] == want["class_index"].tolist()
        assert [p["class_label"] for p in reply["predictions"]] == [
            v.decode() for v in want["class_label"]]
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "digits"
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                request, timeout=60)
        assert tf.make_ndarray(answer.outputs["class_index"]).tolist() == \
            want["class_index"].tolist()
        # validation still comes first, whatever runs the model
        status, reply = rest_call(server.rest_port, "POST", "/v1/models/digits:predict",
                                  {"instances": [0]})
        assert status == 400 and "expects shape [-1,32,32,1]" in reply["error"]
    finally:
        server.stop()


@pytest.mark.parametrize("runtime,artifact", [("litert", "tflite_float32"),
                                              ("onnxruntime", "onnx"),
                                              ("openvino", "onnx")])
def test_a_named_runtime_serves_its_artifact_with_the_savedmodels_outputs(base, runtime,
                                                                          artifact):
    server = _server(base, runtime=runtime)
    try:
        report = _metadata_runtime(server)
        assert report["serving"]["runtime"] == runtime, report
        servable = server.repository.get("digits")
        images = digit_images(5, seed=4)
        want = servable.tensorflow_call("serving_default", {"images": images})
        for batch in (images[:1], images, images[:3]):     # dynamic batch sizes
            status, reply = rest_call(server.rest_port, "POST", "/v1/models/digits:predict",
                                      {"inputs": batch.tolist()})
            assert status == 200, reply
            n = len(batch)
            assert reply["outputs"]["class_index"] == want["class_index"][:n].tolist()
            np.testing.assert_allclose(reply["outputs"]["probabilities"],
                                       want["probabilities"][:n], atol=1e-4)
        # other signatures still run on TensorFlow
        status, reply = rest_call(server.rest_port, "POST", "/v1/models/digits:classify",
                                  {"signature_name": "classify", "examples": [{"x": 1.0}]})
        assert status in (200, 400) and (status == 200 or "error" in reply)
    finally:
        server.stop()


def test_runtime_threads_sets_the_threads_of_the_served_runtime(base):
    """``--runtime_threads`` overrides the default (every usable core) and is what the
    served runtime runs with, as its metadata says."""
    server = _server(base, runtime="litert", runtime_threads=1)
    try:
        report = _metadata_runtime(server)
        assert (report["serving"]["runtime"], report["serving"]["threads"]) == ("litert", 1)
        assert server.repository.get("digits").runtime.describe()["instance_threads"] == [1]
    finally:
        server.stop()


def _scaled_clock(monkeypatch, many_over_one):
    """Serve with 2 usable cores, and make selection's clock report every file runtime's call
    at 2 threads as ``many_over_one`` times its call at 1 thread (1 ms), TensorFlow at 9 ms:
    the calls run for real (and their CPU is measured), only the durations are given, so
    the threads chosen do not depend on how busy the machine is. ``many_over_one`` 0.6 is
    MobileNetV2's (LiteRT int8: 2.88 ms at 2 threads, 4.88 at 1), 1.1 the quickstart CNN's."""
    from tfdeploy.serving import selection
    from tfdeploy.serving.runtimes import base as runtime_base

    monkeypatch.setattr(runtime_base, "default_threads", lambda: 2)
    real = selection._times_ms

    def clock(fn, feeds, calls, idle=selection.IDLE_SECONDS):
        _, _, cpu = real(fn, feeds, calls, idle=0)
        runtime = getattr(getattr(fn, "func", None), "__self__", None)   # partial(rt.call)
        if runtime is None:
            return 9.0, 9.0, cpu
        ms = many_over_one if runtime.num_threads > 1 else 1.0
        return ms, ms, cpu
    monkeypatch.setattr(selection, "_times_ms", clock)


def _gauges(server, name):
    """``[(labels dict, value)]`` of the Prometheus samples of ``name`` the server exports."""
    import re

    status, text = rest_call(server.rest_port, "GET", "/monitoring/prometheus/metrics")
    assert status == 200
    return [(dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(value))
            for labels, value in re.findall(r"^%s\{(.*)\} (\S+)$" % re.escape(name), text,
                                            re.M)]


@pytest.mark.parametrize("many_over_one,threads", [(0.6, 2), (1.1, 1), (0.95, 1)])
def test_auto_keeps_every_core_only_where_it_pays(base, tmp_path, monkeypatch, many_over_one,
                                                   threads):
    """A model whose calls are 40 % faster on 2 threads (MobileNetV2-sized work) is served
    with 2; one that is slower (a sub-millisecond model waking a second thread) or only 5 %
    faster (less than the 10 % margin) with 1. The metadata, log and Prometheus say which,
    with both timings; concurrent requests still spread over one-thread interpreters."""
    _scaled_clock(monkeypatch, many_over_one)
    config = tmp_path / "monitoring.config"
    config.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" '
                      '}\n')
    server = _server(base, runtime="auto", monitoring_config_file=str(config))
    try:
        report = _metadata_runtime(server)
        files = [r for r in report["candidates"] if r["runtime"] != "tensorflow"
                 and r.get("passed")]
        assert files, report
        for row in files:
            assert row["threads"] == threads and row["threads_chosen_by"] == "measured", row
            assert {t: v["p50_ms"] for t, v in row["timings"].items()} == {
                "1": 1.0, "2": many_over_one}, row
            assert row["p50_ms"] == row["timings"][str(threads)]["p50_ms"]
        serving = report["serving"]
        assert serving["runtime"] != "tensorflow" and serving["threads"] == threads, serving
        runtime = server.repository.get("digits").runtime
        info = runtime.describe()
        # (a tie alone was timed under concurrent calls, which open one-thread runners)
        assert info["threads"] == threads and info["instance_threads"][0] == threads
        assert set(info["instance_threads"][1:]) <= {1}, info
        assert info["max_instances"] == (1 if runtime.thread_safe else 2)   # (one per core)
        label = {"model_name": "digits", "version": "1", "runtime": serving["runtime"],
                 "artifact": serving["artifact"]}
        assert _gauges(server, ":tfdeploy:serving:runtime_selected") == [
            ({**label, "threads": str(threads)}, 1.0)]
        timed = {g[0]["threads"]: g[1] for g in _gauges(
            server, ":tfdeploy:serving:runtime_candidate_p50_microseconds")
            if label.items() <= g[0].items()}
        assert timed == {"1": 1000.0, "2": many_over_one * 1000}, timed
    finally:
        server.stop()


@pytest.mark.parametrize("winner", [("onnxruntime", "onnx"), ("litert", "tflite_int8")])
def test_a_tie_alone_is_broken_by_calls_per_second_under_concurrent_calls(
        base, tmp_path, monkeypatch, caplog, winner):
    """File candidates whose fastest call alone is within `CHOICE_MARGIN` of each other are
    timed under concurrent calls, for real (every caller runs the runtime), and the one with
    the most calls/s serves: the metadata, the log, each other row's reason and Prometheus
    say so. The clock alone is given (every file 1 ms alone, TensorFlow 9), and the calls/s
    are scaled so that ``winner`` has three times the others'."""
    import logging

    from tfdeploy.serving import selection

    _scaled_clock(monkeypatch, 1.0)
    real, seen = selection._throughput, []

    def throughput(fn, feeds, callers, seconds):
        rate, cpu = real(fn, feeds, callers, seconds)
        runtime = fn.func.__self__
        seen.append((runtime.name, runtime.artifact["name"], callers))
        return (300.0 if (runtime.name, runtime.artifact["name"]) == winner else 100.0), cpu
    monkeypatch.setattr(selection, "_throughput", throughput)
    config = tmp_path / "monitoring.config"
    config.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" '
                      '}\n')
    with caplog.at_level(logging.INFO, logger="tfdeploy.serving"):
        server = _server(base, runtime="auto", monitoring_config_file=str(config))
    try:
        report = _metadata_runtime(server)
        files = [(r["runtime"], r["artifact"]) for r in report["candidates"]
                 if r.get("passed") and r["runtime"] != "tensorflow"]
        assert len(files) >= 3 and winner in files, report
        assert {(n, a) for n, a, _ in seen} == set(files)          # every tied file, no other
        callers = selection.concurrent_callers()
        assert callers == 2 * len(os.sched_getaffinity(0)) or callers == 2
        assert {c for _, _, c in seen} == {callers}
        assert (report["serving"]["runtime"], report["serving"]["artifact"]) == winner
        assert report["serving"]["concurrent"] == {"callers": callers, "calls_per_s": 300.0,
                                                   "cpu_ms": report["serving"]["concurrent"][
                                                       "cpu_ms"]}
        assert report["tie"] == {"margin": selection.CHOICE_MARGIN, "callers": callers,
                                 "candidates": [f"{n}/{a}" for n, a in files]}
        assert server.repository.get("digits").runtime.describe()["artifact"] == winner[1]
        for row in report["candidates"]:
            if row.get("passed") and row["runtime"] != "tensorflow" and \
                    (row["runtime"], row["artifact"]) != winner:
                assert (f"100.0 calls/s under {callers} concurrent calls against 300.0"
                        in row["reason"]), row
        assert any(f"within {round(selection.CHOICE_MARGIN * 100)}% alone" in r.getMessage() and
                   f"serving {winner[0]}/{winner[1]}" in r.getMessage() for r in caplog.records)
        gauges = {(g[0]["runtime"], g[0]["artifact"]): g[1] for g in _gauges(
            server, ":tfdeploy:serving:runtime_candidate_concurrent_calls_per_second")}
        assert gauges == {f: (300.0 if f == winner else 100.0) for f in files}
    finally:
        server.stop()


def test_no_tie_alone_means_no_concurrent_timing(base, monkeypatch):
    """A file candidate clearly fastest alone serves without the concurrent timing."""
    from tfdeploy.serving import selection

    _scaled_clock(monkeypatch, 1.0)
    clock = selection._times_ms

    def faster_int8(fn, feeds, calls, idle=selection.IDLE_SECONDS):
        median, fastest, cpu = clock(fn, feeds, calls, idle)
        runtime = getattr(getattr(fn, "func", None), "__self__", None)
        if runtime is not None and runtime.artifact["name"] == "tflite_int8":
            return median / 2, fastest / 2, cpu
        return median, fastest, cpu
    monkeypatch.setattr(selection, "_times_ms", faster_int8)
    monkeypatch.setattr(selection, "_throughput", lambda *a: pytest.fail("timed a non-tie"))
    server = _server(base, runtime="auto")
    try:
        report = _metadata_runtime(server)
        assert (report["serving"]["runtime"], report["serving"]["artifact"]) == (
            "litert", "tflite_int8")
        assert "tie" not in report and "concurrent" not in report["serving"]
        assert not any("concurrent" in r for r in report["candidates"])
    finally:
        server.stop()


@pytest.mark.parametrize("given", [1, 2])
def test_a_thread_count_the_user_gives_is_never_overridden(base, monkeypatch, caplog, given):
    """``--runtime_threads`` wins over the measurement, in ``auto`` and for a named runtime:
    no other thread count is timed, and the row says the count was given."""
    import logging

    _scaled_clock(monkeypatch, 0.6 if given == 1 else 1.1)   # the measurement would differ
    for policy in ("auto", "litert"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="tfdeploy.serving"):
            server = _server(base, runtime=policy, runtime_threads=given)
        try:
            report = _metadata_runtime(server)
            serving = report["serving"]
            assert serving["runtime"] != "tensorflow", report
            assert (serving["threads"], serving["threads_chosen_by"]) == (
                given, "--runtime_threads"), serving
            # auto times it at the given count only; a named runtime is not timed at all
            assert (serving["timings"] and set(serving["timings"])) == (
                {str(given)} if policy == "auto" else None), serving
            assert server.repository.get("digits").runtime.describe()["threads"] == given
            assert not any("at 1 thread" in r.getMessage() for r in caplog.records)
        finally:
            server.stop()


@pytest.mark.parametrize("many_over_one,threads", [(0.6, 2), (1.1, 1)])
def test_a_named_runtime_measures_its_threads_too(base, monkeypatch, caplog, many_over_one,
                                                   threads):
    """``--runtime litert`` without ``--runtime_threads`` times its file at 1 and 2 threads
    (on the warmup records) and keeps the faster by the same rule; the log says both."""
    import logging

    _scaled_clock(monkeypatch, many_over_one)
    with caplog.at_level(logging.INFO, logger="tfdeploy.serving"):
        server = _server(base, runtime="litert")
    try:
        serving = _metadata_runtime(server)["serving"]
        assert (serving["runtime"], serving["threads"], serving["threads_chosen_by"]) == (
            "litert", threads, "measured"), serving
        assert {t: v["fastest_ms"] for t, v in serving["timings"].items()} == {
            "1": 1.0, "2": many_over_one}
        assert server.repository.get("digits").runtime.describe()["threads"] == threads
        said = [r.getMessage() for r in caplog.records if "at 1 thread" in r.getMessage()]
        assert len(said) == 1 and said[0].endswith(
            f"serving with {threads} thread{'s' if threads > 1 else ''}"), said
        images = digit_images(2, seed=8)
        want = server.repository.get("digits").tensorflow_call("serving_default",
                                                               {"images": images})
        status, reply = rest_call(server.rest_port, "POST", "/v1/models/digits:predict",
                                  {"instances": images.tolist()})
        assert status == 200 and [p["class_index"] for p in reply["predictions"]] == \
            want["class_index"].tolist()
    finally:
        server.stop()


def test_a_named_runtime_on_a_version_without_warmup_records_times_on_zeros(base, tmp_path):
    """No ``tf_serving_warmup_requests``: the thread choice times the file on zeros of the
    signature's shape and dtype (``FileRuntime.zeros``), and the version serves."""
    import glob
    import shutil

    shutil.copytree(base / "digits", tmp_path / "digits")
    (warmup,) = glob.glob(str(tmp_path / "digits" / "*" / "assets.extra" /
                                "tf_serving_warmup_requests"))
    os.remove(warmup)
    server = _server(tmp_path, runtime="litert")
    try:
        serving = _metadata_runtime(server)["serving"]
        assert serving["runtime"] == "litert" and serving["threads_chosen_by"] == "measured"
        assert set(serving["timings"]) == {"1", "2"}, serving
        runtime = server.repository.get("digits").runtime
        zeros = runtime.zeros(batch=3)
        assert {k: (v.shape, v.dtype.name, float(np.abs(v).sum())) for k, v in zeros.items()} \
            == {"images": ((3, 32, 32, 1), "float32", 0.0)}
        images = digit_images(2, seed=9)
        status, reply = rest_call(server.rest_port, "POST", "/v1/models/digits:predict",
                                  {"instances": images.tolist()})
        assert status == 200 and len(reply["predictions"]) == 2
    finally:
        server.stop()


def test_an_artifact_that_fails_verification_is_never_chosen(tmp_path, train_ds, caplog):
    """The version's float TFLite file comes from another (untrained) model: it loads and is
    fast, but it does not answer as the SavedModel does, so auto skips it and says why."""
    import tfdeploy as td

    other = td.keras.Sequential([td.keras.Input((32, 32, 1)), td.keras.layers.Flatten(),
                                 td.keras.layers.Dense(10, activation="softmax")])
    build_digits_classifier(str(tmp_path / "digits"), train_data=train_ds, epochs=1,
                            artifacts={"tflite_float32": other})
    server = _server(tmp_path, runtime="auto")
    try:
        report = _metadata_runtime(server)
        row = next(r for r in report["candidates"] if r["artifact"] == "tflite_float32")
        assert row["passed"] is False and ("atol" in row["reason"]
                                           or "agrees" in row["reason"]), row
        assert report["serving"]["runtime"] == "tensorflow"
        assert any("skips litert/tflite_float32" in r.getMessage() for r in caplog.records)
    finally:
        server.stop()


def test_a_runtime_that_cannot_load_leaves_the_version_on_tensorflow(tmp_path, train_ds):
    build_digits_classifier(str(tmp_path / "digits"), train_data=train_ds, epochs=1,
                            artifacts=["tflite_float32"])
    manifest = json.loads((tmp_path / "digits" / "1" / "assets.extra" / "artifacts.json")
                          .read_text())
    entry = next(a for a in manifest["artifacts"] if a["name"] == "tflite_float32")
    (tmp_path / "digits" / "1" / entry["file"]).write_bytes(b"not a flatbuffer")
    server = _server(tmp_path, runtime="litert")
    try:
        status, reply = rest_call(server.rest_port, "GET", "/v1/models/digits")
        assert reply["model_version_status"][0]["state"] == "AVAILABLE"
        report = _metadata_runtime(server)
        assert report["serving"]["runtime"] == "tensorflow"
        assert "cannot load" in report["candidates"][0]["reason"]
        status, reply = rest_call(server.rest_port, "POST", "/v1/models/digits:predict",
                                  {"instances": digit_images(1).tolist()})
        assert status == 200
    finally:
        server.stop()


def test_batching_works_on_the_litert_runtime(base):
    import concurrent.futures

    server = _server(base, runtime="litert", batching_options={
        "max_batch_size": 8, "batch_timeout_micros": 20000, "num_batch_threads": 1})
    try:
        servable = server.repository.get("digits")
        images = digit_images(16, seed=5)
        want = servable.tensorflow_call("serving_default", {"images": images})["class_index"]

        def one(i):
            return rest_call(server.rest_port, "POST", "/v1/models/digits:predict",
                             {"instances": images[i:i + 1].tolist()})

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(one, range(16)))
        assert [r[1]["predictions"][0]["class_index"] for r in replies] == want.tolist()
        assert servable.runtime.name == "litert"
    finally:
        server.stop()


def test_model_platform_in_the_config_file_picks_the_runtime(base, tmp_path):
    from tfdeploy.serving.repository import read_model_config_file

    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "digits" base_path: "%s" '
                      'model_platform: "onnxruntime" } }\n' % (base / "digits"))
    assert read_model_config_file(str(config))[0].runtime == "onnxruntime"
    config.write_text('model_config_list { config { name: "digits" base_path: "%s" '
                      'model_platform: "pytorch" } }\n' % (base / "digits"))
    with pytest.raises(ValueError, match="model_platform 'pytorch' is not supported"):
        read_model_config_file(str(config))


@pytest.mark.parametrize("runtime", ["litert", "onnxruntime", "openvino", "auto"])
def test_the_fuzz_reaches_no_runtime_with_a_bad_tensor(base, runtime):
    """Every runtime behind the same validation: a ``tfdeploy serve --runtime R`` process with
    oneDNN forced on gets the rank/dimension/dtype matrix and a slice of the hostile fuzz over
    REST and gRPC; every answer is a 4xx (never 5xx), the process stays up, and valid
    requests keep the SavedModel's classes."""
    import random

    from test_serving_hostile import _mutations, _send
    from test_serving_support import ServerProcess
    from test_serving_validation import RANKS, _grpc_predict

    import http.client

    with ServerProcess(["--model_name", "digits", "--model_base_path", str(base / "digits"),
                        "--file_system_poll_wait_seconds", "0", "--runtime", runtime]) as proc:
        report = rest_call(proc.rest_port, "GET", "/v1/models/digits/metadata")[1][
            "metadata"]["runtime"]
        assert report["serving"]["runtime"] == (runtime if runtime != "auto"
                                                else report["serving"]["runtime"])
        assert report["serving"]["runtime"] != "tensorflow", report
        for body, words in RANKS:
            status, reply = rest_call(proc.rest_port, "POST", "/v1/models/digits:predict", body)
            assert status == 400 and words[0] in reply["error"], (body, reply)
        for value in (np.zeros([1], np.float32), np.zeros([1, 32, 32, 3], np.float32),
                      np.zeros([0, 32, 32, 1], np.float32), np.zeros([1, 32, 32, 1], np.int64)):
            code, details = _grpc_predict(proc.grpc_port, "digits", "", images=value)
            assert code == "INVALID_ARGUMENT", (value.shape, code, details)
        rng, gen = random.Random(7), None
        gen = _mutations(rng)
        conn = http.client.HTTPConnection("127.0.0.1", proc.rest_port, timeout=60)
        for _ in range(300):
            method, path, raw = next(gen)
            path = path.replace("/half", "/digits").replace("/tf2", "/digits")
            try:
                status, _, _ = _send(conn, method, path, raw)
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", proc.rest_port, timeout=60)
                status, _, _ = _send(conn, method, path, raw)
            assert status < 500, (method, path, raw[:200] if raw else raw)
            assert proc.alive(), proc.output()[-2000:]
        conn.close()
        images = digit_images(3, seed=11)
        status, reply = rest_call(proc.rest_port, "POST", "/v1/models/digits:predict",
                                  {"instances": images.tolist()})
        assert status == 200 and len(reply["predictions"]) == 3
