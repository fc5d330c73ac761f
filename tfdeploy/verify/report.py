"""Verify artifacts against the Keras model: accuracy, agreement, max diff, per-class report.

Each artifact runs in its own runtime on held-out data. Every output is
checked against the reference (the Keras model's probabilities): the
probabilities by max absolute difference, ``class_index`` and the primary
output's argmax by agreement, ``class_label`` against the class names, and
accuracy by its drop from the reference. Tolerances depend on the artifact's
precision (float32, float16, or quantized int8). Every failing check of every
artifact is gathered into one `VerificationError`.
"""

import os

import numpy as np

from tfdeploy._table import render
from tfdeploy.errors import DataError, VerificationError

#: Default tolerances by artifact precision. ``atol`` bounds the max absolute
#: difference of the probabilities (None: reported, not checked — int8 rounding
#: moves single probabilities by whole percent); ``min_agreement`` the share of
#: samples whose top class matches the reference; ``max_accuracy_drop`` the
#: accuracy lost against the reference on labelled data.
from tfdeploy._tolerances import TOLERANCES  # noqa: E402  (one table, shared with serving)
_QUANT_ONNX_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                   "ConvInteger", "QLinearConv", "QLinearMatMul")


def classification_report(y_true, y_pred, class_names=None):
    """Per-class precision, recall, F1 and support, plus micro/macro/weighted averages.

    Args:
        y_true: integer labels.
        y_pred: integer predictions.
        class_names: a name per class index. Defaults to the indices as strings.

    Returns:
        ``{"classes": {name: {"precision", "recall", "f1", "support"}},
        "micro avg": {...}, "macro avg": {...}, "weighted avg": {...},
        "accuracy": float}``. A class with no predictions has precision 0
        (likewise recall/F1), as in scikit-learn with ``zero_division=0``.
    """
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    y_pred = np.asarray(y_pred).astype(np.int64).ravel()
    if len(y_true) != len(y_pred) or not len(y_true):
        raise DataError(f"y_true and y_pred must be non-empty and of equal length, got "
                        f"{len(y_true)} and {len(y_pred)}.")
    n = max(int(y_true.max()), int(y_pred.max())) + 1
    if class_names is not None:
        if len(class_names) < n:
            raise DataError(f"{len(class_names)} class names for labels up to {n - 1}.")
        n = len(class_names)
    if class_names is not None:
        names = [str(c) for c in class_names]
    else:
        names = [str(i) for i in range(n)]
    tp = np.array([np.sum((y_pred == k) & (y_true == k)) for k in range(n)], dtype=np.float64)
    predicted = np.bincount(y_pred, minlength=n)[:n].astype(np.float64)
    support = np.bincount(y_true, minlength=n)[:n].astype(np.float64)
    div = lambda a, b: np.divide(a, b, out=np.zeros_like(a), where=b > 0)  # noqa: E731
    precision, recall = div(tp, predicted), div(tp, support)
    f1 = div(2 * precision * recall, precision + recall)
    classes = {names[k]: {"precision": float(precision[k]), "recall": float(recall[k]),
                          "f1": float(f1[k]), "support": int(support[k])} for k in range(n)}
    total = support.sum()
    micro_p = tp.sum() / predicted.sum() if predicted.sum() else 0.0
    micro_r = tp.sum() / total if total else 0.0
    micro_f = 2 * micro_p * micro_r / (micro_p + micro_r) if micro_p + micro_r else 0.0
    weights = support / total if total else support
    return {
        "classes": classes,
        "micro avg": {"precision": float(micro_p), "recall": float(micro_r),
                      "f1": float(micro_f), "support": int(total)},
        "macro avg": {"precision": float(precision.mean()), "recall": float(recall.mean()),
                      "f1": float(f1.mean()), "support": int(total)},
        "weighted avg": {"precision": float((precision * weights).sum()),
                         "recall": float((recall * weights).sum()),
                         "f1": float((f1 * weights).sum()), "support": int(total)},
        "accuracy": float(np.mean(y_true == y_pred)),
    }


def format_classification_report(report, digits=3):
    """Render `classification_report` output as the familiar text table."""
    rows = list(report["classes"].items()) + [
        (k, report[k]) for k in ("micro avg", "macro avg", "weighted avg")]
    width = max(12, *(len(name) for name, _ in rows))
    head = f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"
    lines = [head, ""]
    for i, (name, r) in enumerate(rows):
        if i == len(report["classes"]):
            lines.append("")
        lines.append(f"{name:>{width}} {r['precision']:>9.{digits}f} {r['recall']:>9.{digits}f} "
                     f"{r['f1']:>9.{digits}f} {r['support']:>9d}")
    lines.append(f"{'accuracy':>{width}} {'':>9} {'':>9} {report['accuracy']:>9.{digits}f}")
    return "\n".join(lines)


