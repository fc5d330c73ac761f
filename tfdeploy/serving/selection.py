"""Choosing the runtime a model version's ``serving_default`` runs on (``--runtime``).

A version directory may hold, beside its SavedModel, the other artifacts exported from the
same model (``assets.extra/artifacts.json``: float/int8 ``.tflite``, ``.onnx``). With
``--runtime auto`` the server, at load:

1. loads every artifact in each runtime that can run it (LiteRT, ONNX Runtime, OpenVINO);
   one that cannot load is skipped, and the log says why;
2. verifies each against the SavedModel on the version's verification set (a few hundred real
   inputs the exporter wrote beside the artifacts, ``assets.extra/verification_inputs.npz``,
   SHA-checked; `verification_records`), or on its warmup records when it has none, within the
   tolerances of its precision (``tfdeploy._tolerances``: the same table ``td.verify``
   reports with; float outputs within ``atol``, top classes agreeing on ``min_agreement``
   of the examples);
3. times each, and the SavedModel, at batch 1 in turns, each call after `IDLE_SECONDS` asleep
   as a served call follows its REST round trip: TensorFlow with its intra-op pool (every
   core this process may use), each file candidate at 1 thread and at every core (unless
   ``--runtime_threads`` gives the count), keeping every core only when both its median and
   its fastest call beat 1 thread's by `THREADS_MARGIN` (``timings`` holds both settings,
   ``threads`` the one kept): ``p50_ms`` is the median of the rounds' medians, ``fastest_ms``
   the median of the rounds' fastest calls, ``cpu_ms`` the process CPU time per call (all its
   threads) — what a call costs when concurrent requests share the cores;
4. serves the one that passed with the lowest ``fastest_ms``, if it beats the SavedModel's.
   The fastest call is what the artifact costs when the cores are free; on a loaded machine
   the medians mostly measure the other processes (TensorFlow's own thread pool then wins
   turns that a single-threaded interpreter loses), and the choice flipped between runs.
   Candidates whose ``fastest_ms`` is within `CHOICE_MARGIN` of the lowest are a tie that
   one call cannot break, but a server's clients can: they are timed again under
   `concurrent_callers` concurrent calls (``concurrent``: calls/s and CPU per call, in turns),
   and the one with the most calls/s is served. MobileNetV2's three int8 files (LiteRT,
   ONNX Runtime, OpenVINO) took 3.2-3.5 ms alone, in an order that changed from run to run,
   while 8 concurrent callers got 300-340, 340-400 and 410-510 calls/s out of them.

An artifact that fails verification or is slower is never chosen silently: the log, the
model's metadata (``GET /v1/models/NAME/metadata``: ``metadata.runtime``) and Prometheus
(``:tfdeploy:serving:runtime_selected``, ``..._candidate_p50_microseconds``, both with a
``threads`` label, and ``..._candidate_concurrent_calls_per_second`` for a tie) say what was
measured and why. Without warmup records there is nothing to verify on, so ``auto`` stays
on TensorFlow and says so. A named runtime (``litert``, ``onnxruntime``, ``openvino``) is
loaded without verifying; without ``--runtime_threads`` its file is timed at 1 thread and at
every core, by the same rule; when it cannot load, the version serves on TensorFlow, never
unavailable.
"""

import functools
import logging
import threading
import time

import numpy as np

from tfdeploy._tolerances import TOLERANCES
from tfdeploy.runtime.artifacts import read_verification
from tfdeploy.serving.runtimes import DEFAULT_SIGNATURE, candidates, load_runtime
from tfdeploy.serving.runtimes.base import default_threads

log = logging.getLogger("tfdeploy.serving")


#: Idle time before each timed call: a served request's model call follows the rest of its
#: REST round trip (about this long for a small body), long enough for a runtime's idle
#: worker threads to go to sleep, and every call of several threads then pays their wake-up
#: (quickstart CNN, LiteRT float at 2 threads: p50 0.71 ms with this gap, 0.61 without).
IDLE_SECONDS = 0.0005


