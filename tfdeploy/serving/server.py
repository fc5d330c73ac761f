"""The server factory: a model repository behind TF Serving's REST and gRPC APIs."""

import logging
import os
import threading
import time

from tfdeploy.serving import metrics as metrics_lib
from tfdeploy.serving.options import ServerOptions
from tfdeploy.serving.repository import ModelConfig, ModelRepository, read_model_config_file

log = logging.getLogger("tfdeploy.serving")


def read_batching_parameters(path):
    """Batching options from a text-format ``BatchingParameters`` file."""
    from tfdeploy.serving import batching, protos

    with open(path) as f:
        params = protos.parse_text(f.read(), protos.BatchingParameters(), what=path)
    return batching.options_from_proto(params)


def read_monitoring_config(path):
    """The Prometheus path a text-format ``MonitoringConfig`` enables, or None."""
    from tfdeploy.serving import protos

    with open(path) as f:
        config = protos.parse_text(f.read(), protos.MonitoringConfig(), what=path)
    prom = config.prometheus_config
    if not prom.enable:
        return None
    path = prom.path or metrics_lib.DEFAULT_PATH
    if not path.startswith("/") or path.lower().startswith("/v1/"):
        raise ValueError(f"Prometheus path {path!r} must start with '/' and not be under /v1/.")
    return path


