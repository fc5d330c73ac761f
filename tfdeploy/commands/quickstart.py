"""``tfdeploy quickstart`` (also ``python recipes/quickstart.py``): the worked example.

Train the classic CNN on an image directory, prune to 80 %, fine-tune with
pruning-preserving QAT, export SavedModel + TFLite float32 + TFLite int8, evaluate
every artifact in its own runtime, and print one comparison table.
"""

import json
import sys
import time

from tfdeploy.commands import add_run_arguments

NAME = "quickstart"
HELP = ("Train, prune, QAT-fine-tune, export (SavedModel, TFLite float32/int8) and verify on "
        "the bundled digits or your image directory; print one comparison table.")


def add_arguments(p):
    add_run_arguments(p, "quickstart", "image directory with train/ and test/ class folders "
                      "(default: the bundled digits, written to data/digits)", epochs=8,
                      epochs_help="baseline training epochs")
    p.add_argument("--name", default="digits",
                   help="model name; the SavedModel goes to OUTPUT/NAME/VERSION "
                        "(default: %(default)s)")
    p.add_argument("--prune-epochs", type=int, default=4,
                   help="pruning fine-tune epochs (default: %(default)s)")
    p.add_argument("--qat-epochs", type=int, default=2,
                   help="QAT fine-tune epochs (default: %(default)s)")
    p.add_argument("--sparsity", type=float, default=0.8,
                   help="pruning target sparsity (default: %(default)s)")
    p.add_argument("--width", type=float, default=0.25,
                   help="CNN width multiplier (default: %(default)s)")
    p.add_argument("--image-size", type=int, nargs=2, default=(32, 32), metavar=("H", "W"),
                   help="input image size (default: 32 32)")
    p.add_argument("--report", default="reports/quickstart",
                   help="where report.md and the self-contained report.html go "
                        "(default: %(default)s)")
    p.add_argument("--no-visuals", action="store_true",
                   help="skip plots, saliency maps, HParams and the report (text table only)")


def run(args):
    from tfdeploy.errors import TfdeployError
    from tfdeploy.pipeline import format_table, json_rows, quickstart

    start = time.perf_counter()
    try:
        result = quickstart(
            data_dir=args.data, output_dir=args.output, log_dir=args.logs, name=args.name,
            epochs=args.epochs, prune_epochs=args.prune_epochs, qat_epochs=args.qat_epochs,
            sparsity=args.sparsity, width=args.width, image_size=tuple(args.image_size),
            seed=args.seed, verbose=0 if args.quiet else 2, report_dir=args.report,
            visuals=not args.no_visuals)
    except TfdeployError as exc:
        print(f"quickstart: error: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    print()
    print(format_table(result["rows"]))
    print("\nartifacts:")
    for key, path in result["artifacts"].items():
        print(f"  {key:<24} {path}")
    print(f"TensorBoard: tensorboard --logdir {args.logs}")
    if result.get("report"):
        print(f"report: {result['report']['html']} (and report.md)")
    print(f"total {elapsed:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": json_rows(result["rows"]), "timings": result["timings"],
                       "total_s": elapsed}, f, indent=1)
    return 0