def _times_ms(fn, feeds, calls, idle=IDLE_SECONDS):
    """``(median, fastest, CPU per call)`` in ms of ``calls`` calls of ``fn(feeds)``, each
    after ``idle`` s asleep; the CPU time is the process's over the whole loop (every thread: a
    runtime's own worker threads count, spinning between calls included)."""
    times = []
    cpu = time.process_time()
    for _ in range(calls):
        if idle:
            time.sleep(idle)
        start = time.perf_counter()
        fn(feeds)
        times.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu) / calls
    return float(np.median(times)) * 1000, float(np.min(times)) * 1000, cpu * 1000


#: Records per call when verifying on the verification set.
VERIFY_BATCH = 32


def verification_records(servable, key, records, batch=VERIFY_BATCH):
    """``(feeds, used)``: what ``auto`` verifies the artifacts on, and a dict saying which
    (float32 artifacts: its first batch, `_records_for`).

    The version's verification set (`tfdeploy.runtime.artifacts.read_verification`), in
    batches of ``batch`` records checked against the signature; else (none written, or one
    that fails its SHA-256 or the signature: the log says why) the warmup ``records``."""
    used = {"on": "warmup records", "records": int(sum(len(next(iter(f.values())))
                                                       for f in records))}
    try:
        found = read_verification(servable.path)
        if found is None:
            return records, used
        inputs, entry = found
        name = entry.get("input")
        feeds = [servable.validators[key].check({name: inputs[i:i + batch]})
                 for i in range(0, len(inputs), batch)]
    except Exception as exc:  # noqa: BLE001  (ArtifactError, or a ServingError from check)
        reason = str(exc).splitlines()[0]
        log.warning("Model %s version %d: --runtime auto cannot use the verification set (%s);"
                    " verifying on the warmup records", servable.name, servable.version, reason)
        return records, {**used, "verification_set_rejected": reason}
    return feeds, {"on": "verification set", "records": int(len(inputs)),
                   "file": entry.get("file"), "source": entry.get("source")}


def _records_for(precision, records, used):
    """The records a ``precision`` artifact is verified on: a float32 file computes what the
    SavedModel computes, so one batch of the verification set shows whether it does (within
    1e-4); a reduced-precision file changes near-tied answers, and only the whole set can
    show a 1-2 point drop."""
    if precision == "float32" and used.get("on") == "verification set":
        return records[:1]
    return records


def _once(call):
    """``call(key, feeds)`` that computes each feeds' answer once (the SavedModel's answers
    are the reference for every candidate)."""
    answers = {}

    def reference(key, feeds):
        if (key, id(feeds)) not in answers:
            answers[(key, id(feeds))] = call(key, feeds)
        return answers[(key, id(feeds))]
    return reference


def verify(reference, runtime, key, records, precision):
    """``(passed, details)``: ``runtime`` against ``reference`` (``call(key, feeds)``) on
    every record, within the tolerances of ``precision``."""
    tol = TOLERANCES.get(precision) or TOLERANCES["int8"]
    worst, agree, total = 0.0, 0, 0
    for feeds in records:
        want, got = reference(key, feeds), runtime.call(key, feeds)
        missing = sorted(set(want) - set(got))
        if missing:
            return False, {"reason": f"outputs {missing} missing"}
        top = None
        for name, w in want.items():
            w, g = np.asarray(w), np.asarray(got[name])
            if w.shape != g.shape:
                return False, {"reason": f"output {name!r} has shape {list(g.shape)}, the "
                                         f"SavedModel's {list(w.shape)}"}
            if w.dtype.kind == "f":
                worst = max(worst, float(np.max(np.abs(w.astype(np.float64) - g))) if w.size
                            else 0.0)
                if top is None and w.ndim == 2 and w.shape[1] > 1:
                    top = (np.argmax(w, axis=1), np.argmax(g, axis=1))
        if top is not None:
            agree += int(np.sum(top[0] == top[1]))
            total += len(top[0])
    details = {"max_abs_diff": round(worst, 6),
               "agreement": None if not total else round(agree / total, 4),
               "examples": total, "tolerance": tol}
    if tol["atol"] is not None and worst > tol["atol"]:
        return False, {**details, "reason": f"max |difference| {worst:.3g} > atol "
                                            f"{tol['atol']:g} for {precision}"}
    if total and agree / total < tol["min_agreement"]:
        return False, {**details, "reason": f"top class agrees on {agree}/{total} examples, "
                                            f"below {tol['min_agreement']:.0%} for {precision}"}
    return True, details


