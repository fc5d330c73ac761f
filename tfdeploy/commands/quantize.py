"""``tfdeploy quantize``: per-layer int8 sensitivity and automatic mixed precision, measured on
the exported ``.tflite`` in LiteRT.

    tfdeploy quantize model.keras --data DIR --report --json sens.json --logs logs/quantize
    tfdeploy quantize model.keras --data DIR --budget 0.5 --objective size -o model_auto.tflite \
        [--max-latency-ratio 1.0|none]
"""

NAME = "quantize"
HELP = ("Per-layer int8 sensitivity (--report) and automatic mixed precision (--budget): "
        "every candidate .tflite is measured in LiteRT on a validation split of DIR's training "
        "images.")


def add_arguments(parser):
    parser.add_argument("model", help="Keras model saved with model.save (.keras, .h5 or dir).")
    parser.add_argument("--data", required=True,
                        help="Image directory (DIR/train/<class>/* or DIR/<class>/*): its "
                             "training images are split into calibration and validation.")
    parser.add_argument("--report", action="store_true",
                        help="Measure and print the per-layer sensitivity table.")
    parser.add_argument("--json", help="Write the sensitivity (--report) and/or the search "
                                       "result (--budget) to this JSON file.")
    parser.add_argument("--logs", help="TensorBoard log directory for the sensitivity image.")
    parser.add_argument("--budget", type=float,
                        help="Automatic mixed precision: validation accuracy points the file "
                             "may lose against float (e.g. 0.5). Needs --output.")
    parser.add_argument("--objective", default="size", choices=["size", "latency"],
                        help="Ship the smallest or the fastest file within the budget. "
                             "Default: size.")
    parser.add_argument("--max-latency-ratio", "--max_latency_ratio", type=_ratio, default=1.0,
                        help="Ship a file only if it is at batch 1 within this times the "
                             "float file, less a 10%% margin for the clock's noise (25%% "
                             "where an operator runs outside XNNPACK), in each of "
                             "7 rounds timed in turns in LiteRT; 'none' turns the check off. "
                             "Default: 1.0 (clearly not slower than float).")
    parser.add_argument("--output", "-o", help="The mixed-precision .tflite to write.")
    parser.add_argument("--validation-fraction", type=float, default=0.2,
                        help="Share of the training images held out for selection. "
                             "Default: 0.2.")
    parser.add_argument("--num-calibration", type=int, default=200,
                        help="Calibration samples. Default: 200.")
    parser.add_argument("--overwrite", action="store_true", help="Replace --output.")


def _ratio(text):
    """``--max-latency-ratio``: a number, or none/off for no latency check."""
    import argparse

    if text.strip().lower() in ("none", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number (e.g. 1.0) or 'none', received {text!r}") from None


def _split(data, fraction):
    import numpy as np

    from tfdeploy.data import to_numpy
    from tfdeploy.errors import DataError

    if not 0 < fraction < 1:
        raise DataError(f"--validation-fraction must be between 0 and 1, received {fraction}.")
    x, y = to_numpy(data)
    order = np.random.default_rng(0).permutation(len(x))
    cut = int(round(len(x) * (1 - fraction)))
    if cut < 1 or cut >= len(x):
        raise DataError(f"{len(x)} training images cannot be split {1 - fraction:.0%} / "
                        f"{fraction:.0%}; add images or change --validation-fraction.")
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


def run(args):
    from tfdeploy._table import render
    from tfdeploy._json import write_json
    from tfdeploy.commands._artifacts import dataset_for, input_shape_of
    from tfdeploy.model_io import load_model
    from tfdeploy.errors import ExportError
    import tfdeploy.export as export
    from tfdeploy.verify import precision_counts, precision_map

    if not args.report and args.budget is None:
        raise ExportError("Nothing to do: pass --report (per-layer sensitivity) and/or "
                          "--budget POINTS --output FILE (automatic mixed precision).")
    if args.budget is not None and not args.output:
        raise ExportError("--budget needs --output FILE.tflite for the mixed-precision file.")
    model = load_model(args.model)
    data = dataset_for(args.data, input_shape_of(model), split="train")
    (x, _), validation = _split(data, args.validation_fraction)
    payload = {"validation_samples": len(validation[1])}
    card = None
    if args.budget is not None:
        path = export.tflite(model, args.output, quantization="auto", representative_data=x,
                             num_calibration=args.num_calibration, budget=args.budget,
                             validation_data=validation, objective=args.objective,
                             max_latency_ratio=args.max_latency_ratio,
                             class_names=data.class_names, overwrite=args.overwrite)
        card = export.read_model_card(path)["artifact"]["mixed_precision"]
    if args.report:
        if card is not None:  # the search measured it on the same files: not measured twice
            from tfdeploy.export.mixed_precision import Sensitivity

            result = Sensitivity.from_dict(card["sensitivity"])
        else:
            result = export.sensitivity(model, x, validation,
                                        num_calibration=args.num_calibration)
        print(result.table())
        payload["sensitivity"] = result.as_dict()
        if args.logs:
            from tfdeploy.viz import log_sensitivity

            log_sensitivity(args.logs, result)
    if card is not None:
        read = precision_map(path)
        print(render(["layer", "precision (read from the file)"], sorted(read.items()),
                     title=f"{path}: validation accuracy {card['accuracy']:.2f} % "
                           f"(float {card['float_accuracy']:.2f} %, budget "
                           f"{card['budget_points']} points, {len(card['trials'])} files "
                           "measured)"))
        print("operators per precision:", precision_counts(path))
        rejected = sum("rejected" in t for t in card["trials"])
        if card["latency_ratio"] is not None or rejected:
            shipped = ("the float file" if card["latency_ratio"] is None
                       else f"{card['latency_ratio']:.2f}x the float file's in its "
                            "slowest round")
            print(f"batch-1 latency: {shipped}; {rejected} smaller file(s) rejected: not "
                  f"within {card['max_latency_ratio']:g}x float (--max-latency-ratio) less the "
                  "margin for the clock's noise in every round (10 %, 25 % where an operator "
                  "runs outside XNNPACK)")
        payload["auto"] = {"path": path, "precision_map": read, **{
            k: card[k] for k in ("accuracy", "float_accuracy", "budget_points", "objective",
                                 "max_latency_ratio", "latency_ratio", "latency_ratio_rounds",
                                 "precision_counts",
                                 "trials")}}
    if args.json:
        write_json(args.json, payload)
    return 0
