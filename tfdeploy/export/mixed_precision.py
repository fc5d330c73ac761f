"""Per-layer quantization sensitivity and automatic mixed precision, measured in LiteRT.

Both start from the model's float ``.tflite`` file and build every candidate
from it with Google's ``ai-edge-quantizer`` (per-operator recipes: static int8,
int16 activations with int8 weights, int4 weights with int8 activations, and the
weight-only int4 / int8 / float16 ones, "int4w" / "int8w" / "float16": weights stored
small, a DEQUANTIZE of the constant feeding the float operator; a layer with no recipe
stays float). Every candidate file is run in LiteRT on the validation data, so
each number is the exported file's, not a fake-quant Keras model's.

- `sensitivity`: for each layer, (a) the output error and accuracy loss when
  only that layer is int8, and (b) the accuracy regained when only that layer
  stays float in an otherwise int8 file.
- `search` (``export.tflite(..., quantization="auto")``): one search path per level: 0
  and the budgets of a fixed 0.1-0.15-0.2-0.3-0.5-0.7-1-... series up to ``budget``, in
  whole validation samples lost (`_levels`). A path: start all
  int8; in sensitivity order raise layers (int16 activations, then float) while a raise
  helps, until the validation accuracy is within the level of the float file's, then lower
  again what the level allows. When that fails (many small losses that add up), go
  bottom-up: from float, lower the least sensitive layers first while the level holds. For
  ``objective="size"`` a greedy pass follows: every layer, the one whose int8 saved the
  most bytes first, goes to the smallest precision that keeps the level (int4 weights with
  int8 activations, int4 / int8 / float16 weight-only for a layer still computing in
  float, int8, int16 activations). For ``objective="size"`` each level also runs a
  float-compute path (`_float_compute_path`): from float, every layer to int8w, else
  float16, while the level holds. Of every file measured, ship the smallest (or fastest,
  measured) within the budget. A larger budget runs every path a smaller one runs, so it
  never ships a larger (slower) file. A file outside the budget is never shipped: the float file is,
  when nothing else holds.
- The latency guard (``max_latency_ratio``, default 1.0): before a file ships, it and the
  float file are timed in turns at batch 1 in LiteRT (`time_in_turns`, one thread, 7
  rounds, one ratio per round); a file ships only if its slowest round is within
  ``max_latency_ratio`` x (1 - `LATENCY_MARGIN`) x float (1 - `LATENCY_MARGIN_OUTSIDE_XNNPACK`
  where LiteRT runs an operator of it outside XNNPACK: `_Candidates.leaves_xnnpack`), so a
  file within noise of float is not shipped as faster; one that is not is recorded with the
  reason and the next best is checked, down to the float file itself. A file that runs as
  the float file (`_Candidates.runs_as_float`: float compute on float32 / int8w / float16
  weights, LiteRT's XNNPACK partitions the float file's) is not refused at a bound >= 1:
  its ratio is 1 up to the clock's noise. ``None`` turns the check off. `time_in_turns`
  is the one clock the guard reads: replace the module attribute to inject another.
"""

import gzip
import hashlib
import os
import re
import tempfile

import numpy as np

from tfdeploy._keras import tf
from tfdeploy.data.representative import representative_data as _representative
from tfdeploy.errors import DataError, ExportError, MissingDependencyError
from tfdeploy.runtime.tflite import TFLiteRunner
from tfdeploy.verify.benchmark import interleaved_latency
from tfdeploy.verify.evaluate import latency_ms
from tfdeploy.verify.precision import op_precisions, precision_counts
from tfdeploy.verify.precision import precision_map as precision_map_of
from tfdeploy.verify.tflite_weights import operators