def choose(servable, policy, records, threads=None, rounds=5, calls=20):
    """Load the runtime ``policy`` asks for on ``servable`` (a Servable whose TensorFlow
    signatures are loaded); return ``(runtime or None, report)``. ``records``: checked
    ``serving_default`` feeds from the warmup file."""
    path, key = servable.path, DEFAULT_SIGNATURE
    report = {"policy": policy, "serving": {"runtime": "tensorflow", "artifact": "saved_model"},
              "candidates": []}
    if policy == "tensorflow":
        return None, report
    offered = [(name, entry) for name, entry in candidates(path) if name != "tensorflow"]
    if policy != "auto":
        offered = [(n, e) for n, e in offered if n == policy]
        if not offered:
            report["reason"] = (f"the version has no artifact the {policy} runtime runs; "
                                "serving the SavedModel")
            log.warning("Model %s version %d: %s", servable.name, servable.version,
                        report["reason"])
            return None, report
    timing_records = records
    if policy == "auto":
        records, report["verified_on"] = verification_records(servable, key, records)
        reference = _once(servable.tensorflow_call)
    if policy == "auto" and not records:
        report["reason"] = ("no warmup records or verification set to verify the artifacts "
                            "on (export with warmup_data=...); serving the SavedModel")
        log.warning("Model %s version %d: --runtime auto: %s", servable.name, servable.version,
                    report["reason"])
        return None, report
    loaded = []
    for name, entry in offered:
        row = {"runtime": name, "artifact": entry.get("name"), "precision":
               entry.get("precision"), "file": entry.get("file")}
        report["candidates"].append(row)
        try:
            runtime = load_runtime(name, path, entry, num_threads=threads)
        except Exception as exc:  # noqa: BLE001  (missing library, corrupt file: skip it)
            row.update(passed=False, reason=f"cannot load: {str(exc).splitlines()[0]}")
            continue
        row["threads"] = runtime.num_threads
        if key not in runtime.signature_keys:
            row.update(passed=False, reason=f"runs {sorted(runtime.signature_keys)}, not {key}")
            runtime.close()
            continue
        if policy != "auto":
            row["passed"] = None
            runtime = _thread_settings(servable, row, runtime, threads, timing_records,
                                       rounds, calls)
            return runtime, _serving(report, row, runtime)
        try:
            precision = entry.get("precision") or "float32"
            passed, details = verify(reference, runtime, key, _records_for(
                precision, records, report["verified_on"]), precision)
        except Exception as exc:  # noqa: BLE001  (a runtime that fails on the records)
            passed, details = False, {"reason": f"failed: {str(exc).splitlines()[0]}"}
        if not passed:
            details["reason"] += f" (on the {report['verified_on']['on']})"
        row.update(passed=passed, verified_on=report["verified_on"]["on"], **details)
        if passed:
            loaded.append((row, runtime))
        else:
            runtime.close()
    if policy != "auto":
        report["reason"] = "the runtime could not load; serving the SavedModel"
        log.warning("Model %s version %d: --runtime %s: %s (%s)", servable.name,
                    servable.version, policy, report["reason"],
                    "; ".join(r.get("reason", "") for r in report["candidates"]))
        return None, report
    feeds = _timing_feeds(timing_records or records, loaded)
    tf_row = {"runtime": "tensorflow", "artifact": "saved_model", "precision": "float32",
              "passed": True, "threads": servable.tensorflow_threads}
    settings = [(tf_row, None)]
    for row, runtime in loaded:
        settings += _with_one_thread(path, row, runtime, threads)
    _time_in_turns(servable, key, settings, feeds, rounds, calls)
    loaded = [(row, _keep_faster_setting(servable, row, [r for w, r in settings if w is row]))
              for row, _ in loaded]
    report["candidates"].insert(0, tf_row)
    timed = [(tf_row, None)] + loaded
    lone_row, _ = min(timed, key=lambda t: t[0]["fastest_ms"])
    near = [t for t in timed
            if t[0]["fastest_ms"] <= lone_row["fastest_ms"] * (1 + CHOICE_MARGIN)]
    if len(near) > 1:   # a tie alone: the clients' concurrent calls break it
        _time_concurrent_in_turns(servable, key, near, feeds, rounds)
        best_row, best = max(near, key=lambda t: t[0]["concurrent"]["calls_per_s"])
        report["tie"] = {"margin": CHOICE_MARGIN, "callers": concurrent_callers(),
                         "candidates": [f"{r['runtime']}/{r['artifact']}" for r, _ in near]}
        if best_row is not lone_row:
            log.info("Model %s version %d: %s/%s and %s/%s are within %d%% alone (fastest call "
                     "%.4f vs %.4f ms); under %d concurrent calls %.1f vs %.1f calls/s: serving "
                     "%s/%s", servable.name, servable.version, best_row["runtime"],
                     best_row["artifact"], lone_row["runtime"], lone_row["artifact"],
                     round(CHOICE_MARGIN * 100), best_row["fastest_ms"], lone_row["fastest_ms"],
                     concurrent_callers(), best_row["concurrent"]["calls_per_s"],
                     lone_row["concurrent"]["calls_per_s"], best_row["runtime"],
                     best_row["artifact"])
    else:
        best_row, best = near[0]
    for row, runtime in timed:
        if row is best_row:
            continue
        if "concurrent" in row:
            why = (f"passed and within {round(CHOICE_MARGIN * 100)}% of the fastest call "
                   f"({row['fastest_ms']} ms against {lone_row['fastest_ms']} ms), but "
                   f"{row['concurrent']['calls_per_s']} calls/s under "
                   f"{row['concurrent']['callers']} concurrent calls against "
                   f"{best_row['concurrent']['calls_per_s']} for "
                   f"{best_row['runtime']}/{best_row['artifact']}")
        else:
            why = (f"passed, but {row['fastest_ms']} ms (fastest call) against "
                   f"{lone_row['fastest_ms']} ms for {lone_row['runtime']}/"
                   f"{lone_row['artifact']}")
        row["reason"] = row.get("reason") or why
        if runtime is not None:
            runtime.close()
    for row in report["candidates"]:
        if row.get("passed") is False:
            log.warning("Model %s version %d: --runtime auto skips %s/%s: %s", servable.name,
                        servable.version, row["runtime"], row["artifact"], row.get("reason"))
    if best is None:
        report["reason"] = "no verified artifact is faster than the SavedModel"
        log.info("Model %s version %d: --runtime auto serves the SavedModel (TensorFlow, "
                 "%.3f ms): %s", servable.name, servable.version, tf_row["p50_ms"],
                 report["reason"])
        return None, report
    return best, _serving(report, best_row, best)


