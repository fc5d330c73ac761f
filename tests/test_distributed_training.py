"""Compression under tf.distribute: MirroredStrategy on two logical CPUs, two-process
MultiWorkerMirroredStrategy on 127.0.0.1, typed errors before training."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "distributed_train.py")
TARGET = 0.75
# Largest |difference| allowed between a worker's and the single process's variables after
# 16 pruning steps: float32 sums in another order, not another computation.
TOLERANCE = 1e-4
# The same for one QAT step taken from the single process's variables (measured: <= 1.5e-8;
# with tfmot's per-replica ranges 1.5e-4 to 7e-4 in every step).
STEP_TOLERANCE = 1e-6


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
    side by side: ``{"mirrored": ..., "workers": [w0, w1]}``. They share one file: the
    single process's QAT run, which "mirrored" trains first and the workers compare with."""
    tmp = tmp_path_factory.mktemp("distributed")
    ports = ",".join(str(p) for p in free_ports(2))
    outs = {"mirrored": str(tmp / "mirrored.json"),
            **{f"worker{i}": str(tmp / f"worker{i}.json") for i in range(2)}}
    # the single process's QAT run, trained by "mirrored" and read by the workers
    single = str(tmp / "single_qat.npz")
    argv = {"mirrored": ["mirrored", outs["mirrored"], single],
            **{f"worker{i}": ["worker", str(i), ports, outs[f"worker{i}"], single]
               for i in range(2)}}
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
            "workers": [results[f"worker{i}"]["worker"] for i in range(2)],
            "workers_qat": [results[f"worker{i}"]["qat"] for i in range(2)]}


def _assert_qat_steps_equal_one_process(run):
    """Every QAT step, taken from the single process's variables on the same global batch,
    ends with every variable (weights, and the weight, activation and input fake-quant
    ranges) within `STEP_TOLERANCE` of the single process's step."""
    assert len(run["lockstep"]) == 8
    names = list(run["lockstep"][0])
    for kind in ("kernel:0", "kernel_max:0", "post_activation_max:0", "pre_activation_min:0"):
        assert any(n.endswith(kind) for n in names), kind  # ranges are compared too
    assert sum(n.split("/")[-1].startswith("quantize_layer") for n in names) == 2
    for step, (diff, moved) in enumerate(zip(run["lockstep"], run["moved"])):
        assert moved > 100 * STEP_TOLERANCE, (step, moved)  # the step changed something
        assert max(diff.values()) < STEP_TOLERANCE, (step, diff)


def _differences(run, reference):
    """``{variable: max |run - reference|}`` over ``[name, values]`` lists in model order
    (the same variables, in the same shapes)."""
    assert len(run) == len(reference)
    out = {}
    for (_, a), (name, b) in zip(run, reference):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape, name
        out[name] = float(np.max(np.abs(a - b))) if a.size else 0.0
    return out


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
    """No callback keeps the replicas' ranges equal: they are set from the global batch.
    (The free-running epoch of `qat_runs`.)"""
    q = mirrored["qat_runs"]
    assert q["loss"] == q["loss"] and q["loss"] < 10  # finite
    assert q["ranges_moved"] > 0 and q["replicas_agree"]


def test_mirrored_strategy_qat_steps_equal_one_process(mirrored):
    run = mirrored["qat_runs"]
    assert run["iterations"] == 8 and run["replicas_agree"] and run["lockstep_replicas_agree"]
    _assert_qat_steps_equal_one_process(run)


def test_mirrored_strategy_qat_with_synchronized_batchnorm_equals_one_process(mirrored):
    """``BatchNormalization(synchronized=True)`` stays synchronized through `quantize` (tf_keras
    leaves the flag out of the layer's config, so tfmot's clone normalised each replica's half
    batch: 3e-4 to 8e-3 off in every step, measured). Every step from the single process's
    variables then ends within `TOLERANCE`, BN moving statistics included (measured <= 2.2e-5:
    the synchronized statistics are sums in another order, and a value that crosses a
    fake-quant rounding boundary inside the step moves by a whole quantization step)."""
    run = mirrored["qat_bn_runs"]
    assert run["iterations"] == 8 and run["replicas_agree"] and run["lockstep_replicas_agree"]
    names = list(run["lockstep"][0])
    assert any(n.endswith("bn1/moving_variance:0") for n in names)
    for step, (diff, moved) in enumerate(zip(run["lockstep"], run["moved"])):
        assert moved > 100 * TOLERANCE, (step, moved)
        assert max(diff.values()) < TOLERANCE, (step, diff)