def artifact_precision(runner):
    """"float32", "float16" or "int8" (any integer quantization) for a runtime runner."""
    if runner.format == "tflite":
        from tfdeploy.verify.tflite_weights import weight_summary

        dtypes = weight_summary(runner.path)["dtypes"]
        if "int8" in dtypes or any(d in ("int8", "uint8", "int16") for _, _, d in runner.inputs):
            return "int8"
        return "float16" if "float16" in dtypes else "float32"
    if runner.format == "onnx":
        kind = getattr(runner, "metadata", {}).get("tfdeploy.quantization")
        if kind:
            return "float32" if kind == "float" else "int8"
        import onnx

        ops = {node.op_type for node in onnx.load(runner.path).graph.node}
        return "int8" if ops & set(_QUANT_ONNX_OPS) else "float32"
    return "float32"


def _labels_of(runner):
    path = runner.path
    candidates = [os.path.join(path, "assets", "labels.txt")] if os.path.isdir(path) else [
        os.path.splitext(path)[0] + ".labels.txt"]
    for candidate in candidates:
        if os.path.isfile(candidate):
            with open(candidate) as f:
                return [line.rstrip("\n") for line in f if line.rstrip("\n")]
    return None


def _reference_probs(reference, x, batch_size):
    if hasattr(reference, "predict") and not isinstance(reference, np.ndarray):
        if hasattr(reference, "run"):  # a runner as reference
            return np.concatenate([reference.predict(x[i:i + batch_size])
                                   for i in range(0, len(x), batch_size)])
        return np.asarray(reference.predict(x, batch_size=batch_size, verbose=0))
    ref = np.asarray(reference)
    if len(ref) != len(x):
        raise DataError(f"reference has {len(ref)} rows for {len(x)} inputs.")
    return ref


def _run_all(runner, x, batch_size):
    outs = {}
    for i in range(0, len(x), batch_size):
        for key, value in runner.run(x[i:i + batch_size]).items():
            outs.setdefault(key, []).append(np.asarray(value))
    return {k: np.concatenate(v) for k, v in outs.items()}


def _primary(outs, ref):
    if "probabilities" in outs:
        return "probabilities"
    for key, value in outs.items():
        if value.dtype.kind == "f" and value.shape == ref.shape:
            return key
    return None


