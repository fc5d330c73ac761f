"""Search compression plans with keras-tuner under an accuracy budget, measured on the artifact.

    result = tfdeploy.tune.search(model, train_ds, (x_val, y_val), budget=1.0,
                                  objective="size", max_trials=20, directory="tune",
                                  test_data=(x_test, y_test))
    print(result.best)             # the smallest int8/float16/dynamic TFLite within 1 point
    result.export("saved_models/tuned")

Which split does what: ``train_data`` fine-tunes every plan and calibrates its
int8 export; ``validation_data`` (held out from the training data, never the
test split) measures every trial, decides feasibility under the budget and
picks the best; ``test_data`` is read once, after the search, to report the
chosen artifact's (and the float baseline's) ``test_accuracy``.

Each trial applies a plan (`tfdeploy.compress.apply_plan`: slim, prune or 2:4,
cluster, QAT, each fine-tuned), exports TFLite with the trial's quantization,
loads it in LiteRT and measures validation accuracy, agreement with its Keras
model, gzip bytes and p50 latency there. The oracle minimises ``cost``: the artifact's
gzip bytes and/or p50 latency relative to the float baseline's TFLite. A trial
whose accuracy drop exceeds the budget is *infeasible*: its ``feasible`` metric
is 0, its row says so, it is never returned as best, and its cost is pushed
above every feasible cost (1 + measured cost + excess points / 10) so the
oracle learns to avoid that region.

Distributed search uses keras-tuner's own chief/worker mode: set
``KERASTUNER_TUNER_ID`` (``chief`` or ``worker0``, ``worker1``, ...),
``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT`` in each process (the
``tfdeploy tune --distributed ROLE`` flag does it) and run the same search.
"""

import json
import os
import shutil
import time

import numpy as np

from tfdeploy import _kerastuner
from tfdeploy._json import write_json
from tfdeploy._keras import keras, keras_tuner, tf
from tfdeploy.model_io import check_model, save_model
from tfdeploy.errors import TuneError
from tfdeploy.tune import log as trial_log
from tfdeploy.tune import space as search_space

TUNERS = ("bayesian", "hyperband", "random")
OBJECTIVES = ("size", "latency")
BASELINE_FILE = "baseline.json"


def _weights(objective):
    if isinstance(objective, str):
        if objective == "mix":
            return {"size": 0.5, "latency": 0.5}
        if objective not in OBJECTIVES:
            raise TuneError(f"Unrecognized objective={objective!r}. Supported objectives are: "
                            f"{list(OBJECTIVES) + ['mix']} or a dict of weights such as "
                            "{'size': 0.7, 'latency': 0.3}.")
        return {objective: 1.0}
    if isinstance(objective, dict) and objective and set(objective) <= set(OBJECTIVES) and all(
            isinstance(v, (int, float)) and v >= 0 for v in objective.values()) and sum(
            objective.values()) > 0:
        total = float(sum(objective.values()))
        return {k: float(v) / total for k, v in objective.items()}
    raise TuneError(f"objective must be 'size', 'latency', 'mix' or a dict of non-negative "
                    f"weights over {list(OBJECTIVES)}, received {objective!r}.")


def _arrays(data, name="validation_data"):
    if isinstance(data, tf.data.Dataset):
        from tfdeploy.data import to_numpy

        return to_numpy(data)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return np.asarray(data[0], np.float32), np.asarray(data[1])
    raise TuneError(f"{name} must be a tf.data.Dataset of (x, y) batches or an (x, y) tuple "
                    f"of arrays, received {type(data).__name__}.")


def _measure(path, model, x, y, samples):
    """Validation accuracy, agreement, gzip bytes and p50 latency of an artifact in its own
    runtime (``x``, ``y``: the validation split)."""
    from tfdeploy import runtime, verify

    runner = runtime.load(path, num_threads=1)
    checked = verify.verify(runner, model, x, y, raise_on_failure=False)
    return {"validation_accuracy": float(checked["accuracy"]),
            "agreement": float(checked["agreement"]),
            "gzip_bytes": int(verify.gzip_bytes(path)),
            "latency_p50_ms": float(verify.latency_ms(runner, x, samples=samples))}