#: A file runtime keeps its N threads per call only when, at N threads, both its median and
#: its fastest call (each after `IDLE_SECONDS` idle, as served) are at least this much faster
#: than at 1 thread: N threads cost up to N times the CPU per call and wake the idle threads
#: on every request, which a sub-millisecond model does not win back (quickstart CNN, LiteRT
#: int8: p50 0.156 ms at 1 thread, 0.327 at 2; MobileNetV2 int8: 4.88 ms at 1, 2.88 at 2).
THREADS_MARGIN = 0.10


#: Candidates whose fastest call alone is within this fraction of the fastest candidate's
#: are a tie, broken by their calls/s under `concurrent_callers` concurrent calls. At load the
#: same three MobileNetV2 int8 files came out 3.1-3.6 ms alone in an order that changed from
#: load to load (one 16 % apart), while in process, in turns, they were within 8 %.
CHOICE_MARGIN = 0.25

#: Seconds each tied candidate runs concurrent calls, per round.
CONCURRENT_SECONDS = 0.1


def concurrent_callers():
    """Concurrent callers a tie is timed under: two per usable core, so every core has a call
    to run while another call's thread is between its calls."""
    return max(2, 2 * default_threads())


def _throughput(fn, feeds, callers, seconds):
    """``(calls/s, CPU ms per call)`` of ``callers`` threads calling ``fn(feeds)`` back to
    back for ``seconds`` (each finishes the call it is in); the CPU time is the process's
    (every thread's)."""
    barrier, stop, counts, errors = threading.Barrier(callers + 1), threading.Event(), [], []

    def loop():
        n = 0
        barrier.wait()
        try:
            while not stop.is_set():
                fn(feeds)
                n += 1
        except Exception as exc:  # noqa: BLE001  (raised below, in the caller's thread)
            errors.append(exc)
        counts.append(n)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(callers)]
    for t in threads:
        t.start()
    cpu = time.process_time()
    barrier.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if errors:
        raise errors[0]
    calls = max(1, sum(counts))
    return calls / elapsed, cpu * 1000 / calls


