"""Benchmark an artifact in its own runtime: latency, throughput, memory, FLOP/s.

Latency is measured per call at batch size 1 (p50/p90/p99), throughput at a
larger batch. Peak memory is the process's resident high-water mark while the
artifact is loaded and run (Linux ``VmHWM``, reset first through
``/proc/self/clear_refs``). Achieved FLOP/s (FLOPs per inference × throughput)
is compared with this machine's peak, measured by a large float32 matmul.
"""

import os
import time

import numpy as np

from tfdeploy._table import render
from tfdeploy.errors import DataError

_PEAK = {}


def _status_bytes(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak():
    """Reset the resident high-water mark; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_bytes():
    """Current resident memory of this process in bytes (None if unknown)."""
    return _status_bytes("VmRSS")


def peak_rss_bytes():
    """Resident high-water mark of this process in bytes (None if unknown)."""
    value = _status_bytes("VmHWM")
    if value is None:
        import resource

        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return value


def matmul_peak_flops(sizes=(512, 1024, 2048), repeats=3):
    """This machine's measured float32 matmul peak in FLOP/s (cached per process).

    The best rate of square matmuls of each size in ``sizes``, run both by
    numpy's BLAS and by TensorFlow (oneDNN/Eigen) on all cores, best of
    ``repeats`` each: the practical float32 ceiling a CPU runtime can reach.
    Integer (int8) kernels can exceed it; their fraction is then above 1.
    """
    key = (tuple(sizes), repeats)
    if key not in _PEAK:
        import tensorflow as tf

        rng = np.random.default_rng(0)
        best = 0.0
        for n in sizes:
            a = rng.standard_normal((n, n), dtype=np.float32)
            b = rng.standard_normal((n, n), dtype=np.float32)
            ta, tb = tf.constant(a), tf.constant(b)
            for run in (lambda: a @ b, lambda: tf.matmul(ta, tb).numpy()):
                run()  # warm the thread pools
                for _ in range(repeats):
                    start = time.perf_counter()
                    run()
                    best = max(best, 2.0 * n ** 3 / (time.perf_counter() - start))
        _PEAK[key] = best
    return _PEAK[key]


class KerasTarget:
    """Run a Keras model as the serving graph would: one traced ``tf.function``, no ``predict``.

    ``model.predict`` adds tens of milliseconds of per-call overhead, so timing or
    evaluating a Keras model next to runtime runners uses this; ``run``/``predict``
    behave like a runner's (``run`` keys are the model's output names).
    """

    format = "keras"

    def __init__(self, model):
        import tensorflow as tf

        self.model = model
        self.path = None
        # one input of known rank: traced once for every batch size (without a signature,
        # the first two batch sizes each trace the model: a second of CPU for a MobileNet)
        inputs = getattr(model, "inputs", None) or []
        shape = tuple(inputs[0].shape) if len(inputs) == 1 else ()
        signature = [tf.TensorSpec((None,) + shape[1:], tf.float32)] if shape else None
        self._fn = tf.function(lambda x: model(x, training=False), input_signature=signature,
                               reduce_retracing=signature is None)
        self._names = list(getattr(model, "output_names", None) or ["output"])

    def _outputs(self, x):
        out = self._fn(np.asarray(x, np.float32))
        return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]

    def predict(self, x):
        return self._outputs(x)[0]

    def run(self, x):
        return dict(zip(self._names, self._outputs(x)))


def _as_target(target, threads):
    if isinstance(target, (str, os.PathLike)):
        from tfdeploy.runtime import load

        return load(str(target), num_threads=threads)
    if hasattr(target, "run") and hasattr(target, "predict"):
        return target
    if hasattr(target, "layers") and hasattr(target, "inputs"):
        return KerasTarget(target)
    raise DataError(f"Cannot benchmark a {type(target).__name__}; pass a path, runner or "
                    "Keras model.")


def _timed_calls(runner, x, warmup, calls, tick=None):
    """Seconds of each of ``calls`` batch-1 ``predict`` calls (cycling through ``x``),
    after ``warmup`` untimed ones."""
    for i in range(int(warmup)):
        runner.predict(x[i % len(x):i % len(x) + 1])
    times = []
    for i in range(int(calls)):
        row = x[i % len(x):i % len(x) + 1]
        start = time.perf_counter()
        runner.predict(row)
        times.append(time.perf_counter() - start)
        if tick is not None:
            tick()
    return times


def bench(target, x, batch_size=32, iters=100, warmup=5, threads=None, flops=None,
          progress=True, name=None):
    """Benchmark one model or artifact.

    Args:
        target: an artifact path (loaded here, so its memory is counted), a
            runtime runner, or a Keras model.
        x: input samples (numpy); cycled through as needed.
        batch_size: batch size of the throughput run. Defaults to 32.
        iters: timed batch-1 calls; the throughput run does ``max(5, iters // 4)``
            batches. Defaults to 100.
        warmup: untimed calls before each phase. Defaults to 5.
        threads: TFLite/onnxruntime threads (TensorFlow's are process-wide;
            set them with ``tf.config.threading`` first). Defaults to None.
        flops: FLOPs per inference; None counts them with
            `tfdeploy.verify.flops.flops`. Defaults to None.
        progress: show a tqdm progress bar on stderr. Defaults to True.
        name: label in the results. Defaults to the path or "keras".

    Returns:
        A dict with ``name``, ``format``, ``threads``, ``p50_ms``, ``p90_ms``,
        ``p99_ms`` (batch 1), ``batch_size``, ``throughput`` (samples/s),
        ``peak_rss_mb``, ``peak_delta_mb``, ``flops_per_inference``,
        ``achieved_flops``, ``machine_peak_flops``, ``fraction_of_peak`` and
        ``size_bytes``.
    """
    from tqdm.auto import tqdm

    x = np.asarray(x, dtype=np.float32)
    if not len(x):
        raise DataError("bench needs at least one input sample.")
    if int(iters) < 1 or int(batch_size) < 1:
        raise DataError(f"iters and batch_size must be positive, received {iters}, {batch_size}.")
    base_rss = rss_bytes()
    exact_peak = _reset_peak()
    runner = _as_target(target, threads)
    label = name or (str(runner.path) if runner.path else "keras")
    batch_iters = max(5, int(iters) // 4)
    bar = tqdm(total=int(iters) + batch_iters, desc=os.path.basename(label.rstrip("/")),
               disable=not progress, leave=False, unit="call")
    try:
        times = _timed_calls(runner, x, warmup, iters, bar.update)
        reps = -(-int(batch_size) // len(x))
        batch = np.concatenate([x] * reps)[:int(batch_size)]
        for _ in range(max(1, warmup // 2)):
            runner.predict(batch)
        start = time.perf_counter()
        for _ in range(batch_iters):
            runner.predict(batch)
            bar.update()
        elapsed = time.perf_counter() - start
    finally:
        bar.close()
    peak = peak_rss_bytes()
    throughput = batch_iters * int(batch_size) / elapsed
    if flops is None:
        from tfdeploy.verify.flops import flops as count

        flops = count(runner.model if isinstance(runner, KerasTarget) else runner)
    machine = matmul_peak_flops()
    ms = np.asarray(times) * 1e3
    size = None
    if runner.path:
        from tfdeploy.verify.evaluate import path_bytes

        size = path_bytes(runner.path)
    achieved = float(flops) * throughput
    return {
        "name": label, "format": runner.format, "threads": threads,
        "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)), "batch_size": int(batch_size),
        "throughput": throughput,
        "peak_rss_mb": peak / 2 ** 20 if peak else None,
        "peak_delta_mb": (peak - base_rss) / 2 ** 20 if exact_peak and peak and base_rss
        else None,
        "flops_per_inference": int(flops), "achieved_flops": achieved,
        "machine_peak_flops": machine, "fraction_of_peak": achieved / machine,
        "size_bytes": size,
    }


def interleaved_latency(targets, x, rounds=7, calls=30, warmup=3, threads=1):
    """Batch-1 latency of several artifacts measured in turns, for fair ratios.

    `bench` runs one artifact after another, so a neighbour job that starts
    half way (a shared machine) slows only the later ones. Here every round
    times ``calls`` calls of each target in turn; a target's latency is the
    median of its round medians, so the ratio between two targets is taken
    under the same conditions.

    Args:
        targets: ``{name: artifact path, runner or Keras model}``.
        x: input samples (numpy); call i uses ``x[i % len(x)]``.
        rounds: rounds of turns. Defaults to 7.
        calls: timed calls per target per round. Defaults to 30.
        warmup: untimed calls per target per round. Defaults to 3.
        threads: TFLite/onnxruntime threads. Defaults to 1.

    Returns:
        ``{name: {"p50_ms": median of round medians, "rounds_ms": [each round's median]}}``.
    """
    x = np.asarray(x, dtype=np.float32)
    if not len(x):
        raise DataError("interleaved_latency needs at least one input sample.")
    if int(rounds) < 1 or int(calls) < 1:
        raise DataError(f"rounds and calls must be positive, received {rounds}, {calls}.")
    runners = {name: _as_target(t, threads) for name, t in dict(targets).items()}
    medians = {name: [] for name in runners}
    for _ in range(int(rounds)):
        for name, runner in runners.items():
            times = _timed_calls(runner, x, warmup, calls)
            medians[name].append(float(np.median(times) * 1e3))
    return {name: {"p50_ms": float(np.median(m)), "rounds_ms": m} for name, m in medians.items()}


def speedup(base, accelerated, metric="throughput"):
    """``speed_accelerated / speed_base`` from two `bench` results.

    ``metric="throughput"`` compares samples/s; ``"p50_ms"`` compares batch-1
    latency (speed = 1 / latency).
    """
    if metric == "throughput":
        return accelerated["throughput"] / base["throughput"]
    return base[metric] / accelerated[metric]


def format_table(results):
    """Render `bench` results as a fixed-width text table."""
    head = ["artifact", "format", "p50 ms", "p90 ms", "p99 ms", "samples/s", "peak MB", "+MB",
            "MFLOPs", "% peak"]
    rows = [[str(r["name"])[-40:], r["format"], f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}",
             f"{r['p99_ms']:.3f}", f"{r['throughput']:.0f}",
             "-" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f}",
             "-" if r["peak_delta_mb"] is None else f"{r['peak_delta_mb']:.1f}",
             f"{r['flops_per_inference'] / 1e6:.1f}", f"{100 * r['fraction_of_peak']:.1f}%"]
            for r in results]
    return render(head, rows, align="llrrrrrrrr", sep=" ")