class _Space(keras_tuner().HyperModel):
    """Declares the compression search space (builds no model: the tuner runs plans)."""

    def __init__(self, space, hyperband):
        super().__init__(name="compression")
        self.space, self.hyperband = space, hyperband

    def build(self, hp):
        search_space.declare(hp, self.space, self.hyperband)


class CompressionTuner(keras_tuner().engine.base_tuner.BaseTuner):
    """A keras-tuner tuner whose trials are compression plans scored on exported artifacts.

    Use `search` rather than building one directly.
    """

    def __init__(self, oracle, hypermodel, model, budget, weights, directory, project_name,
                 overwrite=False, log_dir=None, latency_samples=50, seed=0):
        super().__init__(oracle, hypermodel, directory=directory, project_name=project_name,
                         overwrite=overwrite)
        self.model, self.budget, self.weights = model, float(budget), weights
        self.log_dir, self.latency_samples, self.seed = log_dir, int(latency_samples), seed
        self.baseline = None

    def measure_baseline(self, x, y):
        """Measure (or reload from the tuner directory) the float baseline's TFLite on the
        validation split ``x``, ``y``."""
        from tfdeploy import export

        path = os.path.join(self.project_dir, BASELINE_FILE)
        saved = _read_json(path)
        if saved is None:
            tfl = os.path.join(self.project_dir, "baseline_float32.tflite")
            # Every worker of a distributed search measures the same baseline: the last
            # (atomic) write wins.
            export.tflite(self.model, tfl, "float32", overwrite=True)
            saved = _measure(tfl, self.model, x, y, self.latency_samples)
            write_json(path, saved)
        self.baseline = saved
        return saved

    def cost(self, metrics):
        """The oracle's objective: weighted gzip-bytes / latency ratios to the baseline."""
        ratios = {"size": metrics["gzip_bytes"] / self.baseline["gzip_bytes"],
                  "latency": metrics["latency_p50_ms"] / self.baseline["latency_p50_ms"]}
        return float(sum(w * ratios[k] for k, w in self.weights.items()))

    def search(self, *fit_args, **fit_kwargs):
        """Run trials (single process or worker), or serve the oracle (distributed chief)."""
        if role() == "chief":
            self.oracle.verbose = fit_kwargs.get("verbose", 0)
            self.save()
            _kerastuner.serve_oracle(self.oracle)
            return
        super().search(*fit_args, **fit_kwargs)

    def run_trial(self, trial, train_data, x, y, jit_compile=False, verbose=0):
        from tfdeploy import export
        from tfdeploy.compress import apply_plan

        values = dict(trial.hyperparameters.values)
        stages, quantization = search_space.plan(values)
        trial_dir = self.get_trial_dir(trial.trial_id)
        start = time.time()
        keras.utils.set_random_seed(self.seed)
        result = apply_plan(self.model, stages, train_data, jit_compile=jit_compile) \
            if stages else None
        model = result.model if result is not None else self.model
        path = os.path.join(trial_dir, "model.tflite")
        # A retried trial replaces its own file. The card (compression history read from
        # the weights) is written now, while the model is in memory: `TuneResult.export`
        # ships it when the trial's .h5 cannot be reloaded.
        export.tflite(model, path, quantization, representative_data=train_data,
                      overwrite=True, model_card={"tune": {"trial_id": trial.trial_id}})
        metrics = _measure(path, model, x, y, self.latency_samples)
        save_model(model, os.path.join(trial_dir, "model.h5"))
        drop = 100.0 * (self.baseline["validation_accuracy"] - metrics["validation_accuracy"])
        feasible = drop <= self.budget
        cost = self.cost(metrics)
        if not feasible:
            cost = 1.0 + cost + (drop - self.budget) / 10.0
        row = {"trial_id": trial.trial_id, "status": "feasible" if feasible else "infeasible",
               "feasible": bool(feasible), "cost": round(cost, 6),
               "accuracy_drop": round(drop, 4), **metrics,
               "technique": search_space.technique(values), "quantization": quantization,
               "epochs": int(values.get("tuner/epochs") or values.get("epochs") or 1),
               "tuner_id": self.tuner_id, "started": round(start, 3),
               "seconds": round(time.time() - start, 2),
               "plan": [repr(s) for s in stages],
               **{k: v for k, v in values.items() if not k.startswith("tuner/")
                  and k not in ("quantization", "epochs")}}
        write_json(os.path.join(trial_dir, trial_log.RESULT_FILE), row)
        if self.log_dir:
            trial_log.log_hparams(self.log_dir, row)
        if verbose:
            print(f"trial {trial.trial_id} [{self.tuner_id}] {row['technique']}: "
                  f"{row['status']}, cost {cost:.4f}, validation accuracy "
                  f"{metrics['validation_accuracy']:.4f} "
                  f"(drop {drop:.2f} points), {metrics['gzip_bytes']} gzip bytes, "
                  f"p50 {metrics['latency_p50_ms']:.3f} ms", flush=True)
        return {"cost": cost, "feasible": float(feasible),
                "validation_accuracy": metrics["validation_accuracy"],
                "accuracy_drop": drop, "gzip_bytes": float(metrics["gzip_bytes"]),
                "latency_p50_ms": metrics["latency_p50_ms"], "agreement": metrics["agreement"]}


