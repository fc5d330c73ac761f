"""``tfdeploy report``: write report.md and a self-contained report.html for a run."""

NAME = "report"
HELP = ("Write RUN_DIR/report.md and a self-contained RUN_DIR/report.html: re-render a saved "
        "run (the quickstart's reports/quickstart), or evaluate --artifact files on --data "
        "and report them (table, per-class reports, plots, saliency with --model).")


def add_arguments(parser):
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="report directory; holds run.json when re-rendering")
    parser.add_argument("--artifact", action="append", default=[], metavar="PATH",
                        help="SavedModel dir, .tflite or .onnx to evaluate (repeat; the first "
                             "is the reference for agreement)")
    parser.add_argument("--data", help="image directory (DIR/test/<class>/* or DIR/<class>/*); "
                                       "needed with --artifact")
    parser.add_argument("--model", action="append", default=[], metavar="PATH",
                        help="Keras model file to explain with integrated gradients and "
                             "Grad-CAM (repeat: the first is the float model)")
    parser.add_argument("--logs", help="also write HParams, images and the table to this "
                                       "TensorBoard directory")
    parser.add_argument("--title", default=None, help="report title")


def _evaluate(args):
    import os

    from tfdeploy import runtime, verify, viz
    from tfdeploy.commands._artifacts import dataset_for, input_shape_of
    from tfdeploy.model_io import load_model
    from tfdeploy.data import to_numpy
    from tfdeploy.errors import DataError
    from tfdeploy.verify.report import artifact_precision

    if not args.data:
        raise DataError("--artifact needs --data DIR (the labelled images to evaluate on).")
    runners = {}
    for path in args.artifact:
        runner = runtime.load(path)
        precision = artifact_precision(runner)
        runners[f"{os.path.basename(os.path.normpath(path))} ({runner.format} {precision})"] = \
            (runner, path, precision)
    first = next(iter(runners.values()))[0]
    data = dataset_for(args.data, input_shape_of(first), split="test")
    x, y = to_numpy(data)
    rows = []
    for name, (runner, path, precision) in runners.items():
        sparsity = (verify.weight_summary(path)["sparsity"] if runner.format == "tflite"
                    else None)
        rows.append({"variant": name, "quantization": precision, "format": runner.format,
                     "runtime": runner.format, "sparsity": sparsity,
                     "file_bytes": verify.path_bytes(path), "gzip_bytes": verify.gzip_bytes(path),
                     "accuracy": verify.accuracy(runner, x, y),
                     "ms_per_sample": verify.latency_ms(runner, x)})
    models = {os.path.basename(p): load_model(p) for p in args.model} or None
    out = viz.visualize(rows, x, y, data.class_names,
                        {name: r for name, (r, _, _) in runners.items()}, log_dir=args.logs,
                        report_dir=args.run_dir, models=models,
                        title=args.title or "tfdeploy report")
    return out["report"]


def run(args):
    from tfdeploy import viz

    if args.artifact:
        paths = _evaluate(args)
    else:
        if args.model or args.data or args.logs:
            print("tfdeploy report: --model/--data/--logs apply with --artifact; re-rendering "
                  "the saved run only.")
        paths = viz.render_report(args.run_dir)
    print(f"wrote {paths['md']}\nwrote {paths['html']}")
    return 0
