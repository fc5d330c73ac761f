"""Every server option declared once: ``ServerOptions`` is what ``create_server`` takes and
what ``tfdeploy serve``'s flags are generated from (``add_flags`` / ``from_flags``).

A field's metadata holds its flag help; ``minimum`` (numbers), ``cli_default`` (where the
command's default differs from the library's, e.g. ``--gc_freeze`` is on for the command and
off for a library host) and ``cli=False`` for Python-only options.
"""

import dataclasses
import math

# What may run a model's serving_default (``--runtime``; ``model_platform`` per model).
RUNTIME_CHOICES = ("tensorflow", "auto", "litert", "onnxruntime", "openvino")


def _opt(default, help, minimum=None, cli=True, cli_default=dataclasses.MISSING, flag=None,
         kind=None):
    meta = {"help": help, "minimum": minimum, "cli": cli, "flag": flag, "kind": kind}
    if cli_default is not dataclasses.MISSING:
        meta["cli_default"] = cli_default
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class ServerOptions:
    """Options of a TF-Serving-compatible server (flags of ``tensorflow_model_server`` where
    it has them). See ``create_server`` and ``tfdeploy serve --help``."""

    # -- models -----------------------------------------------------------------------------
    model_name: str = _opt(None, "Name of the model (with --model_base_path). Defaults to "
                                 "'default'.", cli_default="default")
    model_base_path: str = _opt(None, "Directory holding numeric version directories of one "
                                      "model.")
    model_config_file: str = _opt(None, "Text-format ModelServerConfig (models.config) for "
                                        "several models, version policies and labels.")
    configs: list = _opt(None, "ModelConfig objects (Python alternative to the file).",
                         cli=False)
    model_config_file_poll_wait_seconds: float = _opt(
        0, "Seconds between re-reads of --model_config_file; 0 reads it once.", minimum=0)
    file_system_poll_wait_seconds: float = _opt(
        1.0, "Seconds between polls for new versions; 0 polls once. Defaults to 1.", minimum=0)
    max_num_load_retries: int = _opt(5, "Retries of a failed version load (TF Serving's flag). "
                                        "Defaults to 5.", minimum=0)
    load_retry_interval_micros: int = _opt(60_000_000, "Microseconds between load retries. "
                                                       "Defaults to 60000000.", minimum=0)
    model_config_allowed_roots: list = _opt(
        None, "Comma-separated directories HandleReloadConfigRequest may load models from. "
              "Without it, any client reaching the gRPC port can make the server load any "
              "SavedModel it can read.", kind="csv")
    enable_signature_method_name_check: bool = _opt(
        False, "Classify/Regress require the signature's method_name to say so (TF Serving's "
               "flag; off by default).")
    freeze_gc: bool = _opt(False, "gc.freeze() after each model load so full garbage "
                                  "collections skip the model's objects (an unload collects "
                                  "once). Defaults to true for the command, false for a "
                                  "library host.", cli_default=True, flag="gc_freeze")
    # -- network ----------------------------------------------------------------------------
    host: str = _opt("127.0.0.1", "Interface to bind. Defaults to 127.0.0.1; pass 0.0.0.0 to "
                                  "expose the server on the network.")
    port: int = _opt(8500, "gRPC port (0: a free one). Defaults to 8500.", minimum=0)
    rest_api_port: int = _opt(8501, "REST port; 0 disables the REST API (as "
                                    "tensorflow_model_server; in Python, 0 picks a free port and "
                                    "None disables it). Defaults to 8501.", minimum=0)
    rest_api_timeout_in_ms: int = _opt(30000, "REST request deadline in ms (504 past it). "
                                              "Defaults to 30000.", minimum=0)
    max_body_bytes: int = _opt(64 << 20, "Largest request body accepted (and largest tensor a "
                                         "request may declare). Defaults to 64 MiB.", minimum=1)
    rest_api_num_threads: int = _opt(None, "REST worker threads (default: 16, or enough for "
                                           "batches to fill).", minimum=1)
    grpc_max_threads: int = _opt(None, "gRPC worker threads (default as "
                                       "--rest_api_num_threads).", minimum=1)
    maximum_concurrent_rpcs: int = _opt(None, "gRPC RPCs accepted at once; more are refused "
                                              "with RESOURCE_EXHAUSTED. Defaults to 4 x gRPC "
                                              "threads.", minimum=1)
    max_connections: int = _opt(256, "Open HTTP connections at once. Defaults to 256.",
                                minimum=1)
    http_idle_timeout_seconds: float = _opt(
        30, "Close an HTTP connection idle (connected, or between requests) this long. "
            "Defaults to 30.", minimum=1)
    http_header_timeout_seconds: float = _opt(
        20, "A request's line and headers must arrive within this long of its first byte, "
            "however they trickle (408 past it). Defaults to 20.", minimum=0.1)
    http_body_timeout_seconds: float = _opt(
        20, "A request body must arrive within this long, plus 1 s per "
            "--http_body_min_bytes_per_second bytes received (408 past it). Defaults to 20.",
        minimum=0.1)
    http_body_min_bytes_per_second: float = _opt(
        500, "The slowest body upload not cut (see --http_body_timeout_seconds); 0 makes that "
             "deadline fixed. Defaults to 500 (Apache mod_reqtimeout's MinRate).", minimum=0)
    # -- batching, monitoring, isolation -------------------------------------------------------
    enable_batching: bool = _opt(False, "Batch concurrent requests server-side.")
    batching_parameters_file: str = _opt(None, "Text-format BatchingParameters (used with "
                                               "--enable_batching).")
    batching_options: dict = _opt(None, "Batching options as a dict instead of the file.",
                                  cli=False)
    monitoring_config_file: str = _opt(None, "Text-format MonitoringConfig; enables Prometheus "
                                             "metrics.")
    model_isolation: str = _opt(
        "auto", "Where models run: 'none' (in the server process), 'process' (each model "
                "version in a worker process that is restarted if a kernel aborts; requests in "
                "flight then answer 503 and the version stays AVAILABLE), or 'auto' (a worker "
                "process only for a model whose signatures validation cannot fully check and "
                "whose graph holds a kernel that can abort on a wrong rank). Defaults to auto.",
        kind=("none", "process", "auto"))
    model_call_timeout_seconds: float = _opt(
        300, "Seconds a model in a worker process (see --model_isolation) may take to answer "
             "one call; past it the request answers 504 DEADLINE_EXCEEDED and the worker, "
             "taken to be stuck, is killed and restarted (requests queued behind it answer "
             "503). 0: no limit. Defaults to 300.", minimum=0)
    runtime: str = _opt(
        "tensorflow", "What runs each model's serving_default: 'tensorflow' (the SavedModel, as "
                      "TF Serving), 'auto' (at load, verify every artifact the version holds "
                      "beside its SavedModel against it on the warmup records, time each, and "
                      "serve the fastest that passes), or 'litert', 'onnxruntime', 'openvino' "
                      "(that artifact, unmeasured; the SavedModel if it cannot load). "
                      "Per model: model_platform in --model_config_file. Defaults to "
                      "tensorflow.", kind=RUNTIME_CHOICES)
    runtime_threads: int = _opt(None, "Threads per call for LiteRT, ONNX Runtime and OpenVINO "
                                      "(default: measured at load, 1 or every core this "
                                      "process may use, whichever serves a call faster).",
                                minimum=1)
    # -- command only -------------------------------------------------------------------------
    shutdown_grace_seconds: float = _opt(
        20.0, "On SIGTERM, seconds in-flight requests get to finish. Defaults to 20 "
              "(Kubernetes sends SIGKILL 30 s after SIGTERM).", minimum=0)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            flag = "--" + (meta.get("flag") or f.name)
            if value is None:
                continue
            if meta.get("minimum") is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                        value != value or value < meta["minimum"] or math.isinf(value):
                    raise ValueError(f"{flag} must be a finite number >= {meta['minimum']}, "
                                     f"received {value!r}.")
            if isinstance(meta.get("kind"), tuple) and value not in meta["kind"]:
                raise ValueError(f"Unrecognized {flag}={value!r}. Supported values are: "
                                 f"{list(meta['kind'])}.")
        for name in ("port", "rest_api_port"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and 0 <= value <= 65535):
                raise ValueError(f"--{name} must be a port number 0-65535 (or None), received "
                                 f"{value!r}.")