class TuneResult:
    """What a search found: every trial's row, the best feasible one, and where they live.

    Every trial was measured on the validation split, and the best one was chosen
    there (``validation_accuracy``, ``accuracy_drop``, ``feasible``, ``cost``).
    With ``test_data`` given to `search`, the best row and the baseline also
    hold ``test_accuracy``: the test split, read once, for the chosen artifact.

    Attributes:
        trials: list of dicts (one per finished trial, in trial order).
        best: the feasible row with the lowest cost, or None when none is feasible.
        baseline: the float baseline TFLite's measurements.
        directory: the tuner's project directory (trial_*/ hold each trial's
            ``model.tflite``, ``model.h5`` and ``result.json``).
        seconds: wall time of this search call.
        validation: the ``(x, y)`` validation arrays the search measured on, or None.
    """

    def __init__(self, trials, baseline, directory, seconds, budget, validation=None):
        self.trials, self.baseline, self.directory = trials, baseline, directory
        self.seconds, self.budget, self.validation = seconds, budget, validation
        feasible = [t for t in trials if t["feasible"]]
        self.best = min(feasible, key=lambda t: t["cost"]) if feasible else None

    @property
    def infeasible(self):
        return [t for t in self.trials if not t["feasible"]]

    def export(self, output_dir, name="tuned", validation_data=None):
        """Ship the best trial's artifact to ``output_dir``: the very file the search measured.

        Copies the best trial's ``model.tflite`` (exported during its trial, int8
        calibrated on the training data) to ``<name>.tflite`` with its model card
        plus the search's record, and its Keras model to ``<name>.h5``. Then checks
        the copy in LiteRT on the validation split: its accuracy drop against the
        baseline stays within the budget.

        Args:
            output_dir: where ``<name>.tflite`` and ``<name>.h5`` are written.
            name: the files' stem. Defaults to "tuned".
            validation_data: ``(x, y)`` to check on. Defaults to the search's
                validation split (`validation`); with neither, no check.

        Returns:
            ``{"tflite": path, "keras": path, "verification": {"validation_accuracy",
            "passed"} or None, "test_accuracy": the best row's, or None}``.

        Raises:
            TuneError: no feasible trial. VerificationError: the copy fails the check.
        """
        if self.best is None:
            raise TuneError(
                f"No trial met the accuracy budget of {self.budget} points ({len(self.trials)} "
                "trial(s)); raise the budget, add milder choices to the space, or run more "
                "trials.")
        trial_dir = os.path.join(self.directory, f"trial_{self.best['trial_id']}")
        os.makedirs(output_dir, exist_ok=True)
        keras_path = os.path.join(output_dir, f"{name}.h5")
        shutil.copyfile(os.path.join(trial_dir, "model.h5"), keras_path)
        path = os.path.join(output_dir, f"{name}.tflite")
        card = {"tune": {"trial": self.best, "baseline": self.baseline, "budget": self.budget}}
        _ship_trial_artifact(trial_dir, path, card)
        x, y = _arrays(validation_data) if validation_data is not None else \
            (self.validation or (None, None))
        return {"tflite": path, "keras": keras_path,
                "verification": _check_accuracy(path, x, y, self.baseline, self.budget),
                "test_accuracy": self.best.get("test_accuracy")}

    def summary(self):
        base = self.baseline
        test = f", test accuracy {base['test_accuracy']:.4f}" if "test_accuracy" in base else ""
        lines = [f"{len(self.trials)} trial(s), {len(self.infeasible)} infeasible, "
                 f"{self.seconds:.1f} s; budget {self.budget} points; baseline "
                 f"{base['gzip_bytes']} gzip bytes, p50 {base['latency_p50_ms']:.3f} ms, "
                 f"validation accuracy {base['validation_accuracy']:.4f}{test}"]
        for t in self.trials:
            mark = "*" if self.best is not None and t["trial_id"] == self.best["trial_id"] else " "
            lines.append(f"{mark} {t['trial_id']:>4} {t['status']:<10} cost {t['cost']:.4f}  "
                         f"val acc {t['validation_accuracy']:.4f}  {t['gzip_bytes']:>8} B  "
                         f"{t['latency_p50_ms']:.3f} ms  {t['technique']}")
        if self.best is not None and "test_accuracy" in self.best:
            lines.append(f"best trial {self.best['trial_id']}: test accuracy "
                         f"{self.best['test_accuracy']:.4f} (the test split, read once)")
        return "\n".join(lines)

    __str__ = summary


