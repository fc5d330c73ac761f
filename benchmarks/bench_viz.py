"""Cost of the visual outputs: saliency per image, and the quickstart with visuals on vs off.

    python benchmarks/bench_viz.py [--repeats 1] [--images 5] [--out docs/bench_viz.json]

Prints one JSON document (``--out FILE`` also writes it there), with the run's CPU, load
average at start and end, command and date (``run``):
- ``saliency``: for the seed CNN (32x32x1, width 0.25) and MobileNetV2 (224x224x3,
  weights=None), seconds per image of integrated gradients (50 steps, one batch of 51
  interpolated inputs per image) and of Grad-CAM (one forward + backward), medians over
  ``--images`` images after one warm-up call (whose time, tracing included, is reported as
  ``first_call_s``).
- ``quickstart``: total wall time of `tfdeploy.pipeline.quickstart` with ``visuals=True`` and
  ``visuals=False``, alternating, ``--repeats`` times each, same seed and data; the median
  ratio and the time spent in the visuals stage. Target (issue 12): ratio <= 1.15.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _record import run_info, write_result  # noqa: E402


def _per_image(fn, images):
    start = time.perf_counter()
    fn(images[:1])
    first = time.perf_counter() - start
    times = []
    for i in range(len(images)):
        start = time.perf_counter()
        fn(images[i:i + 1])
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "first_call_s": first}


def saliency(n_images):
    import numpy as np

    import tfdeploy as td
    from tfdeploy import viz

    rng = np.random.default_rng(0)
    out = {}
    models = {
        "cnn_32x32x1_w0.25": (td.models.build_cnn((32, 32, 1), 10, width=0.25), (32, 32, 1)),
        "mobilenet_v2_224x224x3": (td.keras.applications.MobileNetV2(
            input_shape=(224, 224, 3), weights=None, classes=10), (224, 224, 3)),
    }
    for name, (model, shape) in models.items():
        images = rng.uniform(0, 255, (n_images, *shape)).astype(np.float32)
        out[name] = {
            "params": int(model.count_params()),
            "integrated_gradients_50_steps": _per_image(
                lambda x: viz.integrated_gradients(model, x, steps=50), images),
            "grad_cam": _per_image(lambda x: viz.grad_cam(model, x), images),
        }
        print(f"{name}: {json.dumps(out[name])}", file=sys.stderr)
    return out


def quickstart(repeats, data_dir, epochs):
    from tfdeploy.pipeline import quickstart as run

    totals = {True: [], False: []}
    visuals_s = []
    for r in range(repeats):
        for visuals in (False, True):
            tmp = tempfile.mkdtemp(prefix="bench_viz_")
            start = time.perf_counter()
            result = run(data_dir=data_dir, output_dir=os.path.join(tmp, "saved_models"),
                         log_dir=os.path.join(tmp, "logs"),
                         report_dir=os.path.join(tmp, "report"), epochs=epochs[0],
                         prune_epochs=epochs[1], qat_epochs=epochs[2], verbose=0,
                         visuals=visuals)
            totals[visuals].append(time.perf_counter() - start)
            if visuals:
                visuals_s.append(result["timings"]["visuals_s"])
            print(f"repeat {r} visuals={visuals}: {totals[visuals][-1]:.1f} s", file=sys.stderr)
    on, off = statistics.median(totals[True]), statistics.median(totals[False])
    return {"epochs": list(epochs), "repeats": repeats, "visuals_on_s": totals[True],
            "visuals_off_s": totals[False], "median_on_s": on, "median_off_s": off,
            "ratio_on_over_off": on / off, "visuals_stage_s": visuals_s,
            "target_ratio": 1.15, "within_target": on / off <= 1.15}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=5, help="images timed per model")
    p.add_argument("--repeats", type=int, default=1,
                   help="alternating quickstart runs per setting (0 skips the quickstart)")
    p.add_argument("--data", default=None, help="image dir with train/ and test/ (default digits)")
    p.add_argument("--epochs", type=int, nargs=3, default=(8, 4, 2),
                   metavar=("BASE", "PRUNE", "QAT"), help="quickstart epochs (default 8 4 2)")
    p.add_argument("--out", help="Also write the JSON here.")
    args = p.parse_args(argv)
    run = run_info(argv)

    import tfdeploy as td

    data_dir = args.data or td.data.write_digits(tempfile.mkdtemp(prefix="bench_viz_digits_"))
    result = {"run": run, "saliency": saliency(args.images)}
    if args.repeats:
        result["quickstart"] = quickstart(args.repeats, data_dir, tuple(args.epochs))
    write_result(result, args.out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
