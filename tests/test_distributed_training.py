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
def runs(tmp_path_factory):
    """The MirroredStrategy process and the two MultiWorkerMirroredStrategy workers, started
    side by side (they share nothing): ``{"mirrored": ..., "workers": [w0, w1]}``."""
    tmp = tmp_path_factory.mktemp("distributed")
    ports = ",".join(str(p) for p in free_ports(2))
    outs = {"mirrored": str(tmp / "mirrored.json"),
            **{f"worker{i}": str(tmp / f"worker{i}.json") for i in range(2)}}
    argv = {"mirrored": ["mirrored", outs["mirrored"]],
            **{f"worker{i}": ["worker", str(i), ports, outs[f"worker{i}"]] for i in range(2)}}
    # stderr to files: a worker blocked on a full pipe would stall its peer's collectives
    logs = {name: open(tmp / f"{name}.log", "w+") for name in argv}
    procs = {name: subprocess.Popen([sys.executable, SCRIPT] + args, env=_env(),
                                    stdout=subprocess.DEVNULL, stderr=logs[name])
             for name, args in argv.items()}
    try:
        for name, p in procs.items():
            p.wait(timeout=600)
            logs[name].seek(0)
            assert p.returncode == 0, f"{name}:\n{logs[name].read()[-3000:]}"
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        for f in logs.values():
            f.close()
    results = {}
    for name, path in outs.items():
        with open(path) as f:
            results[name] = json.load(f)
    return {"mirrored": results["mirrored"],
            "workers": [results[f"worker{i}"]["worker"] for i in range(2)]}


@pytest.fixture(scope="module")
def mirrored(runs):
    return runs["mirrored"]


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


def test_multi_worker_mirrored_strategy_two_processes_prune(runs):
    mirrored, results = runs["mirrored"], runs["workers"]
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