def _time_concurrent_in_turns(servable, key, settings, feeds, rounds,
                              seconds=CONCURRENT_SECONDS):
    """Time every ``(row, runtime)`` (None: the SavedModel) under `concurrent_callers`
    concurrent batch-1 calls, in turns; the medians of the rounds go to
    ``row["concurrent"]``."""
    callers, measured = concurrent_callers(), {}
    for _, runtime in settings:   # untimed: opens the runners overlapping calls run on
        _throughput(_caller(servable, key, runtime), feeds, callers, seconds / 2)
    for _ in range(rounds):
        for i, (row, runtime) in enumerate(settings):
            measured.setdefault(i, []).append(
                _throughput(_caller(servable, key, runtime), feeds, callers, seconds))
    for i, (row, _) in enumerate(settings):
        rates, cpu = zip(*measured[i])
        row["concurrent"] = {"callers": callers,
                             "calls_per_s": round(float(np.median(rates)), 1),
                             "cpu_ms": round(float(np.median(cpu)), 4)}


def _timing_feeds(records, loaded):
    """One batch-1 ``serving_default`` input to time on: the first record's first sample, or
    (a named runtime on a version without warmup records) zeros of the signature's shape."""
    if records:
        return {k: v[:1] for k, v in records[0].items()}
    return loaded[0][1].zeros()


def _with_one_thread(path, row, runtime, threads):
    """``[(row, runtime), (row, the same artifact at 1 thread)]`` to time both, when nobody
    gave a thread count and the runtime uses several; ``[(row, runtime)]`` otherwise (the
    reason goes to ``row["threads_chosen_by"]``)."""
    if threads:
        row["threads_chosen_by"] = "--runtime_threads"
        return [(row, runtime)]
    if runtime.num_threads <= 1:
        row["threads_chosen_by"] = "one usable core"
        return [(row, runtime)]
    try:
        single = load_runtime(row["runtime"], path, runtime.artifact, num_threads=1)
    except Exception as exc:  # noqa: BLE001  (it loaded once: keep that one)
        row["threads_chosen_by"] = f"1 thread cannot load: {str(exc).splitlines()[0]}"
        return [(row, runtime)]
    return [(row, runtime), (row, single)]


