"""``tfdeploy serve`` (a real process, stopped with SIGTERM) and ``tfdeploy serving-config``."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from test_serving_support import build_hold_model, free_port, rest_call

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _wait(predicate, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except OSError:
        return True


# Imported by the served process before it serves: none of it may pull in training code.
_IMPORTS = ("import sys, tfdeploy.serving, tfdeploy.client, tfdeploy.commands.serve; "
            "from tfdeploy.serving import rest, grpc_service, configs, batching; "
            "from tfdeploy.cli import main; sys.exit(main(sys.argv[1:]))")


def test_serve_command_answers_and_stops_cleanly_on_sigterm(tmp_path):
    build_hold_model(str(tmp_path / "hold" / "1"))
    grpc_port, rest_port = free_port(), free_port()
    log = tmp_path / "stderr.txt"
    # -X importtime lists every module the serving process imports (on stderr)
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-c", _IMPORTS, "serve", f"--port={grpc_port}",
             f"--rest_api_port={rest_port}", "--model_name=hold",
             f"--model_base_path={tmp_path / 'hold'}", "--file_system_poll_wait_seconds=0"],
            cwd=REPO, stderr=err, text=True)
    try:
        def ready():
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                return rest_call(rest_port, "GET", "/v1/models/hold", timeout=2)[0] == 200
            except OSError:
                return False
        _wait(ready, 300, "the server to load its model")
        assert rest_call(rest_port, "POST", "/v1/models/hold:predict",
                         {"instances": [2.0]}) == (200, {"predictions": [3.0]})
        from tfdeploy.client import GrpcClient

        with GrpcClient(f"127.0.0.1:{grpc_port}") as client:
            assert client.status("hold") == [(1, "AVAILABLE", "OK", "")]
        # a request in flight when SIGTERM arrives still gets its answer
        held, in_flight = tmp_path / "held", []
        held.mkdir()

        def held_request():
            try:
                in_flight.append(rest_call(rest_port, "POST", "/v1/models/hold:predict",
                                           {"signature_name": "hold",
                                            "inputs": {"dir": str(held)}}))
            except OSError as exc:
                in_flight.append(exc)

        worker = threading.Thread(target=held_request)
        worker.start()
        _wait((held / "started").exists, 120, "the held request to start running")
        proc.send_signal(signal.SIGTERM)
        _wait(lambda: _refused(rest_port), 60, "the server to stop accepting connections")
        # stopped accepting; the held request keeps its connection and the process waits for
        # it (--shutdown_grace_seconds, 20 s by default) however long it is held
        time.sleep(2)
        assert worker.is_alive() and not in_flight and proc.poll() is None
        (held / "release").write_text("")
        worker.join(120)
        assert len(in_flight) == 1 and in_flight[0][0] == 200, in_flight
        assert in_flight[0][1]["outputs"] >= 0           # {"outputs": spins}
        assert proc.wait(timeout=60) == 0
        err = log.read_text()
        assert "ready (gRPC 127.0.0.1:" in err and "shutting down" in err
        imported = set(re.findall(r"^import time:.*\|\s*([\w.]+)$", err, re.M))
        assert "tfdeploy.serving.batching" in imported and "tensorflow" in imported
        training = sorted(m for m in imported
                          if m.split(".")[0] in ("tensorflow_model_optimization", "keras_tuner"))
        assert training == [], training
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_usage_errors(capsys):
    from tfdeploy.cli import main

    assert main(["serve", "--model_base_path=/x", "--model_config_file=/y"]) == 1
    assert "not both and not neither" in capsys.readouterr().err
    assert main(["serve", "--model_config_file=/does/not/exist.config", "--port=0"]) == 1
    assert "--port must be a positive gRPC port" in capsys.readouterr().err
    assert main(["serve", "--model_config_file=/does/not/exist.config", "--port=1"]) == 1
    assert "/does/not/exist.config" in capsys.readouterr().err


def test_serving_config_writes_valid_configs(tmp_path, capsys):
    import yaml

    from tfdeploy.cli import main
    from tfdeploy.serving import protos
    from tfdeploy.serving.repository import configs_from_proto
    from tfdeploy.serving.server import read_batching_parameters, read_monitoring_config

    out = tmp_path / "cfg"
    rc = main(["serving-config", "--model", f"digits={tmp_path / 'digits'}",
               "--model", f"half={tmp_path / 'half'}", "--label", "digits:stable=1",
               "--label", "digits:canary=2", "--version_policy", "all", "--enable_batching",
               "--max_batch_size", "16", "--allowed_batch_sizes", "4", "16",
               "--output_dir", str(out), "--replicas", "2"])
    assert rc == 0
    assert sorted(os.listdir(out)) == ["batching_parameters.txt", "docker-compose.yml",
                                       "kserve.yaml", "kubernetes.yaml", "models.config",
                                       "monitoring.config"]
    config = protos.parse_text((out / "models.config").read_text(), protos.ModelServerConfig())
    models = {c.name: c for c in configs_from_proto(config)}
    assert models["digits"].base_path == "/models/digits"
    assert models["digits"].labels == {"stable": 1, "canary": 2}
    assert models["half"].policy == "all"
    # our own server reads the batching and monitoring files the real one will read
    assert read_batching_parameters(str(out / "batching_parameters.txt"))["allowed_batch_sizes"] \
        == [4, 16]
    assert read_monitoring_config(str(out / "monitoring.config")) == \
        "/monitoring/prometheus/metrics"

    compose = yaml.safe_load((out / "docker-compose.yml").read_text())
    service = compose["services"]["tfserving"]
    assert service["image"].startswith("tensorflow/serving")
    assert f"{tmp_path / 'digits'}:/models/digits:ro" in service["volumes"]
    assert "--enable_batching=true" in service["command"]
    assert service["ports"] == ["8500:8500", "8501:8501"]

    config_map, deployment, svc = yaml.safe_load_all((out / "kubernetes.yaml").read_text())
    assert [d["kind"] for d in (config_map, deployment, svc)] == ["ConfigMap", "Deployment",
                                                                  "Service"]
    assert config_map["data"]["models.config"] == (out / "models.config").read_text()
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models/digits"
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    assert {p["port"] for p in svc["spec"]["ports"]} == {8500, 8501}
    assert deployment["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    ([], "No models given"),
    (["--model", "digits"], "NAME=BASE_PATH"),
    (["--model", "d=/m", "--label", "x:stable=1"], "unknown models ['x']"),
    (["--model", "d=/m", "--label", "d:stable"], "NAME:LABEL=VERSION"),
    (["--model", "../d=/m"], "Invalid model name"),
    (["--model", "d=/m", "--enable_batching", "--max_batch_size", "8",
      "--allowed_batch_sizes", "4"], "must match max_batch_size"),
])
def test_serving_config_errors(tmp_path, capsys, argv, message):
    from tfdeploy.cli import main

    assert main(["serving-config", "--output_dir", str(tmp_path), *argv]) == 1
    assert message in capsys.readouterr().err
