"""``tfdeploy serve``: a TF-Serving-compatible model server (REST + gRPC).

Takes tensorflow_model_server's flags, e.g.
``tfdeploy serve --model_name digits --model_base_path saved_models/digits``.
"""

NAME = "serve"
HELP = ("Serve SavedModels over TF Serving's REST (8501) and gRPC (8500) APIs, with "
        "tensorflow_model_server's flags.")


def add_arguments(parser):
    from tfdeploy.serving.options import add_flags

    add_flags(parser)   # one flag per ServerOptions field: declared once, there


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
    from tfdeploy.serving.options import from_flags

    try:
        server = create_server(**from_flags(args))
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
