"""Keras 3 -> Keras 2 bridge: time and numerical equality, next to rebuilding by hand.

    python benchmarks/bench_bridge.py [--repeats 3] [--out docs/bench_bridge.json]

Prints one JSON document (``--out FILE`` also writes it there), with the run's CPU, load
average, command and date (``run``). For each model (Keras 3 ``MobileNetV2`` alpha 1.0 at 224x224,
and the largest model of tests/test_bridge.py, found by parameter count): its parameter
count; the median wall time of `tfdeploy.bridge.to_keras2` with ``verify=False`` and with
the default ``verify=True``; of `to_keras3` back; of what a user would do instead, rebuilding
the same architecture in tf_keras and copying the weights with ``set_weights`` (only where
tf_keras has the same application); their ratio; and the max abs difference of the outputs
(bridged vs original, and after the round trip) on seeded random inputs. Target (issue 10):
every difference <= 1e-5.
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)
from _record import run_info, write_result  # noqa: E402


def _median_time(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="timed runs per step (median)")
    p.add_argument("--out", help="Also write the JSON here.")
    args = p.parse_args(argv)
    run = run_info(argv)

    import keras as keras3

    import test_bridge
    from tfdeploy import bridge
    from tfdeploy._keras import keras

    def mobilenet_v2():
        return keras3.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0,
                                               weights=None)

    def rebuild_mobilenet_v2(weights):
        model = keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0,
                                               weights=None)
        model.set_weights(weights)
        return model

    test_models = {f.__name__: f() for f in test_bridge.FAMILIES}
    largest = max(test_models, key=lambda name: test_models[name].count_params())
    cases = [("MobileNetV2 alpha=1.0 224x224", mobilenet_v2(), rebuild_mobilenet_v2),
             (f"tests/test_bridge.py largest: {largest}", test_models[largest], None)]
    rows = []
    for name, model, by_hand in cases:
        x = bridge.random_inputs(model, batch=2, seed=3)
        t_fast, k2 = _median_time(lambda: bridge.to_keras2(model, verify=False), args.repeats)
        t_checked, _ = _median_time(lambda: bridge.to_keras2(model), args.repeats)
        t_back, back = _median_time(lambda: bridge.to_keras3(k2), args.repeats)
        row = {"model": name, "params": int(model.count_params()),
               "to_keras2_s": round(t_fast, 3), "to_keras2_verify_s": round(t_checked, 3),
               "to_keras3_verify_s": round(t_back, 3),
               "max_abs_diff_keras2": bridge.max_abs_diff(model, k2, x),
               "max_abs_diff_round_trip": bridge.max_abs_diff(model, back, x)}
        if by_hand is not None:
            weights = model.get_weights()
            t_hand, hand = _median_time(lambda: by_hand(weights), args.repeats)
            row["rebuild_by_hand_s"] = round(t_hand, 3)
            row["bridge_over_by_hand"] = round(t_fast / t_hand, 2)
            row["max_abs_diff_by_hand"] = bridge.max_abs_diff(model, hand, x)
        row["within_1e-5"] = max(row["max_abs_diff_keras2"], row["max_abs_diff_round_trip"]) \
            <= 1e-5
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    write_result({"run": run, "repeats": args.repeats, "models": rows}, args.out)
    return 0 if all(r["within_1e-5"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
