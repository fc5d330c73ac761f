"""``tfdeploy tune``: search compression plans under an accuracy budget (keras-tuner)."""

NAME = "tune"
HELP = ("Search compression plans (slim, prune/2:4, cluster, QAT, int8/float16/dynamic) for the "
        "smallest or fastest TFLite artifact within an accuracy budget.")

ROLES_HELP = ("Distributed search with keras-tuner's chief/worker mode: 'chief' serves the "
              "oracle, 'worker0', 'worker1', ... run trials. Start one chief and any number of "
              "workers with the same arguments and --oracle-port.")


def add_arguments(parser):
    parser.add_argument("model", help="Trained float Keras model saved with model.save "
                                      "(.keras, .h5 or a SavedModel directory).")
    parser.add_argument("--data", required=True,
                        help="Image directory with train/ and test/ class folders.")
    parser.add_argument("--budget", type=float, default=1.0,
                        help="Largest accuracy drop allowed, in points. Default: 1.0.")
    parser.add_argument("--objective", default="size", choices=["size", "latency", "mix"],
                        help="Minimise gzip bytes, p50 latency, or half of each. Default: size.")
    parser.add_argument("--max-trials", type=int, default=10, help="Trials in total. Default: 10.")
    parser.add_argument("--tuner", default="bayesian", choices=["bayesian", "hyperband", "random"],
                        help="Search algorithm. Default: bayesian.")
    parser.add_argument("--directory", default="tune",
                        help="Tuner directory; running again resumes the search. Default: tune.")
    parser.add_argument("--output", "-o", default="saved_models/tuned",
                        help="Where the best trial's artifacts are exported. Default: "
                             "saved_models/tuned.")
    parser.add_argument("--logs", default=None, help="TensorBoard directory (HParams per trial).")
    parser.add_argument("--space", default=None,
                        help='JSON overrides of the search space, e.g. \'{"qat": [true], '
                             '"clusters": [0, 16]}\'.')
    parser.add_argument("--initial-points", default=None,
                        help="JSON list of plans the oracle tries first, e.g. '[{\"slim_ratio\": "
                             "0.5, \"qat\": true}]'; '[]' for none. Default: the known recipes "
                             "(tfdeploy.tune.INITIAL_POINTS) the space can express.")
    parser.add_argument("--max-epochs", type=int, default=3,
                        help="Hyperband's largest fine-tuning epochs. Default: 3.")
    parser.add_argument("--latency-samples", type=int, default=50,
                        help="Inputs timed per artifact. Default: 50.")
    parser.add_argument("--overwrite", action="store_true", help="Discard a previous search.")
    parser.add_argument("--jit-compile", action="store_true",
                        help="XLA-compile fine-tuning steps (slim/2:4/cluster stages).")
    parser.add_argument("--distributed", default=None, metavar="ROLE", help=ROLES_HELP)
    parser.add_argument("--oracle-ip", default="127.0.0.1",
                        help="Chief oracle address for --distributed. Default: 127.0.0.1.")
    parser.add_argument("--oracle-port", type=int, default=8000,
                        help="Chief oracle port for --distributed. Default: 8000.")
    parser.add_argument("--json", default=None, help="Also write the result as JSON here.")
    parser.add_argument("--seed", type=int, default=0, help="Seed. Default: 0.")


def _set_role(args):
    import os
    import re

    from tfdeploy.errors import TuneError

    if args.distributed is None:
        return None
    if not re.fullmatch(r"chief|worker\d+", args.distributed):
        raise TuneError(f"--distributed must be 'chief' or 'worker<N>' (worker0, worker1, ...), "
                        f"received {args.distributed!r}.")
    os.environ["KERASTUNER_TUNER_ID"] = args.distributed
    os.environ["KERASTUNER_ORACLE_IP"] = args.oracle_ip
    os.environ["KERASTUNER_ORACLE_PORT"] = str(args.oracle_port)
    return args.distributed


def _json_arg(text, flag, error):
    import json

    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{flag} is not valid JSON ({exc}): {text!r}") from exc


def run(args):
    import os

    from tfdeploy.commands._artifacts import image_split, input_shape_of, load_keras_model
    from tfdeploy.errors import TuneError

    role = _set_role(args)
    space = _json_arg(args.space, "--space", TuneError)
    points = _json_arg(args.initial_points, "--initial-points", TuneError)
    import tfdeploy.tune as tune
    from tfdeploy.data import image_dataset, to_numpy

    model = load_keras_model(args.model)
    height, width, channels = input_shape_of(model)
    mode = "grayscale" if channels == 1 else "rgb"
    train = image_dataset(image_split(args.data, "train"), (height, width), mode, shuffle=True,
                          seed=args.seed)
    x, y = to_numpy(image_dataset(image_split(args.data, "test"), (height, width), mode))
    result = tune.search(model, train, (x, y), budget=args.budget, objective=args.objective,
                         max_trials=args.max_trials, tuner=args.tuner, directory=args.directory,
                         space=space, log_dir=args.logs, overwrite=args.overwrite,
                         max_epochs=args.max_epochs, latency_samples=args.latency_samples,
                         jit_compile=args.jit_compile, seed=args.seed, initial_points=points)
    print(result.summary())
    payload = {"role": role, "directory": result.directory, "seconds": round(result.seconds, 2),
               "baseline": result.baseline, "best": result.best, "trials": result.trials}
    if role in (None, "chief"):
        if result.best is None:
            print(f"No trial met the {args.budget}-point budget; nothing exported.")
        else:
            exported = result.export(args.output, x, y)
            v = exported["verification"]
            print(f"best trial {result.best['trial_id']} exported to {exported['tflite']} "
                  f"(verified in LiteRT: accuracy {v['accuracy']:.4f})")
            payload["exported"] = {k: exported[k] for k in ("tflite", "keras")}
    if args.json:
        from tfdeploy.commands._artifacts import write_json

        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        write_json(args.json, payload)
    return 0 if role is not None or result.best is not None else 1