class ModelServer:
    """A running (after ``start``) TF-Serving-compatible server.

    Build it with ``create_server``. ``grpc_port`` and ``rest_port`` are the
    bound ports (useful when 0 asked for free ones); ``stop`` shuts both
    front ends and the repository down.
    """

    def __init__(self, repository, options, metrics_path=None):
        from tfdeploy.serving.dataplane import DataPlane

        self.repository, self.options = repository, options
        self.plane = DataPlane(repository)   # what every front end calls
        self.host = options.host
        self.model_config_file = options.model_config_file
        self.model_config_file_poll_wait_seconds = options.model_config_file_poll_wait_seconds
        self._config_thread = None
        self.metrics = repository.metrics
        self._port, self._rest_port = options.port, options.rest_api_port
        self.metrics_path = metrics_path
        self.rest_api_timeout_in_ms = options.rest_api_timeout_in_ms
        self.max_body_bytes = options.max_body_bytes
        # Enough request threads that a batch can fill up to max_batch_size.
        batch = repository.batching or {}
        need = batch.get("max_batch_size", 0) + batch.get("num_batch_threads", 0)
        self.rest_threads = options.rest_api_num_threads or max(16, min(need, 256))
        self.grpc_threads = options.grpc_max_threads or max(16, min(need, 256))
        self.maximum_concurrent_rpcs = options.maximum_concurrent_rpcs
        self.max_connections = options.max_connections
        self.http_idle_timeout = options.http_idle_timeout_seconds
        self.http_deadlines = dict(header_timeout=options.http_header_timeout_seconds,
                                   body_timeout=options.http_body_timeout_seconds,
                                   body_min_rate=options.http_body_min_bytes_per_second)
        self.model_config_allowed_roots = options.model_config_allowed_roots
        self.grpc_port = self.rest_port = None
        self._grpc = self._http = self._rest = None
        self._stopped = threading.Event()

    def start(self):
        """Bind the ports (a port in use fails here, before any model loads), load the
        models (blocking), then serve; returns self."""
        from tfdeploy.serving.grpc_service import make_grpc_server
        from tfdeploy.serving.rest import RestApi, make_http_server

        try:
            if self._port is not None:
                self._grpc, self.grpc_port = make_grpc_server(
                    self.plane, self.metrics, self.host, self._port,
                    max_message_bytes=self.max_body_bytes, workers=self.grpc_threads,
                    maximum_concurrent_rpcs=self.maximum_concurrent_rpcs,
                    allowed_roots=self.model_config_allowed_roots)
            if self._rest_port is not None:
                self._rest = RestApi(self.plane, self.metrics, self.metrics_path,
                                     self.rest_api_timeout_in_ms, self.max_body_bytes)
                try:
                    self._http = make_http_server(self._rest, self.host, self._rest_port,
                                                  threads=self.rest_threads,
                                                  connection_limit=self.max_connections,
                                                  channel_timeout=self.http_idle_timeout,
                                                  **self.http_deadlines)
                except OSError as exc:
                    raise OSError(f"Could not bind the REST port {self.host}:{self._rest_port} "
                                  f"({exc.strerror or exc}); is it in use?") from None
                self.rest_port = self._http.port
            self.repository.start()
            if self._grpc is not None:
                self._grpc.start()
                log.info("Running gRPC ModelServer at %s:%d ...", self.host, self.grpc_port)
            if self._http is not None:
                self._http.start()
                log.info("Exporting HTTP/REST API at:%s:%d ...", self.host, self.rest_port)
        except BaseException:
            self.stop(grace=0)
            raise
        if self.model_config_file and self.model_config_file_poll_wait_seconds > 0:
            self._config_thread = threading.Thread(target=self._poll_config_file, daemon=True,
                                                   name="tfdeploy-config-poll")
            self._config_thread.start()
        return self

    def _poll_config_file(self):
        """Reload the models when ``model_config_file`` changes (bad edits are logged, kept out)."""
        with open(self.model_config_file) as f:
            last = f.read()
        while not self._stopped.wait(self.model_config_file_poll_wait_seconds):
            try:
                with open(self.model_config_file) as f:
                    text = f.read()
                if text == last:
                    continue
                last = text
                self.repository.reload(read_model_config_file(self.model_config_file))
                log.info("Reloaded the model config file %s", self.model_config_file)
            except Exception as exc:  # noqa: BLE001  (keep serving the previous config)
                log.error("Could not reload %s, keeping the previous config: %s",
                          self.model_config_file, exc)

    def stop(self, grace=5.0):
        """Stop accepting requests, let in-flight ones finish (up to ``grace`` s), unload."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._http is not None:
            self._http.stop_accepting()    # no new connections
        grpc_done = self._grpc.stop(grace) if self._grpc is not None else None
        # (gRPC rejects new RPCs now and lets running ones finish within the grace period)
        if self._rest is not None:
            end = time.monotonic() + grace
            if not self._rest.drain(grace):
                log.warning("REST requests still running after %.1fs; stopping anyway.", grace)
            # the event loop writes the last answers out before connections are closed
            if self._http is not None:
                self._http.flush(max(0.5, end - time.monotonic()))
        if self._http is not None:
            self._http.close()
        if grpc_done is not None:
            grpc_done.wait(grace + 1)
        if self._config_thread is not None:
            self._config_thread.join(timeout=30)
        self.repository.stop(grace)
        log.info("Server stopped.")

    def wait(self, timeout=None):
        """Block until ``stop`` has been called; True when stopped."""
        return self._stopped.wait(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def create_server(**options):
    """Build a TF-Serving-compatible ModelServer (call ``start()`` or use ``with``).

    Takes the fields of :class:`tfdeploy.serving.options.ServerOptions` as keyword
    arguments (the same options ``tfdeploy serve`` takes as flags; each field documents
    its default). Models come from exactly one of ``model_name`` + ``model_base_path``, a
    ``model_config_file`` (text-format ModelServerConfig) or ``configs`` (ModelConfig
    objects). Ports: None disables that API; 0 picks a free port.

    Example:
        server = create_server(model_name="digits", model_base_path="saved_models/digits",
                               port=0, rest_api_port=0).start()

    Returns:
        A ModelServer, not yet started.

    Raises:
        TypeError: an unknown option.
        ValueError: inconsistent or invalid configuration, with what to fix.
    """
    o = ServerOptions(**options)
    sources = [o.model_base_path is not None, o.model_config_file is not None,
               o.configs is not None]
    if sum(sources) != 1:
        raise ValueError("Give exactly one model source: --model_base_path (with --model_name), "
                         "--model_config_file, or configs=[...].")
    if o.model_base_path is not None:
        configs = [ModelConfig(name=o.model_name or "default", base_path=o.model_base_path)]
    elif o.model_config_file is not None:
        configs = read_model_config_file(o.model_config_file)
    else:
        configs = o.configs
    batching = None
    if o.batching_parameters_file and not o.enable_batching:
        log.warning("--batching_parameters_file is ignored without --enable_batching "
                    "(as in tensorflow_model_server).")
    if o.batching_parameters_file and o.enable_batching:
        batching = read_batching_parameters(o.batching_parameters_file)
    elif o.batching_options is not None:
        from tfdeploy.serving.batching import validate_options

        batching = validate_options(**o.batching_options)
    elif o.enable_batching:
        from tfdeploy.serving.batching import validate_options

        batching = validate_options()
    metrics_path = read_monitoring_config(o.monitoring_config_file) \
        if o.monitoring_config_file else None
    if o.host not in ("127.0.0.1", "localhost", "::1") and o.port is not None:
        log.warning("Serving on %s: anyone who reaches the gRPC port can call "
                    "HandleReloadConfigRequest and make this server load any SavedModel it "
                    "can read%s.", o.host,
                    "" if o.model_config_allowed_roots else
                    " (restrict it with --model_config_allowed_roots)")
    if o.model_config_allowed_roots is not None:
        o.model_config_allowed_roots = [r for r in o.model_config_allowed_roots if r]
        for root in o.model_config_allowed_roots:
            if not os.path.isdir(root):
                raise ValueError(f"--model_config_allowed_roots: {root!r} is not a directory.")
    repository = ModelRepository(
        configs, poll_wait_seconds=o.file_system_poll_wait_seconds, batching=batching,
        metrics=metrics_lib.Metrics(), max_num_load_retries=o.max_num_load_retries,
        load_retry_interval_micros=o.load_retry_interval_micros, freeze_gc=o.freeze_gc,
        enable_signature_method_name_check=o.enable_signature_method_name_check,
        isolation=o.model_isolation, runtime=o.runtime, runtime_threads=o.runtime_threads,
        isolation_call_timeout=o.model_call_timeout_seconds or None)
    return ModelServer(repository, o, metrics_path=metrics_path)