def _caller(servable, key, runtime):
    """``fn(feeds)`` calling ``runtime``'s ``key`` (None: the SavedModel's, through
    TensorFlow); a runtime's is ``functools.partial(runtime.call, key)``, which the tests'
    clocks read the runtime back from."""
    if runtime is None:
        return lambda feeds: servable.tensorflow_call(key, feeds)
    return functools.partial(runtime.call, key)


def _time_in_turns(servable, key, settings, feeds, rounds, calls):
    """Time every ``(row, runtime)`` (None: the SavedModel) at batch 1, in turns so each sees
    the same machine; the figures go to ``row["timings"][threads]``."""
    measured = {}
    for _ in range(rounds):
        for i, (row, runtime) in enumerate(settings):
            measured.setdefault(i, []).append(
                _times_ms(_caller(servable, key, runtime), feeds, calls))
    for i, (row, runtime) in enumerate(settings):
        medians, fastest, cpu = zip(*measured[i])
        figures = {"p50_ms": round(float(np.median(medians)), 4),
                   "fastest_ms": round(float(np.median(fastest)), 4),
                   "cpu_ms": round(float(np.median(cpu)), 4)}
        threads = row["threads"] if runtime is None else runtime.num_threads
        row.setdefault("timings", {})[str(threads)] = figures
        if runtime is None:
            row.update(figures)
            del row["timings"]


def _keep_faster_setting(servable, row, runtimes):
    """The runtime of ``runtimes`` (one artifact at N threads, and maybe at 1) to serve with:
    N threads only when they beat 1 thread by `THREADS_MARGIN` (median and fastest). The other is
    closed; the row gets the kept setting's figures, ``threads`` and both ``timings``."""
    kept = runtimes[0]
    if len(runtimes) > 1:
        many, one = runtimes
        at_many, at_one = row["timings"][str(many.num_threads)], row["timings"]["1"]
        kept = many if all(at_many[k] <= at_one[k] * (1 - THREADS_MARGIN)
                           for k in ("p50_ms", "fastest_ms")) else one
        (one if kept is many else many).close()
        row["threads_chosen_by"] = "measured"
        log.info("Model %s version %d: %s/%s takes %.4f ms (fastest %.4f) at 1 thread, %.4f "
                 "ms (fastest %.4f) at %d: serving with %d thread%s", servable.name,
                 servable.version, row["runtime"], row["artifact"], at_one["p50_ms"],
                 at_one["fastest_ms"], at_many["p50_ms"], at_many["fastest_ms"],
                 many.num_threads, kept.num_threads, "s" if kept.num_threads > 1 else "")
    row["threads"] = kept.num_threads
    row.update(row["timings"][str(kept.num_threads)])
    return kept


def _thread_settings(servable, row, runtime, threads, records, rounds, calls):
    """A named runtime (``--runtime litert`` ...): keep its N threads or 1, by measurement
    when nobody gave a thread count (`_keep_faster_setting`)."""
    settings = _with_one_thread(servable.path, row, runtime, threads)
    if len(settings) == 1:
        return runtime
    _time_in_turns(servable, DEFAULT_SIGNATURE, settings,
                   _timing_feeds(records, [(row, runtime)]), rounds, calls)
    return _keep_faster_setting(servable, row, [r for _, r in settings])


def _serving(report, row, runtime):
    report["serving"] = {k: row.get(k) for k in ("runtime", "artifact", "precision", "file",
                                                 "p50_ms", "fastest_ms", "cpu_ms", "threads",
                                                 "threads_chosen_by", "timings", "concurrent")
                         if k != "concurrent" or k in row}
    log.info("Serving %s with %s (%s, %s%s)", runtime.version_dir, row["runtime"],
             row.get("artifact"), row.get("precision"),
             f", {row['p50_ms']} ms at batch 1" if row.get("p50_ms") is not None else "")
    return report
