"""``tfdeploy bench``: latency, throughput, memory and FLOP/s of artifacts in their runtimes."""

NAME = "bench"
HELP = ("Benchmark artifacts in their own runtimes: p50/p90/p99 latency at batch 1, "
        "throughput at a larger batch, peak memory, FLOPs and share of machine peak.")


def add_arguments(parser):
    parser.add_argument("artifacts", nargs="+", help="SavedModel dirs, .tflite or .onnx files.")
    parser.add_argument("--model", help="Also benchmark this Keras model (the float baseline).")
    parser.add_argument("--data", help="Image directory for inputs (default: random pixels).")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="Batch size of the throughput run. Default: 32.")
    parser.add_argument("--iters", type=int, default=100,
                        help="Timed batch-1 calls per artifact. Default: 100.")
    parser.add_argument("--threads", type=int,
                        help="Threads for every runtime (TensorFlow's, TFLite's, onnxruntime's).")
    parser.add_argument("--json", help="Also write the results to this JSON file.")
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")


def run(args):
    import json

    import numpy as np

    from tfdeploy._json import write_json
    from tfdeploy.commands._artifacts import dataset_for, input_shape_of
    from tfdeploy.model_io import load_model

    if args.threads:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # TensorFlow already started; its default thread pools stay
    from tfdeploy.runtime import load
    from tfdeploy.verify import bench, format_table

    model = load_model(args.model) if args.model else None
    shape = input_shape_of(model if model is not None else load(args.artifacts[0]))
    if args.data:
        from tfdeploy.data import to_numpy

        x, _ = to_numpy(dataset_for(args.data, shape, split="test"))
    else:
        x = np.random.default_rng(0).uniform(0, 255, (64, *shape)).astype(np.float32)
    targets = ([model] if model is not None else []) + list(args.artifacts)
    results = [bench(t, x, batch_size=args.batch_size, iters=args.iters, threads=args.threads,
                     progress=not args.no_progress) for t in targets]
    print(format_table(results))
    print(json.dumps(results, default=str))
    if args.json:
        write_json(args.json, results)
    return 0