PRECISIONS = ("int8", "int16x8", "float", "int4w", "int4", "int8w", "float16")
OBJECTIVES = ("size", "latency")
# the precisions a search raises a layer through, cheapest first
_LADDER = {"size": ("int8", "int16x8", "float"), "latency": ("int8", "float")}
# smallest file first: what the greedy pass lowers a layer through
_BY_SIZE = ("int4", "int4w", "int8", "int8w", "float16", "int16x8", "float")
# weight-only precisions -> stored weight bits: the weights are stored small and a DEQUANTIZE
# of the constant feeds the layer's float operator (the compute stays float)
_WEIGHT_ONLY = {"int4w": 4, "int8w": 8, "float16": 16}
# the weight-only precisions LiteRT dequantizes once, when the interpreter is built (XNNPACK
# unpacks a DEQUANTIZE of a constant int8 or float16 tensor at delegate init; an int4 one
# it leaves out of its graph, measured 2x float on the sentiment Transformer): a file of
# float layers and these computes as the float file does (`_Candidates.runs_as_float`)
_FOLDED = ("int8w", "float16")
# the latency guard's margin: a file ships under ``max_latency_ratio`` only if it held
# ``max_latency_ratio * (1 - LATENCY_MARGIN)`` in every round; two clocks timing the same two
# files in turns (the guard's and the bench's, 7 rounds each) disagreed by 3-15 % on the
# fallback CNN at load 6-13, so a file 0.97x float in every round of one timed 1.00x-1.10x in
# the other
LATENCY_MARGIN = 0.1
# the margin for a file LiteRT builds into more XNNPACK partitions than the float file (an
# operator it runs outside XNNPACK: an int4 CONV_2D, int16 activations): the two clocks
# disagreed most on those (a file 0.75x-0.79x float in every round of the guard's turns was
# 0.93x in the bench's; the all-int4 file 0.95x against 1.10x)
LATENCY_MARGIN_OUTSIDE_XNNPACK = 0.25
# precision -> (activation bits, weight bits) of its static ai-edge-quantizer recipe
_STATIC = {"int8": (8, 8), "int16x8": (16, 8), "int4": (8, 4)}
# the budgets (points) the search runs a path at, 0 and 0.1 to 100 in a 1-1.5-2-3-5-7 series
_GRID = (0.0,) + tuple(round(k * 10.0 ** e, 6) for e in range(-1, 3)
                       for k in (1, 1.5, 2, 3, 5, 7) if k * 10.0 ** e <= 100)


def _aeq():
    try:
        from ai_edge_quantizer import default_policy, qtyping, quantizer
    except ImportError as exc:
        raise MissingDependencyError(
            "Mixed precision and sensitivity need Google's ai-edge-quantizer: "
            "pip install 'tfdeploy[quantizer]' (or pip install ai-edge-quantizer).") from exc
    return quantizer, qtyping, default_policy


def _policy_ops():
    """``{recipe: set of TFLite op names ai-edge-quantizer's policy allows for it}``."""
    import json

    _, _, policy = _aeq()
    table = json.loads(policy.DEFAULT_JSON_POLICY)["ops_per_config"]
    from ai_edge_quantizer import algorithm_manager

    casting = algorithm_manager.get_supported_ops(algorithm_manager.AlgorithmName.FLOAT_CASTING)
    return {"int8": set(table["static_wi8_ai8"]), "int16x8": set(table["static_wi8_ai16"]),
            "int4w": set(table["weightonly_wi4_afp32"]), "int4": set(table["static_wi4_ai8"]),
            "int8w": set(table["weightonly_wi8_afp32"]),
            "float16": {str(getattr(op, "value", op)) for op in casting}}


def validation_arrays(data, what="validation_data"):
    """``(x, y)`` arrays from ``(x, y)`` arrays or a ``tf.data.Dataset`` of ``(x, y)`` batches;
    one-hot labels become class ids."""
    if isinstance(data, tf.data.Dataset):
        xs, ys = [], []
        for item in data:
            if not isinstance(item, (tuple, list)) or len(item) < 2:
                raise DataError(f"{what} must yield (inputs, labels) batches.")
            xs.append(np.asarray(item[0]))
            ys.append(np.asarray(item[1]))
        if not xs:
            raise DataError(f"{what} yielded no batches.")
        x, y = np.concatenate(xs), np.concatenate(ys)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
    else:
        raise DataError(
            f"{what} must be an (x, y) pair of arrays or a tf.data.Dataset of (x, y) batches, "
            f"received {type(data).__name__}. Carve it from the training data (e.g. "
            "tfdeploy.data.image_dataset(..., validation_split=0.2)); keep the test split for "
            "the final report.")
    if y.ndim > 1:
        y = np.argmax(y, axis=-1)
    if len(x) != len(y) or not len(x):
        raise DataError(f"{what} needs as many labels as inputs (at least one); received "
                        f"{len(x)} inputs and {len(y)} labels.")
    return x, y


