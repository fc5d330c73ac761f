"""Compression under tf.distribute: MirroredStrategy on two logical CPUs, two-process
MultiWorkerMirroredStrategy on 127.0.0.1, typed errors before training."""

import json
import os
import socket
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "distributed_train.py")
TARGET = 0.75


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("mirrored") / "result.json")
    proc = subprocess.run([sys.executable, SCRIPT, "mirrored", out], env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out) as f:
        return json.load(f)


def test_mirrored_strategy_prunes_to_target_with_replicas_in_step(mirrored):
    m, single = mirrored["mirrored"], mirrored["single"]
    assert m["replicas"] == 2
    assert m["replicas_agree"]  # masks, thresholds and pruning steps equal on both replicas
    assert len(m["pruning_steps"]) == 1 and m["pruning_steps"] == single["pruning_steps"]
    for layer, value in m["sparsity_by_layer"].items():
        assert value == pytest.approx(TARGET, abs=0.01), layer
    assert m["sparsity_by_layer"] == single["sparsity_by_layer"]


def test_mirrored_strategy_trains_qat(mirrored):
    q = mirrored["qat"]
    assert q["loss"] == q["loss"] and q["loss"] < 10  # finite
    assert q["ranges_moved"] > 0 and q["replicas_agree"]


def test_unsupported_setups_are_refused_before_training(mirrored):
    errors = mirrored["errors"]
    assert errors["jit"] and "jit_compile=True under MirroredStrategy" in errors["jit"]
    assert errors["outside"] and "called outside its scope" in errors["outside"]


def test_multi_worker_mirrored_strategy_two_processes_prune(tmp_path, mirrored):
    ports = ",".join(str(p) for p in free_ports(2))
    outs = [str(tmp_path / f"worker{i}.json") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, SCRIPT, "worker", str(i), ports, outs[i]],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    try:
        for p in procs:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    results = []
    for path in outs:
        with open(path) as f:
            results.append(json.load(f)["worker"])
    w0, w1 = results
    assert w0["replicas"] == w1["replicas"] == 2
    assert w0["zeros_md5"] == w1["zeros_md5"]  # same masks on both workers
    assert w0["pruning_steps"] == w1["pruning_steps"]
    # The stripped result equals one process's in sparsity, layer by layer.
    assert w0["sparsity_by_layer"] == mirrored["single"]["sparsity_by_layer"]


def test_wrapping_a_distributed_model_outside_its_scope_is_refused():
    import tfdeploy as td

    strategy = td.tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        base = td.models.build_cnn((16, 16, 1), 10, width=0.125)
    for wrap in (lambda m: td.compress.prune(m, 0.5, "constant", steps_per_epoch=1),
                 lambda m: td.compress.cluster(m, 8), td.compress.quantize,
                 lambda m: td.compress.slim(m, 0.5)):
        with pytest.raises(td.errors.DistributionError, match="outside its scope"):
            wrap(base)
    with strategy.scope():
        wrapped = td.compress.prune(base, 0.5, "constant", steps_per_epoch=1)
    assert td.compress.distribute.replicas_agree(wrapped)
