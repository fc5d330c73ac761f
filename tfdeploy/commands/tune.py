"""``tfdeploy tune``: search compression plans under an accuracy budget (keras-tuner)."""

NAME = "tune"
DEFAULT_VALIDATION_SPLIT = 0.2
HELP = ("Search compression plans (slim, prune/2:4, cluster, QAT, int8/float16/dynamic) for the "
        "smallest or fastest TFLite artifact within an accuracy budget.")

ROLES_HELP = ("Distributed search with keras-tuner's chief/worker mode: 'chief' serves the "
              "oracle, 'worker0', 'worker1', ... run trials. Start one chief and any number of "
              "workers with the same arguments and --oracle-port.")


def add_arguments(parser):
    parser.add_argument("model", help="Trained float Keras model saved with model.save "
                                      "(.keras, .h5 or a SavedModel directory).")
    parser.add_argument("--data", required=True,
                        help="Image directory with train/ and test/ class folders (and val/, "
                             "when you hold out your own validation images). The search "
                             "fine-tunes and calibrates on train/, chooses on the validation "
                             "split, and reads test/ once, for the chosen artifact.")
    parser.add_argument("--validation-split", type=float, default=None,
                        help="Fraction of each class of train/ held out (stratified, seeded "
                             "by --seed) to choose on, when DATA has no val/ folder. "
                             f"Default: {DEFAULT_VALIDATION_SPLIT}.")
    parser.add_argument("--budget", type=float, default=1.0,
                        help="Largest drop of validation accuracy allowed, in points. "
                             "Default: 1.0.")
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


def splits(data, image_size, color_mode, validation_split, seed):
    """``(train_ds, (x_val, y_val), (x_test, y_test) or None, how)`` for ``tfdeploy tune``.

    The validation split is ``DATA/val/`` when present, else ``validation_split``
    of each class of ``DATA/train/`` (stratified, seeded), never the test split;
    ``how`` says which, for the report.
    """
    import os

    from tfdeploy.commands._artifacts import image_split
    from tfdeploy.data import image_dataset, to_numpy
    from tfdeploy.errors import TuneError

    train_dir, val_dir, test_dir = (os.path.join(data, s) for s in ("train", "val", "test"))
    train_dir = train_dir if os.path.isdir(train_dir) else image_split(data, "train")
    kw = dict(image_size=image_size, color_mode=color_mode)
    if os.path.isdir(val_dir):
        if validation_split is not None:
            raise TuneError(f"{data} has a val/ folder and --validation-split "
                            f"{validation_split} was given: choose one. Remove the flag to "
                            "choose on val/, or move val/ away to hold out part of train/.")
        train = image_dataset(train_dir, shuffle=True, seed=seed, **kw)
        val = to_numpy(image_dataset(val_dir, **kw))
        how = {"validation": val_dir}
    else:
        fraction = DEFAULT_VALIDATION_SPLIT if validation_split is None else validation_split
        split = dict(validation_split=fraction, seed=seed, **kw)
        train = image_dataset(train_dir, shuffle=True, subset="training", **split)
        val = to_numpy(image_dataset(train_dir, subset="validation", **split))
        how = {"validation": f"{fraction} of {train_dir} (stratified, seed {seed})"}
    test = to_numpy(image_dataset(test_dir, **kw)) if os.path.isdir(test_dir) else None
    how.update(train=train_dir, test=test_dir if test is not None else None,
               validation_examples=int(len(val[1])))
    return train, val, test, how


def run(args):
    from tfdeploy.commands._artifacts import input_shape_of
    from tfdeploy.model_io import load_model
    from tfdeploy.errors import TuneError

    role = _set_role(args)
    space = _json_arg(args.space, "--space", TuneError)
    points = _json_arg(args.initial_points, "--initial-points", TuneError)
    import tfdeploy.tune as tune

    model = load_model(args.model)
    height, width, channels = input_shape_of(model)
    mode = "grayscale" if channels == 1 else "rgb"
    train, val, test, how = splits(args.data, (height, width), mode, args.validation_split,
                                   args.seed)
    print(f"choosing on {how['validation']} ({how['validation_examples']} images); "
          + (f"test accuracy from {how['test']}, for the chosen artifact only"
             if test is not None else f"no test/ folder in {args.data}: no test accuracy"))
    result = tune.search(model, train, val, budget=args.budget, objective=args.objective,
                         max_trials=args.max_trials, tuner=args.tuner, directory=args.directory,
                         space=space, log_dir=args.logs, overwrite=args.overwrite,
                         max_epochs=args.max_epochs, latency_samples=args.latency_samples,
                         jit_compile=args.jit_compile, seed=args.seed, initial_points=points,
                         test_data=test)
    print(result.summary())
    payload = {"role": role, "directory": result.directory, "seconds": round(result.seconds, 2),
               "splits": how, "baseline": result.baseline, "best": result.best,
               "trials": result.trials}
    if role in (None, "chief"):
        if result.best is None:
            print(f"No trial met the {args.budget}-point budget; nothing exported.")
        else:
            exported = result.export(args.output)
            v, test_accuracy = exported["verification"], exported["test_accuracy"]
            print(f"best trial {result.best['trial_id']} exported to {exported['tflite']} "
                  f"(checked in LiteRT: validation accuracy {v['validation_accuracy']:.4f}"
                  + (f"; test accuracy {test_accuracy:.4f}" if test_accuracy is not None
                     else "") + ")")
            payload["exported"] = {k: exported[k] for k in ("tflite", "keras")}
    if args.json:
        from tfdeploy._json import write_json

        write_json(args.json, payload)
    return 0 if role is not None or result.best is not None else 1