def test_fit_under_a_strategy_traces_its_train_step_once(runs):
    """`compress.TraceOnce` creates the optimizer's slots and the metrics' variables before
    the first step under MirroredStrategy and MultiWorkerMirroredStrategy too (Keras alone
    creates them in the first trace, so every fit traced its step twice); the QAT runs'
    second (lockstep) fit reuses the trace. The tests above check that the training is the
    one process's."""
    m = runs["mirrored"]
    for run in (m["mirrored"], m["single"], *runs["workers"]):
        assert run["traces"] == 1
    for run in (m["qat_runs"], m["qat_bn_runs"], *runs["workers_qat"]):
        assert run["traces"] == 1


def test_unsupported_setups_are_refused_before_training(mirrored):
    errors = mirrored["errors"]
    assert errors["jit"] and "jit_compile=True under MirroredStrategy" in errors["jit"]
    assert errors["outside"] and "called outside its scope" in errors["outside"]


def test_multi_worker_mirrored_strategy_two_processes_prune(runs):
    single, results = runs["mirrored"]["single"], runs["workers"]
    w0, w1 = results
    assert w0["replicas"] == w1["replicas"] == 2
    assert w0["zeros_md5"] == w1["zeros_md5"]  # same masks on both workers
    assert w0["pruning_steps"] == w1["pruning_steps"] == single["pruning_steps"]
    # Two workers, each on half of every global batch, train the same weights as one
    # process on the whole batches: same masks (same pruned positions), values within
    # float tolerance (the all-reduce sums in another order).
    assert w0["zeros_md5"] == single["zeros_md5"]
    for worker in (w0, w1):
        diff = _differences(worker["weights"], single["weights"])
        assert max(diff.values()) < TOLERANCE, diff


def test_multi_worker_mirrored_strategy_reports_the_global_batch_loss(runs):
    """What ``fit`` reports after each batch (``logs["loss"]``: the progress bar, per-batch
    TensorBoard) and after each epoch is the loss one process computes on the same global
    batches, not its sum over the two workers (tf_keras's "auto" reduction: 2x, fixed by
    `GlobalBatchLogs`)."""
    single = runs["mirrored"]["single"]
    assert len(single["batch_losses"]) == 16
    for worker in runs["workers"]:
        assert worker["batch_losses"] == pytest.approx(single["batch_losses"], rel=1e-5)
        assert worker["loss"] == pytest.approx(single["loss"], rel=1e-5)


def test_multi_worker_mirrored_strategy_two_processes_qat(runs):
    """Two workers train QAT as one process does on the same global batches: every step,
    started from the single process's variables, gives that process's weights and
    fake-quant ranges within float tolerance (`_assert_qat_steps_equal_one_process`),
    because the fake-quants take their ranges from the whole global batch, gathered across
    the workers (`tfdeploy._tfmot.global_batch_ranges`; tfmot alone takes each
    replica's half batch: 3e-4 off, 3 % of a step's movement, from the first step). Left
    to train on their own, the workers end with the same variables, ranges included.

    Not asserted: that the free-running runs stay within tolerance of one process's over
    the epoch. They do for the first steps, until a sum in another order moves a value
    across a fake-quant rounding boundary, which changes it by a whole quantization step
    (a control: one process started from weights 1e-7 off ends its first step 3e-4 off).
    """
    (q0, q1) = runs["workers_qat"]
    assert q0["iterations"] == q1["iterations"] == 8
    between = _differences(q0["weights"], q1["weights"])
    assert any(name.endswith("_max:0") for name in between)  # ranges are compared too
    assert max(between.values()) <= 1e-6, between
    for worker in (q0, q1):
        _assert_qat_steps_equal_one_process(worker)


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