def _ship_trial_artifact(trial_dir, path, card):
    """Copy a trial's ``model.tflite`` and its card to ``path``, adding ``card``'s fields."""
    from tfdeploy import export
    from tfdeploy._atomic import atomic_file

    source = os.path.join(trial_dir, "model.tflite")
    card_file = export.model_card.card_path(source)
    if not os.path.exists(card_file):
        raise TuneError(f"{card_file} is missing: the trial was run by an older tfdeploy that "
                        "wrote no card. Re-run the search in a new directory to export it.")
    with open(card_file) as f:
        full = json.load(f)
    full["tune"] = card["tune"]
    with atomic_file(path) as tmp:
        shutil.copyfile(source, tmp)
    write_json(export.model_card.card_path(path), full)
    return path


def _check_accuracy(path, x, y, baseline, budget):
    """Validation accuracy of an artifact in its runtime; VerificationError beyond the budget."""
    from tfdeploy import runtime, verify
    from tfdeploy.errors import VerificationError

    if x is None:
        return None
    accuracy = verify.accuracy(runtime.load(path), x, y)
    drop = 100.0 * (baseline["validation_accuracy"] - accuracy)
    if drop > budget:
        raise VerificationError(f"{path}: validation accuracy {accuracy:.4f} is {drop:.2f} "
                                f"points below the baseline, beyond the {budget}-point budget.")
    return {"validation_accuracy": accuracy, "passed": True}


def _test_accuracy(path, x, y):
    from tfdeploy import runtime, verify

    return round(float(verify.accuracy(runtime.load(path, num_threads=1), x, y)), 6)


