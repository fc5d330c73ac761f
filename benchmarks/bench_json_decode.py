"""The REST server's JSON body -> float32 ndarray step for a MobileNetV2 1.0@224 batch-1
request, this checkout against a baseline build of ``_numjson``, per kind of body.

    python benchmarks/bench_json_decode.py [--baseline_ref main] [--rounds 7 --calls 30 --out FILE]

The step is what the REST handler does with a ``{"instances": [...]}`` body (``json_fast``:
``extract`` cuts the numeric span out, ``FastArray.array`` decodes it into one float32
array). Bodies, all 1x224x224x3: ``a_float_ints`` (``np.float32`` pixels' ``tolist()``,
"123.0"), ``b_ints`` ("123"), ``c_unit_f64`` (``(x / 255).tolist()`` of float64: 16-17
significant digits), ``c_unit_f32`` (the same values as float32, printed as Python floats),
``d_mixed`` (negatives, exponents, ``indent=1`` white space). The baseline is
``_numjson.c`` of ``--baseline_ref`` (git), built into a temporary folder and driven as its
``json_fast`` drove it (spans, shape, fill). Where this checkout's ``_numjson`` has the
AVX-512 token path (``_numjson.fast()``), a third side ``scan`` is this checkout with it off
(the sequential scan alone, as on a CPU without AVX-512). Rounds alternate the sides; per
body and side: CPU (``time.thread_time``) and wall (``perf_counter``) medians in ms over every
call, the new/old (and new/scan) ratios, whether the token path decided the body, and the
load average of every round.
"""

import argparse
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from _record import run_info, write_result  # noqa: E402
from tfdeploy.serving import json_fast  # noqa: E402


def bodies(seed=0):
    """``{kind: (body bytes, the float32 array json.loads + astype give)}``."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(1, 224, 224, 3))
    unit = pixels / 255.0
    mixed = ((pixels - 127.5) / 127.5 * 10.0 ** rng.integers(-7, 3, size=pixels.shape))
    values = {"a_float_ints": pixels.astype(np.float32).tolist(),
              "b_ints": pixels.tolist(),
              "c_unit_f64": unit.tolist(),
              "c_unit_f32": unit.astype(np.float32).tolist(),
              "d_mixed": mixed.astype(np.float32).tolist()}
    out = {}
    for kind, value in values.items():
        text = json.dumps({"instances": value}, indent=1 if kind == "d_mixed" else None)
        expected = np.asarray(json.loads(text)["instances"], np.float64).astype(np.float32)
        out[kind] = (text.encode(), expected)
    return out


def build_baseline(ref, folder):
    """``_numjson`` of git ``ref``, built in ``folder``: the module."""
    source = subprocess.run(["git", "-C", REPO, "show", f"{ref}:tfdeploy/serving/_numjson.c"],
                            capture_output=True, check=True).stdout
    with open(os.path.join(folder, "_numjson.c"), "wb") as f:
        f.write(source)
    with open(os.path.join(folder, "setup.py"), "w") as f:
        f.write("from setuptools import Extension, setup\n"
                "setup(name='baseline', ext_modules=[Extension('_numjson', ['_numjson.c'])])\n")
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=folder,
                   check=True, capture_output=True)
    path = next(os.path.join(folder, n) for n in os.listdir(folder)
                if n.startswith("_numjson") and n.endswith(".so"))
    loader = importlib.machinery.ExtensionFileLoader("baseline._numjson", path)
    spec = importlib.util.spec_from_file_location("baseline._numjson", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def old_decode(module):
    """The baseline's body -> float32 array, as its json_fast ran it (spans, shape, fill);
    a baseline with the one-pass API (decode) is driven by this checkout's json_fast."""
    if hasattr(module, "decode"):
        def one_pass(body):
            mine, json_fast._numjson = json_fast._numjson, module
            try:
                return new_decode(body)
            finally:
                json_fast._numjson = mine
        return one_pass

    def decode(body):
        start, end = module.spans(body, json_fast.MIN_SPAN)[0]
        raw = body[start:end]
        shape = module.shape(raw)
        out = np.empty(int(np.prod(shape)), np.float32)
        if module.fill(raw, shape, out) is not True:
            raise RuntimeError("the baseline refused the body")
        return out.reshape(shape)
    return decode


def new_decode(body):
    _, spans = json_fast.extract(body)
    (fast,) = spans.values()
    return fast.array(None, np.float32)


def scan_decode(body):
    """new_decode with the AVX-512 token path off."""
    was = json_fast._numjson.fast(False)
    try:
        return new_decode(body)
    finally:
        json_fast._numjson.fast(was)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline_ref", default="main")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=30, help="calls per body, side and round")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if json_fast._numjson is None:
        raise SystemExit("tfdeploy.serving._numjson is not built in this checkout: run "
                         "`python setup.py build_ext --inplace` first")
    result = {"run": run_info(argv), "baseline_ref": args.baseline_ref, "bodies": {}}
    with tempfile.TemporaryDirectory() as folder:
        sides = {"old": old_decode(build_baseline(args.baseline_ref, folder)),
                 "new": new_decode}
        fast = hasattr(json_fast._numjson, "fast") and json_fast._numjson.fast()
        if fast:
            sides["scan"] = scan_decode
        result["avx512_token_path"] = bool(fast)
        cases = bodies()
        samples = {k: {s: {"cpu": [], "wall": []} for s in sides} for k in cases}
        loads = []
        for r in range(args.rounds):
            loads.append(os.getloadavg()[0])
            order = list(sides) if r % 2 == 0 else list(sides)[::-1]
            for kind, (body, expected) in cases.items():
                for side in order:
                    got = sides[side](body)
                    if got.dtype != np.float32 or got.tobytes() != expected.tobytes():
                        raise SystemExit(f"{side} decoded {kind} to other values than json")
                    for _ in range(args.calls):
                        c, w = time.thread_time(), time.perf_counter()
                        sides[side](body)
                        samples[kind][side]["wall"].append(time.perf_counter() - w)
                        samples[kind][side]["cpu"].append(time.thread_time() - c)
    for kind, (body, _) in cases.items():
        row = {"body_bytes": len(body)}
        if fast:   # (the token path decided this body itself, or left it to the scan)
            before = json_fast._numjson.fast_answers()
            new_decode(body)
            row["token_path_decided"] = json_fast._numjson.fast_answers() > before
        for side in sides:
            for clock in ("cpu", "wall"):
                row[f"{side}_{clock}_ms"] = round(
                    float(np.median(samples[kind][side][clock])) * 1e3, 3)
        for clock in ("cpu", "wall"):
            row[f"{clock}_speedup"] = round(row[f"old_{clock}_ms"] / row[f"new_{clock}_ms"], 2)
            if fast:
                row[f"{clock}_speedup_vs_scan"] = round(
                    row[f"scan_{clock}_ms"] / row[f"new_{clock}_ms"], 2)
        result["bodies"][kind] = row
    result["loadavg_per_round"] = loads
    write_result(result, args.out)


if __name__ == "__main__":
    main()