def _bool(text):
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def add_flags(parser):
    """Add one ``--flag`` per command-line option of ``ServerOptions`` to ``parser``."""
    for f in dataclasses.fields(ServerOptions):
        meta = f.metadata
        if not meta["cli"]:
            continue
        default = meta.get("cli_default", f.default)
        flag = "--" + (meta.get("flag") or f.name)
        kind = meta.get("kind")
        if f.type is bool or f.type == "bool":
            parser.add_argument(flag, dest=f.name, type=_bool, nargs="?", const=True,
                                default=default, help=meta["help"])
        elif isinstance(kind, tuple):
            parser.add_argument(flag, dest=f.name, choices=kind, default=default,
                                help=meta["help"])
        else:
            types = {"int": int, "float": float, int: int, float: float}
            parser.add_argument(flag, dest=f.name, type=types.get(f.type, str), default=default,
                                help=meta["help"])


def from_flags(args):
    """``ServerOptions`` keyword arguments from parsed flags (as ``add_flags`` declared them):
    ``--rest_api_port 0`` disables REST (tensorflow_model_server's rule), comma lists split,
    and ``--model_name`` applies only with ``--model_base_path``."""
    kwargs = {}
    for f in dataclasses.fields(ServerOptions):
        if not f.metadata["cli"]:
            continue
        value = getattr(args, f.name)
        if f.metadata.get("kind") == "csv" and isinstance(value, str):
            value = [v for v in value.split(",") if v]
        kwargs[f.name] = value
    if not kwargs["rest_api_port"]:
        kwargs["rest_api_port"] = None
    if kwargs["model_base_path"] is None:
        kwargs["model_name"] = None
    return kwargs
