"""The tuner's best artifact vs fixed recipes; XLA, mixed precision, tf.data; 1 vs 2 workers.

    python benchmarks/bench_tune.py [--data DIR] [--max-trials 12] --json docs/bench_tune.json

On the quickstart CNN (width 0.25) and data, in one run. Splits: the baseline, the hand
plans and the tuner train and calibrate on ``train/`` less a held-out validation split
(``--validation-split`` of each class, stratified, seeded); the best hand plan and the
tuner's best trial are chosen on that validation split; ``test/`` is read only to report
``test_accuracy`` of the baseline, the quickstart recipe (fixed, nothing chosen), the chosen
hand plan and the tuner's chosen artifact.
- ``tuned``: `tfdeploy.tune.search` (Bayesian, objective ``--objective``: by default half
  gzip bytes, half p50 latency; 1-point budget; starting from `tfdeploy.tune.INITIAL_POINTS`)
  and its best artifact, every trial listed, vs ``quickstart`` (the quickstart's fixed
  recipe: 80 % pruning, then pruning-preserving QAT, int8) and vs ``best_hand_plan`` (the
  best of bench_compression.py's three hand-written plans within 1 point: smallest int8
  gzip). Each: gzip bytes, p50 latency
  (LiteRT, batch 1, one thread), accuracy, wall time to produce it. ``tuned_vs_best_hand``
  compares gzip bytes and p50 re-measured side by side (alternating rounds, medians).
- ``xla``: training step time with ``jit_compile`` off/on (plain and pruned model), and the
  SavedModel's p50 with the serving function XLA-compiled or not.
- ``mixed_precision``: training step time float32 vs ``mixed_bfloat16`` (and float16).
- ``input_pipeline``: `tfdeploy.data.input_pipeline_share` with cache/prefetch/parallel map
  off vs on.
- ``workers``: trials per minute of a distributed search (keras-tuner chief + 1 worker vs
  chief + 2 workers, ``tfdeploy tune --distributed``) on this machine: over the wall time of
  the processes (with their start-up) and over the span of the trials themselves.
``--sections`` runs a subset (e.g. ``--sections hand,tune,workers``).
Timings depend on the machine's load: compare the ratios measured side by side here.
"""

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SECTIONS = ("xla", "mixed_precision", "input_pipeline", "quickstart", "hand", "tune", "workers")


def _artifact(td, model, path, quantization, train, val, samples):
    """Export and measure on the validation split (``val``); `_test` adds the test split."""
    td.export.tflite(model, path, quantization, representative_data=train)
    runner = td.runtime.load(path, num_threads=1)
    return {"quantization": quantization, "gzip_bytes": td.verify.gzip_bytes(path),
            "latency_p50_ms": round(td.verify.latency_ms(runner, val[0], samples=samples), 4),
            "validation_accuracy": round(td.verify.accuracy(runner, *val), 4)}


def _test(td, row, path, test):
    """``row`` with ``test_accuracy`` of the artifact at ``path``: for a chosen artifact."""
    return dict(row, test_accuracy=round(td.verify.accuracy(td.runtime.load(path), *test), 4))


def side_by_side(td, paths, x, samples, rounds=5):
    """p50 latency of each artifact, measured in alternating rounds (LiteRT, batch 1, one
    thread), so that machine load falls on all of them alike: medians over the rounds."""
    import numpy as np

    runners = {name: td.runtime.load(path, num_threads=1) for name, path in paths.items()}
    names = list(runners)
    rows = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            rows[name].append(round(td.verify.latency_ms(runners[name], x, samples=samples), 4))
    return {"rounds": rounds, "samples": samples, "p50_ms_by_round": rows,
            "median_p50_ms": {n: round(float(np.median(v)), 4) for n, v in rows.items()}}


