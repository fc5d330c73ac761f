"""keras-tuner's chief/worker mode: one chief and two workers of `tfdeploy tune` on 127.0.0.1."""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SPACE = {"slim_ratio": 0.0, "sparsity_kind": "unstructured", "sparsity": [0.3, 0.5],
         "schedule": "constant", "clusters": 0, "qat": False,
         "quantization": ["dynamic", "float16"], "learning_rate": 5e-4, "epochs": 1}


def _tiny_digits(digits_dir, root, per_class):
    """A copy of the digits tree with ``per_class`` images per class and split."""
    for split, n in (("train", per_class), ("test", per_class)):
        for class_dir in sorted(glob.glob(os.path.join(digits_dir, split, "*"))):
            target = os.path.join(root, split, os.path.basename(class_dir))
            os.makedirs(target)
            for path in sorted(os.listdir(class_dir))[:n]:
                shutil.copy(os.path.join(class_dir, path), target)
    return root


def test_chief_and_two_workers_share_one_oracle(tmp_path, trained_model, digits_dir):
    data = _tiny_digits(digits_dir, str(tmp_path / "data"), 16)
    model_path = str(tmp_path / "model.h5")
    trained_model.save(model_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE) + os.pathsep
               + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3",
               OPENBLAS_NUM_THREADS="1")  # one thread until tune_cluster.py forks
    args = [model_path, "--data", data, "--budget", "100", "--max-trials", "4",
            "--directory", str(tmp_path / "tune"), "--space", json.dumps(SPACE),
            "--latency-samples", "5", "--oracle-port", str(port),
            "--output", str(tmp_path / "best")]
    roles = ["chief", "worker0", "worker1"]
    # `tfdeploy tune ... --distributed ROLE` for each role, side by side: one process each,
    # forked by tune_cluster.py after the imports
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "tune_cluster.py"),
                             str(tmp_path), ",".join(roles), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        helper = proc.communicate(timeout=900)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the helper and the roles
    assert proc.returncode == 0, helper[-3000:]
    outputs = {role: (tmp_path / f"{role}.log").read_text() for role in roles
               if (tmp_path / f"{role}.log").exists()}
    codes = json.loads((tmp_path / "codes.json").read_text())
    for role in roles:
        assert codes.get(role) == 0, f"{role} ({codes.get(role)}):\n{outputs.get(role, '')[-3000:]}"

    project = tmp_path / "tune" / "compression"
    oracle_trials = [json.load(open(p)) for p in glob.glob(str(project / "trial_*" / "trial.json"))]
    assert len(oracle_trials) == 4 and all(t["status"] == "COMPLETED" for t in oracle_trials)
    ran_by = {json.load(open(project / f"trial_{t['trial_id']}" / "result.json"))["tuner_id"]
              for t in oracle_trials}
    assert ran_by == {"worker0", "worker1"}

    chief = json.load(open(tmp_path / "chief.json"))
    assert len(chief["trials"]) == 4 and chief["best"] is not None
    assert os.path.exists(chief["exported"]["tflite"])
    workers = [json.load(open(tmp_path / f"{w}.json")) for w in ("worker0", "worker1")]
    assert sum(len(w["trials"]) for w in workers) == 4
