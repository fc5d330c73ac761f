"""``tfdeploy serve``: a TF-Serving-compatible model server (REST + gRPC).

Takes tensorflow_model_server's flags, e.g.
``tfdeploy serve --model_name digits --model_base_path saved_models/digits``.
"""

NAME = "serve"
HELP = ("Serve SavedModels over TF Serving's REST (8501) and gRPC (8500) APIs, with "
        "tensorflow_model_server's flags.")


def _bool(text):
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def add_arguments(parser):
    parser.add_argument("--port", type=int, default=8500,
                        help="gRPC port. Defaults to 8500.")
    parser.add_argument("--rest_api_port", type=int, default=8501,
                        help="REST port; 0 disables the REST API (as tensorflow_model_server). "
                             "Defaults to 8501.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="Interface to bind. Defaults to 127.0.0.1; pass 0.0.0.0 to expose "
                             "the server on the network.")
    parser.add_argument("--model_name", default="default",
                        help="Name of the model (with --model_base_path). Defaults to 'default'.")
    parser.add_argument("--model_base_path", default=None,
                        help="Directory holding numeric version directories of one model.")
    parser.add_argument("--model_config_file", default=None,
                        help="Text-format ModelServerConfig (models.config) for several models, "
                             "version policies and labels.")
    parser.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0,
                        help="Seconds between re-reads of --model_config_file; 0 reads it once.")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                        help="Seconds between polls for new versions; 0 polls once. Defaults to 1.")
    parser.add_argument("--enable_batching", type=_bool, nargs="?", const=True, default=False,
                        help="Batch concurrent requests server-side.")
    parser.add_argument("--batching_parameters_file", default=None,
                        help="Text-format BatchingParameters (used with --enable_batching).")
    parser.add_argument("--monitoring_config_file", default=None,
                        help="Text-format MonitoringConfig; enables Prometheus metrics.")
    parser.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                        help="REST request deadline in ms (504 past it). Defaults to 30000.")
    parser.add_argument("--shutdown_grace_seconds", type=float, default=20.0,
                        help="On SIGTERM, seconds in-flight requests get to finish. Defaults "
                             "to 20 (Kubernetes sends SIGKILL 30 s after SIGTERM).")
    parser.add_argument("--max_body_bytes", type=int, default=64 << 20,
                        help="Largest request body accepted. Defaults to 64 MiB.")


def run(args):
    import logging
    import signal
    import sys

    from tfdeploy.errors import TfdeployError
    from tfdeploy.serving.status import ServingConfigError as _UsageError

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if (args.model_base_path is None) == (args.model_config_file is None):
        raise _UsageError("Give --model_base_path (with --model_name) or --model_config_file, "
                          "not both and not neither.")
    if args.port <= 0:
        raise _UsageError(f"--port must be a positive gRPC port, received {args.port}.")
    from tfdeploy.serving import create_server

    try:
        server = create_server(
            model_name=args.model_name if args.model_base_path else None,
            model_base_path=args.model_base_path, model_config_file=args.model_config_file,
            host=args.host, port=args.port,
            rest_api_port=args.rest_api_port if args.rest_api_port > 0 else None,
            file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
            enable_batching=args.enable_batching,
            batching_parameters_file=args.batching_parameters_file,
            monitoring_config_file=args.monitoring_config_file,
            rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
            max_body_bytes=args.max_body_bytes,
            model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds)
        server.start()
    except (OSError, ValueError) as exc:
        if isinstance(exc, TfdeployError):
            raise
        raise _UsageError(str(exc)) from exc

    def shutdown(signum, frame):
        logging.getLogger("tfdeploy.serving").info("Received signal %d, shutting down.", signum)
        server.stop(grace=args.shutdown_grace_seconds)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    print(f"tfdeploy serve: ready (gRPC {args.host}:{server.grpc_port}"
          + (f", REST {args.host}:{server.rest_port}" if server.rest_port else "") + ")",
          file=sys.stderr, flush=True)
    while not server.wait(0.5):
        pass
    return 0
