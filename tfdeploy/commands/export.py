"""``tfdeploy export``: write a SavedModel (TF Serving layout), TFLite or ONNX artifact."""

NAME = "export"
HELP = "Export a saved Keras model as a SavedModel (TF Serving layout), TFLite or ONNX file."


def add_arguments(parser):
    parser.add_argument("model", help="Keras model saved with model.save (.keras, .h5 or dir).")
    parser.add_argument("--format", default="saved_model",
                        choices=["saved_model", "tflite", "onnx"],
                        help="Artifact format. Default: saved_model.")
    parser.add_argument("--output", "-o", required=True,
                        help="SavedModel base path (versions go in OUTPUT/N/) or output file.")
    parser.add_argument("--data", help="Image directory (DIR/<class>/* or DIR/train/<class>/*): "
                                       "class names, warmup and calibration samples.")
    parser.add_argument("--class-names", help="Comma-separated class names (else from --data).")
    parser.add_argument("--quantization", default="float32",
                        choices=["float32", "float16", "dynamic", "int8", "int16x8"],
                        help="TFLite quantization. Default: float32.")
    parser.add_argument("--io-type", default="float32",
                        choices=["float32", "int8", "uint8", "int16"],
                        help="TFLite input/output type for int8/int16x8. Default: float32.")
    parser.add_argument("--allow-flex", action="store_true",
                        help="TFLite: allow TensorFlow (Flex) ops instead of failing.")
    parser.add_argument("--opset", type=int, default=13, help="ONNX opset. Default: 13.")
    parser.add_argument("--onnx-quantize", choices=["dynamic", "static"],
                        help="ONNX: quantize a float graph with onnxruntime's quantizer.")
    parser.add_argument("--version", type=int, help="SavedModel version (default: next free).")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace an existing SavedModel version or output file.")
    parser.add_argument("--num-warmup", type=int, default=4,
                        help="SavedModel warmup requests taken from --data. Default: 4.")
    parser.add_argument("--num-calibration", type=int, default=200,
                        help="Calibration samples for int8/int16x8/static. Default: 200.")


def run(args):
    import tfdeploy.export as export
    from tfdeploy.commands._artifacts import dataset_for, input_shape_of
    from tfdeploy.model_io import load_model
    from tfdeploy.errors import ExportError

    model = load_model(args.model)
    data = None
    class_names = args.class_names.split(",") if args.class_names else None
    if args.data:
        data = dataset_for(args.data, input_shape_of(model), split="train")
        class_names = class_names or data.class_names
    if args.format == "saved_model":
        path = export.saved_model(model, args.output, version=args.version,
                                  class_names=class_names, overwrite=args.overwrite,
                                  warmup_data=data, num_warmup=args.num_warmup)
    elif args.format == "tflite":
        if args.quantization in ("int8", "int16x8") and data is None:
            raise ExportError(f"--quantization {args.quantization} needs --data for calibration.")
        path = export.tflite(model, args.output, quantization=args.quantization,
                             representative_data=data, num_calibration=args.num_calibration,
                             class_names=class_names, io_type=args.io_type,
                             allow_flex=args.allow_flex, overwrite=args.overwrite)
    else:
        path = export.onnx(model, args.output, opset=args.opset, quantize=args.onnx_quantize,
                           representative_data=data, num_calibration=args.num_calibration,
                           class_names=class_names, overwrite=args.overwrite)
    print(path)
    return 0
