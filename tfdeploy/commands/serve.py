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
                        help="Largest request body accepted (and largest tensor a request may "
                             "declare). Defaults to 64 MiB.")
    parser.add_argument("--max_num_load_retries", type=int, default=5,
                        help="Retries of a failed version load (TF Serving's flag). Defaults "
                             "to 5.")
    parser.add_argument("--load_retry_interval_micros", type=int, default=60_000_000,
                        help="Microseconds between load retries. Defaults to 60000000.")
    parser.add_argument("--enable_signature_method_name_check", type=_bool, nargs="?",
                        const=True, default=False,
                        help="Classify/Regress require the signature's method_name to say "
                             "so (TF Serving's flag; off by default).")
    parser.add_argument("--model_config_allowed_roots", default=None,
                        help="Comma-separated directories HandleReloadConfigRequest may load "
                             "models from. Without it, any client reaching the gRPC port can "
                             "make the server load any SavedModel it can read.")
    parser.add_argument("--rest_api_num_threads", type=int, default=None,
                        help="REST worker threads (default: 16, or enough for batches to "
                             "fill).")
    parser.add_argument("--grpc_max_threads", type=int, default=None,
                        help="gRPC worker threads (default as --rest_api_num_threads).")
    parser.add_argument("--maximum_concurrent_rpcs", type=int, default=None,
                        help="gRPC RPCs accepted at once; more are refused with "
                             "RESOURCE_EXHAUSTED. Defaults to 4 x gRPC threads.")
    parser.add_argument("--max_connections", type=int, default=256,
                        help="Open HTTP connections at once. Defaults to 256.")
    parser.add_argument("--http_idle_timeout_seconds", type=int, default=30,
                        help="Close an HTTP connection idle (connected, or between requests) "
                             "this long. Defaults to 30.")
    parser.add_argument("--http_header_timeout_seconds", type=float, default=20,
                        help="A request's line and headers must arrive within this long of "
                             "its first byte, however they trickle (408 past it). Defaults "
                             "to 20.")
    parser.add_argument("--http_body_timeout_seconds", type=float, default=20,
                        help="A request body must arrive within this long, plus 1 s per "
                             "--http_body_min_bytes_per_second bytes received (408 past it). "
                             "Defaults to 20.")
    parser.add_argument("--http_body_min_bytes_per_second", type=float, default=500,
                        help="The slowest body upload not cut (see "
                             "--http_body_timeout_seconds); 0 makes that deadline fixed. "
                             "Defaults to 500 (Apache mod_reqtimeout's MinRate).")
    parser.add_argument("--gc_freeze", type=_bool, nargs="?", const=True, default=True,
                        help="gc.freeze() after each model load so full garbage collections "
                             "skip the model's objects (an unload collects once). Defaults "
                             "to true.")


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
            model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
            max_num_load_retries=args.max_num_load_retries,
            load_retry_interval_micros=args.load_retry_interval_micros,
            freeze_gc=args.gc_freeze,
            enable_signature_method_name_check=args.enable_signature_method_name_check,
            rest_api_num_threads=args.rest_api_num_threads,
            grpc_max_threads=args.grpc_max_threads,
            maximum_concurrent_rpcs=args.maximum_concurrent_rpcs,
            max_connections=args.max_connections,
            http_idle_timeout_seconds=args.http_idle_timeout_seconds,
            http_header_timeout_seconds=args.http_header_timeout_seconds,
            http_body_timeout_seconds=args.http_body_timeout_seconds,
            http_body_min_bytes_per_second=args.http_body_min_bytes_per_second,
            model_config_allowed_roots=(args.model_config_allowed_roots.split(",")
                                        if args.model_config_allowed_roots else None))
        server.start()
    except (OSError, ValueError) as exc:
        if isinstance(exc, TfdeployError):
            raise
        raise _UsageError(str(exc).splitlines()[0] if str(exc) else repr(exc)) from None

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