def compare(td, hand, tuned, paths, x, samples):
    """The tuned artifact vs the best hand plan's: gzip bytes, and p50 measured side by side."""
    side = side_by_side(td, paths, x, samples)
    fast = side["median_p50_ms"]
    return {"gzip_ratio": round(hand["gzip_bytes"] / tuned["gzip_bytes"], 3),
            "side_by_side": side,
            "latency_ratio": round(fast["best_hand"] / fast["tuned"], 3),
            "at_least_as_small": tuned["gzip_bytes"] <= hand["gzip_bytes"],
            "at_least_as_fast": fast["tuned"] <= fast["best_hand"],
            "target_met": tuned["gzip_bytes"] <= hand["gzip_bytes"]
            and fast["tuned"] <= fast["best_hand"]}


def _step_ms(keras, model, data, jit, steps, loss="sparse_categorical_crossentropy",
             callbacks=()):
    model.compile(keras.optimizers.Adam(1e-4), loss, jit_compile=jit)
    model.fit(data.take(steps), epochs=1, verbose=0, callbacks=list(callbacks))  # trace
    start = time.perf_counter()
    model.fit(data.take(steps), epochs=1, verbose=0, callbacks=list(callbacks))
    return round(1e3 * (time.perf_counter() - start) / steps, 3)


