"""A SIGKILLed pruning fit resumes from compress.callbacks(backup_dir=...) and ends exactly
where an uninterrupted run ends (pruning step, masks, weights); an interrupted QAT fit
resumes with its learned ranges."""

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
               + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3")
    killed = subprocess.run([sys.executable, SCRIPT, "kill", work], env=env,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert os.listdir(os.path.join(work, "prune_backup"))  # the backup survived the kill
    resumed = subprocess.run([sys.executable, SCRIPT, "resume", work], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def load(name):
        with open(os.path.join(work, name)) as f:
            return json.load(f)

    return {n: load(f"{n}.json") for n in ("reference_prune", "resumed_prune", "reference_qat",
                                           "resumed_qat")}


def test_sigkilled_pruning_fit_resumes_to_the_uninterrupted_result(runs):
    ref, res = runs["reference_prune"], runs["resumed_prune"]
    assert res["iterations"] == ref["iterations"] == 4 * 6
    assert res["pruning_steps"] == ref["pruning_steps"]  # the schedule continued, not restarted
    assert res["masks"] == ref["masks"]
    assert res["sparsity"] == ref["sparsity"]
    assert all(v == pytest.approx(0.75, abs=0.01) for v in res["sparsity"].values())
    for a, b in zip(res["weights"], ref["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_interrupted_qat_fit_resumes_with_its_ranges(runs):
    ref, res = runs["reference_qat"], runs["resumed_qat"]
    assert res["iterations"] == ref["iterations"]
    assert res["sparsity"] == ref["sparsity"]
    assert set(res["ranges"]) == set(ref["ranges"]) and ref["ranges"]
    for name, value in ref["ranges"].items():
        assert res["ranges"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
