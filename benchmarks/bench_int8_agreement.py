"""How far the int8 files of a version stray from float, on a validation split, per quantizer setting.

    python benchmarks/bench_int8_agreement.py --version_dir /tmp/i21-model/build/mobilenet_v2/1 \\
        --digits /tmp/i21-model/build/digits [--configs base u8 pertensor ...] [--out FILE]

The data are ``mobilenet_v2_224_model.load_task``'s: calibration on the 216 training images (as
the exporter does), scoring on the 5-9 train images outside the label fraction (a validation
split the model never saw; never the test split). For the version's own int8 files (ONNX and
TFLite) and for the float ONNX file re-quantized by onnxruntime with each ``--configs``
setting, recorded: validation top-1, the answers that differ from the float file's, and the
float file's margin (top-1 minus top-2 probability) on each of those.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _record import write_result  # noqa: E402

#: onnxruntime.quantization settings, as changes to "base": QDQ, s8 activations, s8
#: per-channel weights, MinMax, 200 samples (the exporter's settings until session 11; it now
#: uses "u8" after onnxruntime's pre-processing, which the configs here do not run).
CONFIGS = {
    "base": {},
    "u8": {"activation_type": "QUInt8"},
    "float_softmax": {"exclude": ["Softmax"]},
    "n64": {"samples": 64},
    "percentile64": {"samples": 64, "calibrate_method": "Percentile"},
    "reduce_range": {"reduce_range": True},
    "pertensor": {"per_channel": False},
}


def _onnx_predict(path, x, batch=32):
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + batch]})[0]
                           for i in range(0, len(x), batch)])


def _tflite_predict(path, x):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(path, num_threads=2)
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    out = []
    for row in x:
        it.set_tensor(i, row[None])
        it.invoke()
        out.append(it.get_tensor(o)[0])
    return np.array(out)


def quantize(float_path, out_path, calibration, config):
    import onnx
    from onnxruntime import quantization as q

    class Reader(q.CalibrationDataReader):
        def __init__(self, rows):
            self._rows = iter(rows)

        def get_next(self):
            row = next(self._rows, None)
            return None if row is None else {"images": row[None]}

    types = sorted({n.op_type for n in onnx.load(float_path).graph.node}
                   - set(config.get("exclude", ())))
    q.quantize_static(
        float_path, out_path, Reader(calibration[:config.get("samples", 200)]),
        quant_format=q.QuantFormat.QDQ,
        activation_type=getattr(q.QuantType, config.get("activation_type", "QInt8")),
        weight_type=q.QuantType.QInt8, per_channel=config.get("per_channel", True),
        reduce_range=config.get("reduce_range", False), op_types_to_quantize=types,
        calibrate_method=getattr(q.CalibrationMethod, config.get("calibrate_method", "MinMax")))


def score(pred, ref, y):
    flips = np.flatnonzero(pred.argmax(1) != ref.argmax(1))
    top2 = np.sort(ref, 1)[:, -2:]
    return {"top1": round(float(np.mean(pred.argmax(1) == y)), 4),
            "float_top1": round(float(np.mean(ref.argmax(1) == y)), 4),
            "differ_from_float": int(len(flips)), "examples": int(len(y)),
            "right_to_wrong": int(np.sum(ref.argmax(1)[flips] == y[flips])),
            "wrong_to_right": int(np.sum(pred.argmax(1)[flips] == y[flips])),
            "float_margin_of_differing": [round(float(m), 3)
                                          for m in (top2[:, 1] - top2[:, 0])[flips]],
            "max_abs_diff": round(float(np.abs(pred - ref).max()), 4)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--version_dir", required=True)
    p.add_argument("--digits", required=True, help="the build's digits tree (train/, test/)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--label-fraction", type=float, default=0.3)
    p.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from mobilenet_v2_224_model import load_task

    task = load_task(args.digits, args.image_size, args.label_fraction)
    (xc, _), (xv, yv) = task["train"], task["validation"]
    float_onnx = os.path.join(args.version_dir, "model_float32.onnx")
    ref = _onnx_predict(float_onnx, xv)
    result = {"benchmark": "bench_int8_agreement", "argv": sys.argv[1:] if argv is None
              else list(argv), "calibration_examples": int(len(xc)),
              "validation_examples": int(len(xv)), "files": {}, "configs": {}}
    for name, predict in (("model_int8.onnx", _onnx_predict),
                          ("model_int8.tflite", _tflite_predict)):
        path = os.path.join(args.version_dir, name)
        if os.path.exists(path):
            result["files"][name] = score(predict(path, xv), ref, yv)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            start = time.perf_counter()
            out = os.path.join(tmp, f"{name}.onnx")
            quantize(float_onnx, out, xc, CONFIGS[name])
            result["configs"][name] = {"settings": CONFIGS[name], **score(
                _onnx_predict(out, xv), ref, yv), "seconds": round(time.perf_counter() - start, 1)}
            print(json.dumps({name: result["configs"][name]}), file=sys.stderr, flush=True)
    result["load_average_end"] = os.getloadavg()
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