def _workers(args, model_path, data_dir, out_dir, n_workers):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    space = {"slim_ratio": 0.0, "sparsity_kind": "unstructured", "sparsity": [0.5, 0.7, 0.8],
             "schedule": "polynomial_decay", "clusters": 0, "qat": False,
             "quantization": ["dynamic", "float16"], "epochs": 1}
    directory = os.path.join(out_dir, f"workers_{n_workers}")
    common = [sys.executable, "-m", "tfdeploy.cli", "tune", model_path, "--data", data_dir,
              "--budget", "100", "--max-trials", str(args.worker_trials), "--directory",
              directory, "--space", json.dumps(space), "--latency-samples", "20",
              "--oracle-port", str(port), "--output", os.path.join(directory, "best")]
    start = time.time()
    roles = ["chief"] + [f"worker{i}" for i in range(n_workers)]
    procs = [subprocess.Popen(common + ["--distributed", r], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for r in roles]
    codes = [p.wait() for p in procs]
    seconds = time.time() - start
    rows = []
    project = os.path.join(directory, "compression")
    for name in sorted(os.listdir(project)) if os.path.isdir(project) else []:
        path = os.path.join(project, name, "result.json")
        if name.startswith("trial_") and os.path.exists(path):
            with open(path) as f:
                rows.append(json.load(f))
    span = (max(r["started"] + r["seconds"] for r in rows) - min(r["started"] for r in rows)) \
        if rows else None
    return {"workers": n_workers, "trials": len(rows), "seconds": round(seconds, 1),
            "trials_per_minute": round(60 * len(rows) / seconds, 3),
            "trial_span_seconds": round(span, 1) if span else None,
            "trials_per_minute_in_span": round(60 * len(rows) / span, 3) if span else None,
            "trials_by_worker": {r["tuner_id"]: sum(1 for q in rows
                                                    if q["tuner_id"] == r["tuner_id"])
                                 for r in rows},
            "mean_trial_seconds": round(sum(r["seconds"] for r in rows) / len(rows), 1)
            if rows else None,
            "exit_codes": codes}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="image dir with train/ and test/ (default digits)")
    p.add_argument("--width", type=float, default=0.25, help="CNN width (quickstart: 0.25)")
    p.add_argument("--epochs", type=int, default=8, help="baseline training epochs")
    p.add_argument("--fine-tune-epochs", type=int, default=4, help="hand plans' epochs per stage")
    p.add_argument("--max-trials", type=int, default=12, help="tuner trials")
    p.add_argument("--worker-trials", type=int, default=6, help="trials per workers run")
    p.add_argument("--samples", type=int, default=200, help="latency samples per artifact")
    p.add_argument("--steps", type=int, default=20, help="training steps timed for XLA etc.")
    p.add_argument("--skip-workers", action="store_true", help="skip the 1 vs 2 workers runs")
    p.add_argument("--tune-epochs", default="2,4",
                   help="the tuner's fine-tuning epochs choices per stage (default 2,4)")
    p.add_argument("--objective", default="mix", choices=["size", "latency", "mix"],
                   help="the tuner's objective (default mix: half gzip bytes, half p50)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    p.add_argument("--partial", default=None, help="also write the report so far to this file")
    p.add_argument("--out", default=None, help="directory for the artifacts (default: temp)")
    p.add_argument("--validation-split", type=float, default=0.2,
                   help="share of each train/ class held out to choose on (default 0.2)")
    p.add_argument("--json", default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    args.sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown --sections {unknown}; choose from {list(SECTIONS)}")
    if args.skip_workers and "workers" in args.sections:
        args.sections.remove("workers")

    import tfdeploy as td
    import tfdeploy.tune as tune
    from tfdeploy._keras import keras
    from tfdeploy.compress.prune import copy_model

    with contextlib.redirect_stdout(sys.stderr):  # progress to stderr, JSON alone on stdout
        report = _run(args, td, tune, keras, copy_model)
    json.dump(report, sys.stdout, indent=2)
    print()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return 0


def _save(args, report):
    """Write the report so far to --partial (a long run on a loaded machine keeps its results)."""
    if args.partial:
        with open(args.partial, "w") as f:
            json.dump(report, f, indent=2)


def _run(args, td, tune, keras, copy_model):
    C = td.compress
    out_dir = args.out or tempfile.mkdtemp(prefix="bench_tune_")
    os.makedirs(out_dir, exist_ok=True)
    data_dir = args.data or td.data.write_digits(os.path.join(out_dir, "digits"))
    split = dict(validation_split=args.validation_split, seed=0)
    train = td.data.image_dataset(os.path.join(data_dir, "train"), shuffle=True,
                                  subset="training", **split)
    val = td.data.to_numpy(td.data.image_dataset(os.path.join(data_dir, "train"),
                                                 subset="validation", **split))
    test = td.data.to_numpy(td.data.image_dataset(os.path.join(data_dir, "test")))
    x = val[0]  # inputs for latency timing
    shape, n_classes = tuple(x.shape[1:]), len(train.class_names)
    loss = "sparse_categorical_crossentropy"
    ft, ft2 = args.fine_tune_epochs, max(1, args.fine_tune_epochs // 2)

    keras.utils.set_random_seed(0)
    base = td.models.build_cnn(shape, n_classes, width=args.width)
    base.compile(keras.optimizers.Adam(1e-3), loss, ["accuracy"])
    base.fit(train, epochs=args.epochs, verbose=0)
    model_path = os.path.join(out_dir, "baseline.h5")
    base.save(model_path)
    base_path = os.path.join(out_dir, "baseline.tflite")
    report = {"width": args.width, "epochs": args.epochs, "budget_points": 1.0,
              "splits": {"train": train.num_examples, "validation": int(len(val[1])),
                         "test": int(len(test[1])), "validation_split": args.validation_split,
                         "chosen_on": "validation", "test_read_for": "chosen artifacts only"},
              "baseline": _test(td, _artifact(td, base, base_path, "float32", train, val,
                                              args.samples), base_path, test)}
    base_acc = report["baseline"]["validation_accuracy"]
    steps = min(args.steps, int(train.cardinality()))  # timed steps (xla, mixed, input)

    # 4. XLA: training step time, and the exported serving function
    if "xla" in args.sections:
        xla = {"steps": steps}
        for jit in (False, True):
            xla[f"plain_step_ms_jit_{jit}"] = _step_ms(keras, copy_model(base), train, jit,
                                                       steps)
            p_model = C.prune(base, 0.8, epochs=2, steps_per_epoch=steps)
            xla[f"pruned_step_ms_jit_{jit}"] = _step_ms(keras, p_model, train, jit, steps,
                                                        callbacks=C.callbacks(p_model))
        xla["plain_speedup"] = round(xla["plain_step_ms_jit_False"]
                                     / xla["plain_step_ms_jit_True"], 3)
        xla["pruned_speedup"] = round(xla["pruned_step_ms_jit_False"]
                                      / xla["pruned_step_ms_jit_True"], 3)
        for jit in (False, True):
            path = td.export.saved_model(base, os.path.join(out_dir, f"sm_jit_{jit}"),
                                         jit_compile=jit)
            runner = td.runtime.load(path)
            xla[f"saved_model_p50_ms_jit_{jit}"] = round(
                td.verify.latency_ms(runner, x, samples=args.samples), 4)
            xla[f"saved_model_accuracy_jit_{jit}"] = round(td.verify.accuracy(runner, *val), 4)
        xla["saved_model_speedup"] = round(xla["saved_model_p50_ms_jit_False"]
                                           / xla["saved_model_p50_ms_jit_True"], 3)
        report["xla"] = xla
        _save(args, report)

    # 5. mixed precision (a documented keyword: Stage(precision=...) / with_policy)
    if "mixed_precision" in args.sections:
        mp = {}
        for policy in ("float32", "mixed_bfloat16", "mixed_float16"):
            mp[f"step_ms_{policy}"] = _step_ms(keras, C.with_policy(base, policy), train, False,
                                               steps)
        mp["bfloat16_speedup"] = round(mp["step_ms_float32"] / mp["step_ms_mixed_bfloat16"], 3)
        mp["float16_speedup"] = round(mp["step_ms_float32"] / mp["step_ms_mixed_float16"], 3)
        report["mixed_precision"] = mp
        _save(args, report)

    # 6. the input pipeline's share of step time, untuned vs tuned tf.data
    if "input_pipeline" in args.sections:
        pipe = {}
        for label, kw in (("untuned", dict(cache=False, prefetch=False, parallel=False)),
                          ("tuned", dict(cache=True, prefetch=True, parallel=True))):
            ds = td.data.image_dataset(os.path.join(data_dir, "train"), shuffle=True, seed=0, **kw)
            pipe[label] = td.data.input_pipeline_share(base, ds, steps=steps)
        pipe["epoch_speedup"] = round(pipe["untuned"]["fit_seconds"]
                                      / pipe["tuned"]["fit_seconds"], 3)
        report["input_pipeline"] = pipe
        _save(args, report)

    # 1. the quickstart's fixed recipe
    if "quickstart" in args.sections:
        keras.utils.set_random_seed(0)
        start = time.time()
        pruned = C.prune(base, 0.8, epochs=ft, steps_per_epoch=train)
        pruned.compile(keras.optimizers.Adam(5e-4), loss, ["accuracy"])
        pruned.fit(train, epochs=ft, verbose=0, callbacks=C.callbacks(pruned))
        qat = C.quantize(C.strip(pruned), preserve="sparsity", calibration_data=train)
        qat.compile(keras.optimizers.Adam(1e-4), loss, ["accuracy"])
        qat.fit(train, epochs=ft2, verbose=0, callbacks=C.callbacks(qat))
        path = os.path.join(out_dir, "quickstart_int8.tflite")
        row = _test(td, _artifact(td, qat, path, "int8", train, val, args.samples), path, test)
        report["quickstart"] = dict(row, seconds=round(time.time() - start, 1))
        _save(args, report)

    # 2. bench_compression.py's hand-written plans; the best within 1 point
    best_hand = None
    if "hand" in args.sections:
        plans = {
            "plan_slim_prune_cluster_qat": [
                C.Stage("slim", ratio=0.5, epochs=ft, learning_rate=5e-4),
                C.Stage("prune", target_sparsity=0.5, epochs=ft),
                C.Stage("cluster", n_clusters=16, epochs=ft2), C.Stage("quantize", epochs=ft2)],
            "plan_slim_cluster_qat": [
                C.Stage("slim", ratio=0.5, epochs=ft, learning_rate=5e-4),
                C.Stage("cluster", n_clusters=16, epochs=ft2), C.Stage("quantize", epochs=ft2)],
            "plan_slim_qat": [C.Stage("slim", ratio=0.5, epochs=ft, learning_rate=5e-4),
                              C.Stage("quantize", epochs=ft2)],
        }
        hand, hand_seconds = {}, 0.0
        for name, stages in plans.items():
            keras.utils.set_random_seed(0)
            start = time.time()
            model = C.apply_plan(base, stages, train).model
            row = _artifact(td, model, os.path.join(out_dir, f"{name}.tflite"), "int8", train,
                            val, args.samples)
            hand[name] = dict(row, seconds=round(time.time() - start, 1))
            hand_seconds += hand[name]["seconds"]
        within = [n for n in hand if 100 * (base_acc - hand[n]["validation_accuracy"]) <= 1.0]
        best_hand = min(within, key=lambda n: hand[n]["gzip_bytes"]) if within else None
        report["hand_plans"] = hand
        report["best_hand_plan"] = dict(
            _test(td, hand[best_hand], os.path.join(out_dir, f"{best_hand}.tflite"), test),
            name=best_hand, all_plans_seconds=round(hand_seconds, 1)) if best_hand else None
        _save(args, report)

    # 3. the tuner
    if "tune" in args.sections:
        result = tune.search(base, train, val, budget=1.0, objective=args.objective,
                             max_trials=args.max_trials, directory=os.path.join(out_dir, "tune"),
                             space={"epochs": [int(e) for e in args.tune_epochs.split(",")]},
                             latency_samples=50, verbose=1, test_data=test)
        tuned = None
        if result.best is not None:
            exported = result.export(os.path.join(out_dir, "tuned"))
            runner = td.runtime.load(exported["tflite"], num_threads=1)
            tuned = {"trial": result.best["trial_id"], "technique": result.best["technique"],
                     "quantization": result.best["quantization"],
                     "gzip_bytes": td.verify.gzip_bytes(exported["tflite"]),
                     "latency_p50_ms": round(
                         td.verify.latency_ms(runner, x, samples=args.samples), 4),
                     "validation_accuracy": round(
                         exported["verification"]["validation_accuracy"], 4),
                     "test_accuracy": round(exported["test_accuracy"], 4),
                     "verified": exported["verification"]["passed"],
                     "values": {k: v for k, v in result.best.items()
                                if k in tune.DEFAULT_SPACE}}
        report["tuned"] = dict(tuned or {}, objective=args.objective,
                               search_seconds=round(result.seconds, 1),
                               trials=len(result.trials), infeasible=len(result.infeasible),
                               initial_points=len(tune.INITIAL_POINTS),
                               all_trials=[{k: t.get(k) for k in (
                                   "trial_id", "technique", "status", "cost",
                                   "validation_accuracy", "test_accuracy",
                                   "accuracy_drop", "gzip_bytes", "latency_p50_ms", "seconds",
                                   "slim_ratio", "sparsity", "clusters", "quantization",
                                   "epochs", "learning_rate")} for t in result.trials])
        if tuned and best_hand:
            report["tuned_vs_best_hand"] = compare(
                td, report["best_hand_plan"], tuned,
                {"tuned": exported["tflite"],
                 "best_hand": os.path.join(out_dir, f"{best_hand}.tflite")}, x, args.samples)
        _save(args, report)

    # 7. distributed search throughput: chief + 1 worker vs chief + 2 workers
    if "workers" in args.sections:
        w = {"one": _workers(args, model_path, data_dir, out_dir, 1),
             "two": _workers(args, model_path, data_dir, out_dir, 2),
             "cpu_count": os.cpu_count()}
        for key in ("trials_per_minute", "trials_per_minute_in_span"):
            if w["one"][key] and w["two"][key]:
                w[f"speedup_{key}"] = round(w["two"][key] / w["one"][key], 3)
        report["workers"] = w
        _save(args, report)

    return report


if __name__ == "__main__":
    sys.exit(main())