class _Candidates:
    """The float file, its calibration, and every candidate built from it and measured."""

    def __init__(self, float_flatbuffer, calibration, x, y, num_calibration, workdir):
        quantizer, qtyping, _ = _aeq()
        from ai_edge_quantizer.algorithm_manager import AlgorithmName

        self._quantizer, self._qtyping = quantizer, qtyping
        self._float_casting = AlgorithmName.FLOAT_CASTING
        self.workdir = workdir
        self.float_bytes = bytes(float_flatbuffer)
        self.x, self.y = x, y
        self.float_path = float_path = self._write(self.float_bytes, "float")
        self.ops = [op for op in op_precisions(float_path)]
        policy = _policy_ops()
        quantizable = policy["int8"] | policy["int16x8"]
        # layer key -> [(output tensor name, op)], graph order
        self.units = {}
        for op in self.ops:
            if op["op"] in quantizable:
                self.units.setdefault(op["layer"], []).append((op["name"], op["op"]))
        if not self.units:
            raise ExportError("The float .tflite file has no operator ai-edge-quantizer can "
                              "quantize; export it with quantization='float32'.")
        # layer key -> the precisions its file can hold: int4 and the weight-only ones where
        # an op has such weights (the layer's other ops are int8 under "int4", float under
        # a weight-only precision;
        # a layer with such an op reading a constant weight: an attention BATCH_MATMUL of
        # two activations has nothing to store smaller)
        weighted = {op["name"] for op in operators(float_path) if any(op["constant"][1:])}
        self.allowed = {key: {"int8", "int16x8", "float"} | {
            p for p in ("int4", *_WEIGHT_ONLY)
            if any(op in policy[p] and name in weighted for name, op in ops)}
            for key, ops in self.units.items()}
        self._policy = policy
        from ai_edge_litert.interpreter import Interpreter

        runner = TFLiteRunner(float_path)
        signatures = Interpreter(model_path=float_path).get_signature_list()
        key = next(iter(signatures))
        names = list(signatures[key]["inputs"])
        if len(names) != 1:
            raise ExportError(f"Mixed precision handles single-input models; this one has "
                              f"inputs {names}.")
        samples = [{names[0]: row[0]} for row in _representative(calibration, num_calibration)()]
        recipe = quantizer.Quantizer(self.float_bytes)
        recipe.add_static_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, 16, 8)
        self.qsv = recipe.calibrate({key: samples}, num_threads=1)
        self.float_out = self._outputs(runner)
        self.float_accuracy = self._accuracy(self.float_out)
        self.measured = {}

    def _write(self, flatbuffer, name):
        path = os.path.join(self.workdir, f"{name}.tflite")
        with open(path, "wb") as f:
            f.write(flatbuffer)
        return path

    def _outputs(self, runner, batch=64):
        return np.concatenate([runner.predict(self.x[i:i + batch])
                               for i in range(0, len(self.x), batch)])

    def _accuracy(self, out):
        return 100.0 * float(np.mean(np.argmax(out, axis=-1) == self.y))

    def build(self, pmap):
        """The flatbuffer with each layer of ``pmap`` in its precision (absent: float)."""
        if all(p == "float" for p in pmap.values()):
            return self.float_bytes
        names = self._qtyping.TFLOperationName
        q = self._quantizer.Quantizer(self.float_bytes)
        for key, precision in pmap.items():
            for tensor, op in self.units[key]:
                p = precision
                if p == "int4" and op not in self._policy["int4"]:
                    p = "int8"  # an op without int4 weights (pool, add, softmax): int8
                if p == "float" or op not in self._policy[p]:
                    continue
                regex = "^" + re.escape(tensor) + ";"  # the op scope: output names + ";"
                if p == "float16":
                    q.add_weight_only_config(regex, names[op], 16,
                                             algorithm_key=self._float_casting)
                elif p in _WEIGHT_ONLY:
                    q.add_weight_only_config(regex, names[op], _WEIGHT_ONLY[p])
                else:
                    q.add_static_config(regex, names[op], *_STATIC[p])
        if not q.get_quantization_recipe():
            return self.float_bytes
        return bytes(q.quantize(self.qsv, enable_progress_bar=False,
                                enable_progress_report=False).quantized_model)

    def measure(self, pmap, latency=False):
        """``{"accuracy", "error", "bytes", "gzip_bytes", "map", ...}`` of ``pmap``'s file."""
        frozen = tuple(sorted(pmap.items()))
        row = self.measured.get(frozen)
        if row is None:
            flatbuffer = self.build(pmap)
            path = self._write(flatbuffer, f"candidate_{len(self.measured)}")
            runner = TFLiteRunner(path)
            out = self._outputs(runner)
            scale = float(np.sqrt(np.mean(self.float_out ** 2))) or 1.0
            row = {"map": dict(pmap), "accuracy": self._accuracy(out),
                   "error": float(np.sqrt(np.mean((out - self.float_out) ** 2))) / scale,
                   "bytes": len(flatbuffer), "gzip_bytes": len(gzip.compress(flatbuffer, 9)),
                   "path": path, "flatbuffer": flatbuffer}
            self.measured[frozen] = row
        if latency and "latency_ms" not in row:
            row["latency_ms"] = latency_ms(TFLiteRunner(row["path"], num_threads=1),
                                           self.x, samples=min(50, len(self.x)))
        return row

    def latency_ratio(self, row):
        """The ratio the latency guard judges ``row``'s file by: its batch-1 latency over the
        float file's in its **slowest round** of `time_in_turns` (both files timed in turns,
        one ratio per round), so a file passes a bound only if it held it in every round:
        the clock cannot ship a file that is float's speed give or take noise. Kept in
        ``row`` with every round's ratio (``latency_ratio_rounds``). A file timed once keeps
        its ratios for the life of the process (`_RATIOS`), so searches at several budgets
        judge it alike: a file near 1.0x float, refused at one budget by timing noise and
        shipped at a smaller one, would break "a larger budget never ships a larger file"."""
        if "latency_ratio" not in row:
            key = (time_in_turns, hashlib.sha256(row["flatbuffer"]).hexdigest(),
                   hashlib.sha256(self.float_bytes).hexdigest())
            if key not in _RATIOS:
                ms, float_ms = (np.atleast_1d(np.asarray(v, dtype=float))
                                for v in time_in_turns([row["path"], self.float_path], self.x))
                if ms.shape != float_ms.shape:
                    raise ExportError(f"time_in_turns gave {ms.size} rounds for the candidate "
                                      f"and {float_ms.size} for the float file; a clock times "
                                      f"every file in each round.")
                rounds = [round(float(v), 4) for v in ms / float_ms]
                _RATIOS[key] = (max(rounds), rounds,
                                [round(float(np.median(v)), 4) for v in (ms, float_ms)])
            (row["latency_ratio"], row["latency_ratio_rounds"],
             row["latency_vs_float_ms"]) = _RATIOS[key]
        return row["latency_ratio"]

    def runs_as_float(self, row):
        """Whether ``row``'s file computes in LiteRT as the float file does: every operator
        read from the file computes in float, on float weights or weights stored in a
        precision of `_FOLDED`, and LiteRT's interpreter builds it into as many XNNPACK
        partitions as the float file (each DEQUANTIZE of a stored weight went into the
        delegate, which dequantizes it once at init). Kept in ``row``."""
        if "runs_as_float" not in row:
            kinds = set(precision_counts(row["path"]))
            row["runs_as_float"] = (kinds <= {"float", "other", *_FOLDED}
                                    and xnnpack_partitions(row["path"])
                                    == xnnpack_partitions(self.float_path))
        return row["runs_as_float"]

    def leaves_xnnpack(self, row):
        """Whether LiteRT builds ``row``'s file into more XNNPACK partitions than the float
        file: some operator (an int4 CONV_2D, int16 activations) runs outside XNNPACK, in
        LiteRT's own kernels. Kept in ``row`` (``xnnpack_partitions``)."""
        if "xnnpack_partitions" not in row:
            row["xnnpack_partitions"] = xnnpack_partitions(row["path"])
            if not hasattr(self, "_float_partitions"):
                self._float_partitions = xnnpack_partitions(self.float_path)
        return row["xnnpack_partitions"] > self._float_partitions


