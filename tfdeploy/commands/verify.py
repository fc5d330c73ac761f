"""``tfdeploy verify``: run artifacts on held-out data in their own runtimes and compare."""

NAME = "verify"
HELP = ("Check exported artifacts against the Keras model on held-out images: accuracy, "
        "argmax agreement, max abs diff, per-class report; exit 1 if any is out of tolerance.")


def add_arguments(parser):
    parser.add_argument("artifacts", nargs="+", help="SavedModel dirs, .tflite or .onnx files.")
    parser.add_argument("--model", required=True, help="The reference Keras model (model.save).")
    parser.add_argument("--data", required=True,
                        help="Image directory: DIR/test/<class>/* (or DIR/<class>/*).")
    parser.add_argument("--atol", type=float, help="Max abs diff of probabilities allowed "
                                                   "(default by precision: 1e-4 float32, 5e-3 "
                                                   "float16, unchecked int8).")
    parser.add_argument("--min-agreement", type=float,
                        help="Least share of top-1 agreement (default 0.99/0.98/0.95).")
    parser.add_argument("--max-accuracy-drop", type=float,
                        help="Most accuracy lost vs the Keras model (default 0.01/0.01/0.03).")
    parser.add_argument("--json", help="Also write the full results to this JSON file.")
    parser.add_argument("--quiet", action="store_true", help="Skip the per-class reports.")


def run(args):
    import sys

    from tfdeploy._json import write_json
    from tfdeploy.commands._artifacts import dataset_for, input_shape_of
    from tfdeploy.model_io import load_model
    from tfdeploy.data import to_numpy
    from tfdeploy.verify import format_classification_report, format_results, verify_all

    model = load_model(args.model)
    data = dataset_for(args.data, input_shape_of(model), split="test")
    x, y = to_numpy(data)
    tolerance = {k: v for k, v in (("atol", args.atol), ("min_agreement", args.min_agreement),
                                   ("max_accuracy_drop", args.max_accuracy_drop))
                 if v is not None}
    results = verify_all(args.artifacts, model, x, y, class_names=data.class_names,
                         tolerance=tolerance, raise_on_failure=False)
    print(format_results(results))
    if not args.quiet:
        for r in results:
            if r["classification_report"]:
                print(f"\n{r['artifact']}\n" + format_classification_report(
                    r["classification_report"]))
    if args.json:
        write_json(args.json, results)
    failures = [f for r in results for f in r["failures"]]
    if failures:
        print(f"\ntfdeploy verify: {len(failures)} check(s) failed:", file=sys.stderr)
        for f in failures:
            print(f"  - {f['message']}", file=sys.stderr)
        return 1
    return 0
