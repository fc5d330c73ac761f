"""A SIGKILLed pruning fit, and a SIGKILLed clustering fit, resume from
compress.callbacks(backup_dir=...) and end exactly where an uninterrupted run ends (pruning
step, masks, cluster weights); an interrupted QAT fit resumes with its learned ranges.

The end state alone cannot tell a resumed fit from one that started over (deterministic
data and seeds make both equal the reference), so each test also checks where the resumed
fit started: at the epoch after the last one the killed fit finished, with the step, masks,
ranges and centroids that fit had then, which a fresh start (the reference run's) has not.
These checks fail when the backup is deleted before resuming."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "resume_fit.py")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("resume"))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE) + os.pathsep
               + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3",
               OPENBLAS_NUM_THREADS="1")  # one thread until resume_fit.py forks

    def log(phase):
        path = os.path.join(work, f"{phase}.log")
        if not os.path.exists(path):
            return ""
        with open(path) as f:
            return f"{phase}:\n{f.read()[-3000:]}\n"

    with open(os.path.join(work, "resume.log"), "w") as err:
        proc = subprocess.run([sys.executable, SCRIPT, work], env=env,
                              stdout=subprocess.DEVNULL, stderr=err, timeout=900)
    assert proc.returncode == 0, "".join(log(p) for p in ("kill", "kill_cluster", "resume"))
    with open(os.path.join(work, "killed.json")) as f:
        killed = json.load(f)
    # the two killed processes died of SIGKILL, and their backups survived it
    assert killed["codes"] == {"kill": -signal.SIGKILL, "kill_cluster": -signal.SIGKILL}, \
        killed
    assert killed["backups"]["prune_backup"] and killed["backups"]["cluster_backup"], killed

    def load(name):
        with open(os.path.join(work, name)) as f:
            return json.load(f)

    out = {f"{kind}_{n}": load(f"{kind}_{n}.json") for kind in ("reference", "resumed")
           for n in ("prune", "qat", "cluster")}
    out.update({f"saved_{n}": load(f"{n}_saved.json") for n in ("prune", "qat", "cluster")})
    return out


def _started_from_the_backup(runs, name, epoch, keys):
    """The resumed fit began where the interrupted one last saved, not where a fresh one does."""
    saved, start = runs[f"saved_{name}"], runs[f"resumed_{name}"]["start"]
    fresh = runs[f"reference_{name}"]["start"]
    assert saved["epoch"] == start["epoch"] == epoch, (saved["epoch"], start["epoch"])
    assert fresh["epoch"] == 0 and fresh["iterations"] == 0
    assert start["iterations"] == saved["iterations"] == epoch * 6
    for key in keys:
        assert saved[key], key  # the state exists in this model
        assert _close(start[key], saved[key]), key
        assert not _close(fresh[key], saved[key]), key


def _close(a, b):
    """Equal structure (dict keys, list lengths) and values within float tolerance."""
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(_close(a[k], b[k]) for k in a)
    a, b = np.asarray(a, float), np.asarray(b, float)
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-6, atol=1e-7)


def test_sigkilled_pruning_fit_resumes_to_the_uninterrupted_result(runs):
    # Killed in epoch 2: it restarts at epoch 2 with the step and masks of epoch 1's end.
    _started_from_the_backup(runs, "prune", 2, ["pruning_steps", "masks"])
    ref, res = runs["reference_prune"], runs["resumed_prune"]
    assert res["iterations"] == ref["iterations"] == 4 * 6
    assert res["pruning_steps"] == ref["pruning_steps"]  # the schedule continued, not restarted
    assert res["masks"] == ref["masks"]
    assert res["sparsity"] == ref["sparsity"]
    assert all(v == pytest.approx(0.75, abs=0.01) for v in res["sparsity"].values())
    for a, b in zip(res["weights"], ref["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sigkilled_clustering_fit_resumes_to_the_uninterrupted_result(runs):
    _started_from_the_backup(runs, "cluster", 1, ["centroids"])  # killed in epoch 1
    ref, res = runs["reference_cluster"], runs["resumed_cluster"]
    assert res["iterations"] == ref["iterations"] == 3 * 6
    assert res["unique"] == ref["unique"] and max(ref["unique"]) <= 8  # still 8 clusters
    for a, b in zip(res["weights"], ref["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_interrupted_qat_fit_resumes_with_its_ranges(runs):
    _started_from_the_backup(runs, "qat", 1, ["ranges"])  # interrupted in epoch 1
    ref, res = runs["reference_qat"], runs["resumed_qat"]
    assert res["iterations"] == ref["iterations"]
    assert res["sparsity"] == ref["sparsity"]
    assert set(res["ranges"]) == set(ref["ranges"]) and ref["ranges"]
    for name, value in ref["ranges"].items():
        assert res["ranges"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
