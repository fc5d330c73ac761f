"""``tfdeploy serving-config``: write configs and manifests for the real TF Serving."""

NAME = "serving-config"
HELP = ("Write models.config, batching and monitoring configs, docker-compose.yml and "
        "Kubernetes manifests for the tensorflow/serving image, and a KServe InferenceService "
        "(V2 protocol) on tfdeploy serve.")


def add_arguments(parser):
    parser.add_argument("--model", action="append", default=[], metavar="NAME=BASE_PATH",
                        help="A model to serve (repeatable), e.g. digits=saved_models/digits.")
    parser.add_argument("--model_name", default=None, help="Single-model form: its name.")
    parser.add_argument("--model_base_path", default=None, help="Single-model form: base path.")
    parser.add_argument("--output_dir", default="serving_config",
                        help="Directory to write into. Defaults to serving_config/.")
    parser.add_argument("--version_policy", choices=["latest", "all", "specific"],
                        default="latest", help="Version policy of every model. Defaults to latest.")
    parser.add_argument("--num_versions", type=int, default=1,
                        help="Versions kept by the latest policy. Defaults to 1.")
    parser.add_argument("--versions", type=int, nargs="*", default=[],
                        help="Versions served by the specific policy.")
    parser.add_argument("--label", action="append", default=[], metavar="NAME:LABEL=VERSION",
                        help="A version label, e.g. digits:stable=1 (repeatable).")
    parser.add_argument("--enable_batching", action="store_true",
                        help="Write batching_parameters.txt and turn batching on.")
    parser.add_argument("--max_batch_size", type=int, default=32)
    parser.add_argument("--batch_timeout_micros", type=int, default=1000)
    parser.add_argument("--num_batch_threads", type=int, default=None)
    parser.add_argument("--max_enqueued_batches", type=int, default=100)
    parser.add_argument("--allowed_batch_sizes", type=int, nargs="*", default=[])
    parser.add_argument("--monitoring_path", default="/monitoring/prometheus/metrics",
                        help="Prometheus path; '' writes no monitoring config.")
    parser.add_argument("--image", default="tensorflow/serving:latest",
                        help="TF Serving image. Defaults to tensorflow/serving:latest.")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--models_pvc", default=None,
                        help="PersistentVolumeClaim holding the models (default APP-models).")
    parser.add_argument("--app", default="tfserving", help="Kubernetes app name.")


def _configs(args):
    from tfdeploy.runtime.versions import parse_version
    from tfdeploy.serving.repository import ModelConfig
    from tfdeploy.serving.status import ServingConfigError

    pairs = []
    for item in args.model:
        name, sep, base = item.partition("=")
        if not sep or not name or not base:
            raise ServingConfigError(f"--model expects NAME=BASE_PATH, received {item!r}.")
        pairs.append((name, base))
    if args.model_base_path:
        pairs.append((args.model_name or "default", args.model_base_path))
    if not pairs:
        raise ServingConfigError("No models given: pass --model NAME=BASE_PATH (repeatable) or "
                                 "--model_name and --model_base_path.")
    labels = {}
    for item in args.label:
        head, sep, version = item.partition("=")
        name, sep2, label = head.partition(":")
        number = parse_version(version)
        if not (sep and sep2) or number is None or number < 0:
            raise ServingConfigError(f"--label expects NAME:LABEL=VERSION, received {item!r}.")
        labels.setdefault(name, {})[label] = number
    unknown = sorted(set(labels) - {n for n, _ in pairs})
    if unknown:
        raise ServingConfigError(f"--label names unknown models {unknown}; models are "
                                 f"{[n for n, _ in pairs]}.")
    try:
        return [ModelConfig(name=n, base_path=b, policy=args.version_policy,
                            num_versions=args.num_versions, versions=tuple(args.versions),
                            labels=labels.get(n, {})) for n, b in pairs]
    except ValueError as exc:
        raise ServingConfigError(str(exc)) from exc


def run(args):
    from tfdeploy.deploy import write_configs
    from tfdeploy.serving.status import ServingConfigError

    configs = _configs(args)
    batching = None
    if args.enable_batching:
        batching = {"max_batch_size": args.max_batch_size,
                    "batch_timeout_micros": args.batch_timeout_micros,
                    "num_batch_threads": args.num_batch_threads,
                    "max_enqueued_batches": args.max_enqueued_batches,
                    "allowed_batch_sizes": args.allowed_batch_sizes}
    try:
        paths = write_configs(configs, args.output_dir, batching=batching,
                              monitoring_path=args.monitoring_path or None, image=args.image,
                              replicas=args.replicas, models_pvc=args.models_pvc, app=args.app)
    except ValueError as exc:
        raise ServingConfigError(str(exc)) from exc
    for name, path in paths.items():
        print(f"wrote {path}")
    print(f"Run the real TF Serving with: docker compose -f {paths['docker-compose.yml']} up")
    return 0
