"""``tfdeploy inspect``: signatures, input/output names, shapes and dtypes of an artifact."""

NAME = "inspect"
HELP = ("Show the signatures, inputs and outputs of a SavedModel, .tflite or .onnx artifact "
        "(SavedModels as `saved_model_cli show --all` lists them).")


def add_arguments(parser):
    parser.add_argument("path", help="SavedModel directory (or TF Serving base path), "
                                     ".tflite or .onnx file.")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of text.")


def run(args):
    import json

    from tfdeploy.runtime.inspect import describe, inspect

    if args.json:
        print(json.dumps(inspect(args.path), indent=2, default=str))
    else:
        print(describe(args.path))
    return 0