def verify(artifact, reference, x, y=None, class_names=None, tolerance=None, batch_size=64,
           raise_on_failure=True, name=None):
    """Run one artifact on ``x`` in its own runtime and check it against ``reference``.

    Args:
        artifact: a path (SavedModel dir, ``.tflite``, ``.onnx``) or a runtime runner.
        reference: the Keras model, or its probabilities on ``x``.
        x: held-out inputs (numpy array).
        y: integer labels; enables accuracy, the accuracy-drop check and the
            per-class report. Defaults to None.
        class_names: names per class index; checks ``class_label`` outputs and
            names the report's rows. Defaults to the artifact's labels file.
        tolerance: dict overriding the precision's defaults in `TOLERANCES`
            (keys ``atol``, ``min_agreement``, ``max_accuracy_drop``).
        batch_size: inference batch size. Defaults to 64.
        raise_on_failure: raise `VerificationError` when a check fails.
            Defaults to True.
        name: label of the artifact in the report. Defaults to its path.

    Returns:
        A dict: ``artifact``, ``format``, ``precision``, ``n``, ``accuracy``,
        ``reference_accuracy``, ``agreement``, ``max_abs_diff``, ``outputs``
        (per output: the check, value, tolerance, passed), ``classification_report``,
        ``tolerance``, ``failures`` (list of dicts with ``message``), ``passed``.

    Raises:
        VerificationError: a check failed (``failures`` lists every one).
        ArtifactError: the artifact is missing or corrupt.
    """
    from tfdeploy.runtime import load

    runner = load(artifact) if isinstance(artifact, (str, os.PathLike)) else artifact
    x = np.asarray(x, dtype=np.float32)
    if not len(x):
        raise DataError("verify needs at least one input sample.")
    ref = _reference_probs(reference, x, batch_size)
    ref_top = np.argmax(ref, axis=-1)
    precision = artifact_precision(runner)
    tol = {**TOLERANCES[precision], **(tolerance or {})}
    unknown = set(tol) - set(TOLERANCES["float32"])
    if unknown:
        raise DataError(f"Unknown tolerance keys {sorted(unknown)}; use "
                        f"{sorted(TOLERANCES['float32'])}.")
    label = name or str(runner.path)
    names = class_names if class_names is not None else _labels_of(runner)
    outs = _run_all(runner, x, batch_size)
    primary = _primary(outs, ref)
    failures, checks = [], {}

    def check(output, kind, value, limit, ok):
        checks[output] = {"check": kind, "value": value, "tolerance": limit, "passed": bool(ok)}
        if not ok:
            op = ">" if kind == "max_abs_diff" else "<"
            failures.append({"artifact": label, "output": output, "check": kind, "value": value,
                             "tolerance": limit,
                             "message": f"{label}: output {output!r} {kind} {value:.4g} {op} "
                                        f"tolerance {limit:.4g}"})

    if primary is None:
        failures.append({"artifact": label, "output": None, "check": "outputs", "value": None,
                         "tolerance": None,
                         "message": f"{label}: no output matches the reference shape "
                                    f"{ref.shape}; outputs are "
                                    f"{ {k: v.shape for k, v in outs.items()} }"})
        top = None
        max_diff = None
    else:
        probs = outs[primary].astype(np.float64)
        max_diff = float(np.max(np.abs(probs - ref)))
        top = np.argmax(probs, axis=-1)
        if tol["atol"] is None:
            checks[primary] = {"check": "max_abs_diff", "value": max_diff, "tolerance": None,
                               "passed": True}
        else:
            check(primary, "max_abs_diff", max_diff, tol["atol"],
                  np.isfinite(max_diff) and max_diff <= tol["atol"])
        if "class_index" not in outs:
            agreement = float(np.mean(top == ref_top))
            check(f"{primary}:argmax", "agreement", agreement, tol["min_agreement"],
                  agreement >= tol["min_agreement"])
    if "class_index" in outs:
        index = outs["class_index"].astype(np.int64).ravel()
        top = index if top is None else top
        agreement = float(np.mean(index == ref_top))
        check("class_index", "agreement", agreement, tol["min_agreement"],
              agreement >= tol["min_agreement"])
    if "class_label" in outs and names is not None:
        got = [v.decode() if isinstance(v, bytes) else str(v) for v in outs["class_label"]]
        want = [str(names[i]) if i < len(names) else "" for i in ref_top]
        agreement = float(np.mean([g == w for g, w in zip(got, want)]))
        check("class_label", "agreement", agreement, tol["min_agreement"],
              agreement >= tol["min_agreement"])
    agreement = float(np.mean(top == ref_top)) if top is not None else 0.0
    result = {"artifact": label, "format": runner.format, "precision": precision, "n": len(x),
              "agreement": agreement, "max_abs_diff": max_diff, "outputs": checks,
              "tolerance": tol, "accuracy": None, "reference_accuracy": None,
              "classification_report": None}
    if y is not None:
        y = np.asarray(y).astype(np.int64).ravel()
        if len(y) != len(x):
            raise DataError(f"x has {len(x)} samples but y has {len(y)} labels.")
        ref_acc = float(np.mean(ref_top == y))
        result["reference_accuracy"] = ref_acc
        if top is not None:
            acc = float(np.mean(top == y))
            result["accuracy"] = acc
            result["classification_report"] = classification_report(y, top, names)
            drop = ref_acc - acc
            if not drop <= tol["max_accuracy_drop"]:
                failures.append({"artifact": label, "output": "accuracy",
                                 "check": "accuracy_drop", "value": drop,
                                 "tolerance": tol["max_accuracy_drop"],
                                 "message": f"{label}: accuracy {acc:.4f} is {drop:.4f} below "
                                            f"the reference {ref_acc:.4f} > tolerance "
                                            f"{tol['max_accuracy_drop']:.4g}"})
    result["failures"] = failures
    result["passed"] = not failures
    if failures and raise_on_failure:
        raise VerificationError(_message(failures), failures)
    return result


def verify_all(artifacts, reference, x, y=None, class_names=None, tolerance=None,
               batch_size=64, raise_on_failure=True):
    """`verify` every artifact, then raise one `VerificationError` listing all failures.

    Returns:
        The list of per-artifact result dicts (when nothing failed or
        ``raise_on_failure`` is False).
    """
    results = [verify(a, reference, x, y, class_names, tolerance, batch_size,
                      raise_on_failure=False) for a in artifacts]
    failures = [f for r in results for f in r["failures"]]
    if failures and raise_on_failure:
        raise VerificationError(_message(failures), failures)
    return results


def _message(failures):
    return (f"{len(failures)} verification check(s) failed:\n  - "
            + "\n  - ".join(f["message"] for f in failures))


def format_results(results):
    """One line per artifact: format, precision, accuracy, agreement, max diff, status."""
    head = ["artifact", "format", "precision", "accuracy", "agreement", "max|diff|", "status"]
    rows = [[r["artifact"][-44:], r["format"], r["precision"],
             "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}",
             f"{r['agreement']:.4f}",
             "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.3g}",
             "ok" if r["passed"] else "FAIL"] for r in results]
    return render(head, rows, align="lllrrrl", sep=" ")