def _read_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _seeded(base):
    """``base`` (a keras-tuner oracle class) that proposes ``initial_points`` before its own.

    The points are tried in order, each once (a point already tried, e.g. in a
    resumed search, is skipped); then the oracle searches as usual, with the
    points' results among its observations.
    """
    kt = keras_tuner()

    class Seeded(base):
        def __init__(self, *args, initial_points=(), **kwargs):
            super().__init__(*args, **kwargs)
            self.initial_points = list(initial_points)

        def _point_values(self, point):
            hps = kt.HyperParameters()
            for hp in self.hyperparameters.space:
                hps.merge([hp])
                if hps.is_active(hp):
                    hps.values[hp.name] = point.get(hp.name, hp.default)
            return hps.values

        def populate_space(self, trial_id):
            for point in self.initial_points:
                values = self._point_values(point)
                if not _kerastuner.is_duplicate(self, values):
                    return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": values}
            return super().populate_space(trial_id)

    Seeded.__name__ = f"Seeded{base.__name__}"
    return Seeded


def _oracle(tuner, max_trials, max_epochs, seed, points=()):
    kt = keras_tuner()
    objective = kt.Objective("cost", "min")
    if tuner == "bayesian":
        # keras-tuner's default is 3 random trials per hyperparameter (~30 here), which
        # would make any affordable search a random one: after the initial points, a few
        # random trials, then the Gaussian process proposes.
        return _seeded(kt.oracles.BayesianOptimizationOracle)(
            objective, max_trials=max_trials, seed=seed, initial_points=points,
            num_initial_points=len(points) + max(2, max_trials // 5))
    if tuner == "random":
        return _seeded(kt.oracles.RandomSearchOracle)(
            objective, max_trials=max_trials, seed=seed, initial_points=points)
    if tuner == "hyperband":
        oracle = kt.oracles.HyperbandOracle(objective, max_epochs=max_epochs, factor=3, seed=seed)
        oracle.max_trials = max_trials  # stop after max_trials, like the other oracles
        return oracle
    raise TuneError(f"Unrecognized tuner={tuner!r}. Supported tuners are: {list(TUNERS)}.")


def role():
    """This process's role in a keras-tuner distributed search: None, "chief" or a worker id."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    return os.environ.get("KERASTUNER_TUNER_ID")


def collect(directory):
    """The rows of every finished trial under a tuner project ``directory``, in trial order."""
    rows = []
    if not os.path.isdir(directory):
        return rows
    for name in sorted(os.listdir(directory)):
        if name.startswith("trial_"):
            row = trial_log.read_result(os.path.join(directory, name))
            if row is not None:
                rows.append(row)
    return rows


def search(model, train_data, validation_data, budget=1.0, objective="size", max_trials=10,
           tuner="bayesian", directory="tune", space=None, log_dir=None, overwrite=False,
           max_epochs=3, latency_samples=50, jit_compile=False, seed=0, verbose=1,
           initial_points=None, test_data=None):
    """Find the smallest / fastest artifact within ``budget`` accuracy points of ``model``.

    Resumable: run it again with the same ``directory`` and it reloads the
    oracle and the finished trials, re-runs a trial that was interrupted, and
    continues up to ``max_trials`` (raise it to search further). The float
    baseline is measured once and stored there too.

    Args:
        model: the trained float Keras 2 model (the baseline; never modified).
        train_data: ``tf.data.Dataset`` of ``(x, y)`` batches for fine-tuning and
            int8 calibration.
        validation_data: ``(x, y)`` arrays or a dataset held out from the training
            data (`tfdeploy.data.image_dataset(..., validation_split=0.2,
            subset="validation")`), not the test split: every artifact's accuracy is
            measured on it in its own runtime, and feasibility and the best trial
            are decided on it.
        budget: the largest validation-accuracy drop allowed, in percentage points
            against the float baseline's TFLite. Defaults to 1.0.
        objective: "size" (gzip bytes), "latency" (p50 ms at batch 1, one thread),
            "mix" (half each) or a dict of weights such as
            ``{"size": 0.7, "latency": 0.3}``. Defaults to "size".
        max_trials: trials in total (across resumptions and workers). Defaults to 10.
        tuner: "bayesian", "hyperband" (fine-tuning epochs are the budget it
            allocates, up to ``max_epochs``; promoted trials retrain from the
            baseline) or "random". Defaults to "bayesian".
        directory: the tuner directory (``directory/compression``). Defaults to "tune".
        space: overrides of `tfdeploy.tune.DEFAULT_SPACE`, e.g.
            ``{"qat": [True], "clusters": [0]}``. Defaults to None.
        log_dir: TensorBoard directory; each trial becomes an HParams run
            ``log_dir/trial_<id>``. Defaults to None.
        overwrite: discard a previous search in ``directory``. Defaults to False.
        max_epochs: Hyperband's largest fine-tuning epochs per stage. Defaults to 3.
        latency_samples: inputs timed per artifact. Defaults to 50.
        jit_compile: XLA-compile the fine-tuning steps (see `apply_plan`).
            Defaults to False.
        seed: oracle and training seed. Defaults to 0.
        verbose: print one line per trial. Defaults to 1.
        initial_points: plans the Bayesian / random oracle tries first, each a
            ``{name: value}`` dict over the space's keys (a key left out takes the
            space's first value). None tries the known recipes of
            `tfdeploy.tune.space.INITIAL_POINTS` that ``space`` can express; ``[]``
            none. Hyperband takes none (a TuneError when given). Defaults to None.
        test_data: ``(x, y)`` arrays or a dataset: the test split, read once after
            the search to report ``test_accuracy`` of the best trial's artifact and
            of the float baseline (never used to choose). Defaults to None.

    Returns:
        A `TuneResult` (in a distributed worker: the trials this worker ran).

    Raises:
        TuneError: bad objective, budget, tuner, space or initial points.
    """
    model = check_model(model)
    weights = _weights(objective)
    if not isinstance(budget, (int, float)) or budget < 0:
        raise TuneError(f"budget must be a non-negative number of accuracy points (1.0 = one "
                        f"point), received {budget!r}.")
    if not isinstance(max_trials, int) or max_trials < 1:
        raise TuneError(f"max_trials must be a positive integer, received {max_trials!r}.")
    if tuner not in TUNERS:
        raise TuneError(f"Unrecognized tuner={tuner!r}. Supported tuners are: {list(TUNERS)}.")
    resolved = search_space.resolve_space(space)
    if tuner == "hyperband" and initial_points:
        raise TuneError("tuner='hyperband' does not take initial_points (its brackets draw "
                        "every trial); use tuner='bayesian' or 'random' to try them first, or "
                        "leave initial_points out.")
    points = search_space.resolve_points(initial_points, resolved)
    start = time.time()
    instance = CompressionTuner(
        _oracle(tuner, max_trials, max_epochs, seed, points),
        _Space(resolved, tuner == "hyperband"), model, budget, weights, directory,
        "compression", overwrite=overwrite, log_dir=log_dir,
        latency_samples=latency_samples, seed=seed)
    instance.oracle.max_trials = max_trials  # a resumed search may extend it
    x, y = _arrays(validation_data)
    tests = _arrays(test_data, "test_data") if test_data is not None else None
    this_role = role()
    if this_role is None or this_role != "chief":
        instance.measure_baseline(x, y)
    instance.search(train_data, x, y, jit_compile=jit_compile, verbose=verbose)
    project = instance.project_dir
    rows = collect(project)
    if this_role is not None and this_role != "chief":
        rows = [r for r in rows if r.get("tuner_id") == this_role]
    baseline = instance.baseline or _read_json(os.path.join(project, BASELINE_FILE))
    baseline = dict(baseline) if baseline is not None else None
    result = TuneResult(rows, baseline, project, time.time() - start, budget, (x, y))
    if this_role is None or this_role == "chief":
        if tests is not None and result.best is not None:
            # The test split's one use: the chosen artifact and the baseline, after choosing.
            result.best["test_accuracy"] = _test_accuracy(
                os.path.join(project, f"trial_{result.best['trial_id']}", "model.tflite"), *tests)
            baseline["test_accuracy"] = _test_accuracy(
                os.path.join(project, "baseline_float32.tflite"), *tests)
            if log_dir:
                trial_log.log_test_accuracy(log_dir, result.best)
        trial_log.write_trials(rows, os.path.join(project, "trials.json"),
                               os.path.join(project, "trials.csv"))
    return result