# (clock, candidate file sha256, float file sha256) -> (slowest round's ratio, [each round's
# ratio], [median ms, float median ms]) measured
_RATIOS = {}


def xnnpack_partitions(path):
    """How many XNNPACK delegate partitions LiteRT's interpreter (one thread, default
    delegates) builds for the ``.tflite`` file at ``path``: operators it leaves out of the
    delegate split the graph into more."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=1)
    interpreter.allocate_tensors()
    return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())


def time_in_turns(paths, x, rounds=7, calls=20, threads=1):
    """Batch-1 milliseconds of each ``.tflite`` in ``paths`` in LiteRT, round by round:
    ``rounds`` rounds, each timing ``calls`` calls of every file in turn (same threads).

    Returns ``[[each round's median ms] per path]``: the latency guard of `search` divides
    a candidate's round by the float file's same round and judges the slowest of those
    ratios. It looks this module attribute up at each check: assign another function with
    the same signature (``paths, x -> [ms per path]``, each a list of rounds or one number)
    to time elsewhere or, in a test, to inject a clock.
    """
    timed = interleaved_latency({str(n): p for n, p in enumerate(paths)}, x, rounds=rounds,
                                calls=calls, threads=threads)
    return [list(timed[str(n)]["rounds_ms"]) for n in range(len(paths))]


def _prepare(model_flatbuffer, calibration, validation_data, num_calibration, workdir):
    if calibration is None:
        raise ExportError("Mixed precision needs representative_data (e.g. the training set) "
                          "to calibrate activation ranges.")
    x, y = validation_arrays(validation_data)
    return _Candidates(model_flatbuffer, calibration, x, y, num_calibration, workdir)


class Sensitivity:
    """Per-layer sensitivity of a model's int8 file; most sensitive first.

    Attributes:
        rows: ``[{"layer", "ops", "error", "accuracy_drop", "float_gain", "int8_alone",
            "float_alone", "int8_saves_bytes"}]`` ranked by ``error`` (the relative RMS
            error of the outputs against the float file's when only that layer is int8),
            then ``float_gain``; ``int8_saves_bytes``: the gzip bytes the all-int8 file
            saves on the file where only that layer is float.
        float_accuracy, int8_accuracy: validation accuracy (points) of the float file and
            of the all-int8 file.
    """

    def __init__(self, rows, float_accuracy, int8_accuracy, samples):
        self.rows = rows
        self.float_accuracy = float_accuracy
        self.int8_accuracy = int8_accuracy
        self.samples = samples

    @property
    def ranking(self):
        """Layer keys, most sensitive first."""
        return [r["layer"] for r in self.rows]

    def as_dict(self):
        return {"float_accuracy": self.float_accuracy, "int8_accuracy": self.int8_accuracy,
                "validation_samples": self.samples, "layers": self.rows}

    @classmethod
    def from_dict(cls, data):
        """The `Sensitivity` that `as_dict` wrote (e.g. the ``sensitivity`` of an "auto"
        file's card: the search measures it first)."""
        return cls([dict(r) for r in data["layers"]], data["float_accuracy"],
                   data["int8_accuracy"], data["validation_samples"])

    def to_json(self, path):
        """Write `as_dict` to ``path`` as JSON; returns ``path``."""
        import json

        with open(path, "w") as f:
            json.dump(self.as_dict(), f, indent=2)
        return path

    def table(self):
        """The ranking as a fixed-width text table."""
        from tfdeploy._table import render

        rows = [[n + 1, r["layer"], ",".join(r["ops"]), f"{r['error']:.4f}",
                 f"{r['accuracy_drop']:+.2f}", f"{r['float_gain']:+.2f}"]
                for n, r in enumerate(self.rows)]
        title = (f"float {self.float_accuracy:.2f} %, all int8 {self.int8_accuracy:.2f} % "
                 f"({self.samples} validation samples, LiteRT)")
        return render(["rank", "layer", "ops", "error (int8 alone)",
                       "acc. drop (int8 alone, pts)", "acc. gain (float alone, pts)"],
                      rows, align="rllrrr", title=title)


def _sensitivity(cands):
    keys = list(cands.units)
    all_int8 = cands.measure({k: "int8" for k in keys})
    rows = []
    for key in keys:
        alone = cands.measure({k: ("int8" if k == key else "float") for k in keys})
        but = cands.measure({k: ("float" if k == key else "int8") for k in keys})
        rows.append({"layer": key, "ops": sorted({op for _, op in cands.units[key]}),
                     "error": round(alone["error"], 6),
                     "accuracy_drop": round(cands.float_accuracy - alone["accuracy"], 4),
                     "float_gain": round(but["accuracy"] - all_int8["accuracy"], 4),
                     "int8_alone": round(alone["accuracy"], 4),
                     "float_alone": round(but["accuracy"], 4),
                     "int8_saves_bytes": but["gzip_bytes"] - all_int8["gzip_bytes"]})
    rows.sort(key=lambda r: (-r["error"], -r["float_gain"], -r["accuracy_drop"]))
    return Sensitivity(rows, round(cands.float_accuracy, 4), round(all_int8["accuracy"], 4),
                       len(cands.y))


def measure_sensitivity(float_bytes, representative_data, validation_data,
                        num_calibration=200):
    """`Sensitivity` of a float flatbuffer (what `tfdeploy.export.sensitivity` measures)."""
    with tempfile.TemporaryDirectory(prefix="tfdeploy_sensitivity_") as tmp:
        cands = _prepare(float_bytes, representative_data, validation_data, num_calibration,
                         tmp)
        return _sensitivity(cands)


def _levels(budget, samples):
    """The budgets (points) of the search paths ``budget`` runs, smallest first: the points
    of `_GRID` up to ``budget``, each as the whole number of validation samples it lets the
    file lose (duplicates dropped: 288 samples and budget 1.0 give 0, 1 and 2 samples). A
    budget on the grid gets a path at exactly itself; between grid points, the budget's
    remainder serves only the files the paths measured on the way. The levels depend on
    ``budget`` only through where the grid stops, so a larger budget runs every path a
    smaller one runs."""
    counts = {int(np.floor(g * samples / 100.0 + 1e-9)) for g in _GRID if g <= budget + 1e-9}
    return [100.0 * c / samples for c in sorted(counts)]


def _path(cands, ranking, floor, objective, max_trials):
    """One search path toward the accuracy ``floor``; every file it measures stays in
    ``cands.measured``. At most ``max_trials`` distinct files are visited (measured or found
    there), so a path goes the same way whatever other paths measured before it."""
    keys = ranking.ranking
    ladder = _LADDER[objective]
    visited = set()

    def spent():
        return len(visited) >= max_trials

    def trial(pmap):
        visited.add(tuple(sorted(pmap.items())))
        return cands.measure(pmap)

    def lowered(current, key, precisions, at=None):
        """``current`` with ``key`` at the first of ``precisions`` (tried in order) whose file
        keeps ``at`` (default: the path's floor); unchanged when none does or the trials
        are spent."""
        at = floor if at is None else at
        for precision in precisions:
            if spent():
                break
            cand = trial({**current, key: precision})
            if cand["accuracy"] >= at:
                return dict(cand["map"])
        return current

    # 1. top-down: all int8, then raise the most sensitive layers (int16 activations, float)
    # while a raise helps, until the floor holds; then lower again what it allows
    current = {k: ladder[0] for k in keys}
    row = trial(current)
    raised = []
    for key in keys:
        if row["accuracy"] >= floor or spent():
            break
        best = None
        for precision in ladder[1:]:
            cand = trial({**current, key: precision})
            if best is None or cand["accuracy"] > best["accuracy"]:
                best = cand
            if cand["accuracy"] >= floor:
                break
        if best["accuracy"] > row["accuracy"]:
            current, row = dict(best["map"]), best
            raised.append(key)
    if row["accuracy"] >= floor:
        for key in reversed(raised):
            current = lowered(current, key, ladder[:ladder.index(current[key])])
    else:
        # 2. bottom-up, when many small losses add up: from float, lower the least sensitive
        # layers first (int8, else int16 activations) while the floor holds
        current = {k: "float" for k in keys}
        for key in reversed(keys):
            current = lowered(current, key, ladder[:-1])
    if objective == "size":
        # 3. greedy: every layer, the one whose int8 saved the most bytes first, to the
        # smallest precision that keeps the floor; int4 weight-only (float compute) only
        # for a layer not already computing in integers. Twice: first only what costs no
        # accuracy against the file reached, then what the floor allows, so an early small
        # loss cannot block later free savings
        saves = {r["layer"]: r["int8_saves_bytes"] for r in ranking.rows}
        order = sorted(keys, key=lambda k: -saves[k])
        reached = trial(current)["accuracy"]
        for at in sorted({max(floor, reached - 1e-9), floor}, reverse=True):
            for key in order:
                if spent():
                    break
                smaller = [p for p in _BY_SIZE[:_BY_SIZE.index(current[key])]
                           if p in cands.allowed[key]
                           and not (p in _WEIGHT_ONLY and current[key] in _STATIC)]
                current = lowered(current, key, smaller, at)


def _float_compute_path(cands, ranking, floor, max_trials):
    """From the float file, every layer (the one whose int8 saved the most bytes first) to the
    smallest precision of `_FOLDED` that keeps the accuracy ``floor``: files whose weights are
    stored in int8 or float16 and whose compute stays the float file's, for models too small
    for integer kernels to pay for their quantize/dequantize (the latency guard refuses
    those). At most ``max_trials`` files are visited."""
    saves = {r["layer"]: r["int8_saves_bytes"] for r in ranking.rows}
    current = {k: "float" for k in ranking.ranking}
    visited = 0
    for key in sorted(current, key=lambda k: -saves[k]):
        for precision in (p for p in _FOLDED if p in cands.allowed[key]):
            if visited >= max_trials:
                return
            visited += 1
            cand = cands.measure({**current, key: precision})
            if cand["accuracy"] >= floor:
                current = dict(cand["map"])
                break


def _search(cands, budget, objective, max_trials, max_latency_ratio=1.0):
    """``(chosen row, sensitivity)``: one `_path` per level of `_levels`, then the best file
    measured by any of them (or by the sensitivity ranking) within ``budget`` whose batch-1
    latency is at most ``max_latency_ratio`` x the float file's (None: no latency check).
    Every file a smaller budget's search measures is measured here too, so a larger budget
    never ships a larger (objective size) or slower (latency) file."""
    ranking = _sensitivity(cands)
    keys = ranking.ranking
    for level in _levels(budget, len(cands.y)):
        _path(cands, ranking, cands.float_accuracy - level - 1e-9, objective, max_trials)
        if objective == "size":
            _float_compute_path(cands, ranking, cands.float_accuracy - level - 1e-9, max_trials)
    cands.measure({k: "float" for k in keys})  # always within the budget: the fallback
    floor = cands.float_accuracy - budget - 1e-9
    within = [r for r in cands.measured.values() if r["accuracy"] >= floor]
    if objective == "latency":
        for r in within:
            cands.measure(r["map"], latency=True)
        ranked = sorted(within, key=lambda r: (r["latency_ms"], r["gzip_bytes"]))
    else:
        ranked = sorted(within, key=lambda r: (r["gzip_bytes"], -r["accuracy"]))
    for row in ranked:
        if max_latency_ratio is None or all(p == "float" for p in row["map"].values()):
            return row, ranking  # the float file itself: ratio 1 by definition
        ratio = cands.latency_ratio(row)
        # a file that computes as the float file does is as fast, whatever the clock's noise
        # says (its measured ratio stays in the card)
        if max_latency_ratio >= 1 and cands.runs_as_float(row):
            row["latency_margin"] = None  # not judged on the clock
            return row, ranking
        # any other file must clear the bound by a margin in its slowest round: one that is
        # float's speed give or take the clock's noise is not shipped as faster; a wider one
        # where an operator runs outside XNNPACK (the clocks disagree most there)
        outside = cands.leaves_xnnpack(row)
        margin = LATENCY_MARGIN_OUTSIDE_XNNPACK if outside else LATENCY_MARGIN
        wanted = max_latency_ratio * (1.0 - margin)
        if ratio <= wanted + 1e-9:
            row["latency_margin"] = margin
            return row, ranking
        rounds = row.get("latency_ratio_rounds", [ratio])
        row["rejected"] = (f"{ratio:.2f}x the float file's batch-1 latency in its slowest of "
                           f"{len(rounds)} rounds in turns (median {np.median(rounds):.2f}x) "
                           f"> {wanted:.2f}x: max_latency_ratio={max_latency_ratio:g} less the "
                           f"{margin:.0%} margin for the clock's noise"
                           + (" (an operator runs outside XNNPACK)" if outside else ""))
    raise AssertionError("unreachable: the float file is always within the budget")


def check_search(budget, objective, validation_data, max_latency_ratio=1.0):
    """Refuse a bad budget, objective, latency bound or missing validation data before
    anything is built."""
    try:
        bad = budget is None or not np.isfinite(float(budget)) or float(budget) < 0
    except (TypeError, ValueError):
        bad = True
    if bad:
        raise ExportError(f"quantization='auto' needs budget=POINTS, the validation accuracy "
                          f"(percentage points) the file may lose against float, >= 0; "
                          f"received budget={budget!r}.")
    if objective not in OBJECTIVES:
        raise ExportError(f"Unrecognized objective={objective!r}. Supported objectives are: "
                          f"{list(OBJECTIVES)}.")
    if max_latency_ratio is not None:
        try:
            bad = isinstance(max_latency_ratio, bool) or not (
                np.isfinite(float(max_latency_ratio)) and float(max_latency_ratio) > 0)
        except (TypeError, ValueError):
            bad = True
        if bad:
            raise ExportError(
                f"max_latency_ratio must be a number > 0 (1.0: never slower than the float "
                f"file at batch 1) or None (no latency check); received "
                f"max_latency_ratio={max_latency_ratio!r}.")
    if validation_data is None:
        raise ExportError("quantization='auto' needs validation_data=(x, y), carved from the "
                          "training data (the test split is for the final report only).")


def search(float_bytes, representative_data, validation_data, budget, objective="size",
           num_calibration=200, max_trials=100, max_latency_ratio=1.0):
    """Run the mixed-precision search on a float flatbuffer; see the module doc.

    ``max_latency_ratio``: a file whose batch-1 latency in LiteRT (one thread, timed in
    turns with the float file by `time_in_turns`) is more than this times the float file's
    is not shipped; the next best is checked, down to the float file. None: no check.
    Defaults to 1.0.

    Returns:
        ``(flatbuffer, card)``: the shipped file's bytes and a dict for its model card
        (budget, objective, latency bound, float and shipped validation accuracy, every
        trial (with the reason where the latency check rejected it), the sensitivity
        ranking, and the precision map and counts read from the file).
    """
    check_search(budget, objective, validation_data, max_latency_ratio)
    ratio = None if max_latency_ratio is None else float(max_latency_ratio)
    with tempfile.TemporaryDirectory(prefix="tfdeploy_mixed_") as tmp:
        cands = _prepare(float_bytes, representative_data, validation_data, num_calibration,
                         tmp)
        chosen, ranking = _search(cands, float(budget), objective, max_trials, ratio)
        floor = cands.float_accuracy - float(budget) - 1e-9
        trials = [{"accuracy": round(r["accuracy"], 4), "gzip_bytes": r["gzip_bytes"],
                   "within_budget": r["accuracy"] >= floor, "counts": _counts(r["map"]),
                   **{k: round(r[k], 4) for k in ("latency_ms", "latency_ratio") if k in r},
                   **{k: r[k] for k in ("latency_vs_float_ms", "latency_ratio_rounds",
                                        "xnnpack_partitions", "rejected", "runs_as_float")
                      if k in r}}
                  for r in cands.measured.values()]
        card = {"budget_points": float(budget), "objective": objective,
                "max_latency_ratio": ratio,
                "latency_margin": chosen.get("latency_margin"),
                "xnnpack_partitions": xnnpack_partitions(chosen["path"]),
                "levels_points": [round(v, 4) for v in _levels(float(budget), len(cands.y))],
                "validation_samples": len(cands.y),
                "float_accuracy": round(cands.float_accuracy, 4),
                "accuracy": round(chosen["accuracy"], 4),
                "latency_ratio": (round(chosen["latency_ratio"], 4)
                                  if "latency_ratio" in chosen else None),
                "latency_ratio_rounds": chosen.get("latency_ratio_rounds"),
                "runs_as_float": chosen.get("runs_as_float"),
                "chosen_map": chosen["map"],
                "precision_map": precision_map_of(chosen["path"]),
                "precision_counts": precision_counts(chosen["path"]),
                "sensitivity": ranking.as_dict(),
                "trials": trials}
        return chosen["flatbuffer"], card


def build(float_bytes, representative_data, precision_map, num_calibration=200):
    """The flatbuffer of ``precision_map`` (``{layer: precision}``) built from a float
    flatbuffer, calibrated on ``representative_data``; no search. Layers the map does not
    name are int8.

    Returns:
        ``(flatbuffer, card)``, the card holding the map asked for and the precision map and
        counts read from the file.
    """
    bad = sorted({p for p in precision_map.values() if p not in PRECISIONS})
    if bad:
        raise ExportError(f"Unrecognized precision(s) {bad} in precision_map. Supported "
                          f"precisions are: {list(PRECISIONS)}.")
    if representative_data is None:
        raise ExportError("Building a precision map needs representative_data (e.g. the "
                          "training set) to calibrate activation ranges.")
    x = np.asarray(next(iter(_representative(representative_data, 1)()))[0])
    with tempfile.TemporaryDirectory(prefix="tfdeploy_mixed_") as tmp:
        cands = _Candidates(float_bytes, representative_data, x, np.zeros(len(x), int),
                            num_calibration, tmp)
        pmap = {k: precision_map.get(k, "int8") for k in cands.units}
        flatbuffer = cands.build(pmap)
        path = cands._write(flatbuffer, "built")
        return flatbuffer, {"chosen_map": pmap, "precision_map": precision_map_of(path),
                            "precision_counts": precision_counts(path)}


def _counts(pmap):
    out = {}
    for p in pmap.values():
        out[p] = out.get(p, 0) + 1
    return out


__all__ = ["measure_sensitivity", "search", "build", "Sensitivity", "PRECISIONS", "OBJECTIVES",
           "validation_arrays"]
