"""Server-side dynamic batching: concurrent requests share batches padded to allowed sizes."""

import threading

import numpy as np
import pytest

from test_serving_support import build_half_plus_two, rest_call


@pytest.fixture(scope="module")
def batched(tmp_path_factory):
    from tfdeploy.serving import create_server

    root = tmp_path_factory.mktemp("batched")
    build_half_plus_two(str(root / "half" / "1"))
    params = root / "batching.txt"
    params.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 1000000 }\n"
                      "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 16 }\n"
                      "allowed_batch_sizes: 4\nallowed_batch_sizes: 8\n")
    server = create_server(model_name="half", model_base_path=str(root / "half"), port=0,
                           rest_api_port=0, file_system_poll_wait_seconds=0,
                           enable_batching=True, batching_parameters_file=str(params))
    server.start()
    yield server
    server.stop()


def _histogram(server, name):
    lines = [line for line in server.metrics.render().splitlines() if line.startswith(name)]
    return {line.split("{")[0].rsplit("_", 1)[-1] if "le=" not in line
            else line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in lines}


def test_concurrent_requests_are_batched_and_padded(batched):
    xs = [float(i) for i in range(6)]
    results = [None] * len(xs)
    barrier = threading.Barrier(len(xs))

    def one(i):
        barrier.wait()
        results[i] = rest_call(batched.rest_port, "POST", "/v1/models/half:predict",
                               {"instances": [xs[i]]})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(200, {"predictions": [0.5 * x + 2]}) for x in xs]
    h = _histogram(batched, ":tensorflow:serving:batching_session:processed_batch_size")
    batches = h["count"]
    assert batches < len(xs), "six concurrent requests should share batches"
    assert h["2"] == 0                                  # every batch padded to 4 or 8
    assert h["sum"] in {4 * k + 8 * (batches - k) for k in range(int(batches) + 1)}


def test_grpc_requests_go_through_the_batcher(batched):
    from tfdeploy.client import GrpcClient

    with GrpcClient(f"127.0.0.1:{batched.grpc_port}") as client:
        out = client.predict("half", {"x": np.array([1.0, 2.0, 3.0], np.float32)})
    np.testing.assert_allclose(out["y"], [2.5, 3.0, 3.5])


def test_request_larger_than_max_batch_size_is_400(batched):
    status, body = rest_call(batched.rest_port, "POST", "/v1/models/half:predict",
                             {"instances": [1.0] * 9})
    assert status == 400
    assert body == {"error": "Task size 9 is larger than maximum input batch size 8"}


def test_full_queue_is_unavailable():
    from tfdeploy.serving.batching import Batcher
    from tfdeploy.serving.status import ServingError

    release, started = threading.Event(), threading.Event()

    def call(key, feeds):
        started.set()
        release.wait(10)
        return {"y": feeds["x"] * 2}

    batcher = Batcher(call, max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1)
    results = []
    first = threading.Thread(target=lambda: results.append(batcher.run("k", {"x": np.ones(1)})))
    first.start()
    assert started.wait(10)                             # batch 1 is running
    second = threading.Thread(target=lambda: results.append(batcher.run("k", {"x": np.ones(1)})))
    second.start()
    for _ in range(200):                                # batch 2 is queued
        with batcher._cond:
            if any(batcher._queues.values()):
                break
        threading.Event().wait(0.01)
    with pytest.raises(ServingError, match="batch scheduling queue .* is full") as info:
        batcher.run("k", {"x": np.ones(1)})
    assert info.value.http_status == 503
    release.set()
    first.join()
    second.join()
    assert [r["y"].tolist() for r in results] == [[2.0], [2.0]]
    batcher.stop()


@pytest.mark.parametrize("kwargs,message", [
    ({"max_batch_size": 8, "allowed_batch_sizes": [4, 6]}, "must match max_batch_size"),
    ({"max_batch_size": 8, "allowed_batch_sizes": [4, 2, 8]}, "increasing"),
    ({"max_batch_size": 0}, "max_batch_size must be >= 1"),
    ({"batch_timeout_micros": -1}, "batch_timeout_micros must be >= 0"),
])
def test_invalid_batching_options(kwargs, message):
    from tfdeploy.serving.batching import validate_options

    with pytest.raises(ValueError, match=message):
        validate_options(**kwargs)


def test_batching_file_parse_error_names_the_file(tmp_path):
    from tfdeploy.serving.server import read_batching_parameters

    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size: 8\n")   # must be { value: 8 }, as in TF Serving
    with pytest.raises(ValueError, match="batching.txt.*BatchingParameters"):
        read_batching_parameters(str(path))
