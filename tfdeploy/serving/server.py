"""The server factory: a model repository behind TF Serving's REST and gRPC APIs."""

import logging
import os
import threading
import time

from tfdeploy.serving import metrics as metrics_lib
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

    def __init__(self, repository, host="127.0.0.1", port=8500, rest_api_port=8501,
                 metrics_path=None, rest_api_timeout_in_ms=30000, max_body_bytes=64 << 20,
                 model_config_file=None, model_config_file_poll_wait_seconds=0,
                 rest_api_num_threads=None, grpc_max_threads=None, maximum_concurrent_rpcs=None,
                 max_connections=256, http_idle_timeout_seconds=30,
                 model_config_allowed_roots=None, http_header_timeout_seconds=20,
                 http_body_timeout_seconds=20, http_body_min_bytes_per_second=500):
        self.repository, self.host = repository, host
        self.model_config_file = model_config_file
        self.model_config_file_poll_wait_seconds = model_config_file_poll_wait_seconds
        self._config_thread = None
        self.metrics = repository.metrics
        self._port, self._rest_port = port, rest_api_port
        self.metrics_path = metrics_path
        self.rest_api_timeout_in_ms, self.max_body_bytes = rest_api_timeout_in_ms, max_body_bytes
        # Enough request threads that a batch can fill up to max_batch_size.
        batch = repository.batching or {}
        need = batch.get("max_batch_size", 0) + batch.get("num_batch_threads", 0)
        self.rest_threads = rest_api_num_threads or max(16, min(need, 256))
        self.grpc_threads = grpc_max_threads or max(16, min(need, 256))
        self.maximum_concurrent_rpcs = maximum_concurrent_rpcs
        self.max_connections, self.http_idle_timeout = max_connections, http_idle_timeout_seconds
        self.http_deadlines = dict(header_timeout=http_header_timeout_seconds,
                                   body_timeout=http_body_timeout_seconds,
                                   body_min_rate=http_body_min_bytes_per_second)
        self.model_config_allowed_roots = model_config_allowed_roots
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
                    self.repository, self.metrics, self.host, self._port,
                    max_message_bytes=self.max_body_bytes, workers=self.grpc_threads,
                    maximum_concurrent_rpcs=self.maximum_concurrent_rpcs,
                    allowed_roots=self.model_config_allowed_roots)
            if self._rest_port is not None:
                self._rest = RestApi(self.repository, self.metrics, self.metrics_path,
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


def create_server(model_name=None, model_base_path=None, model_config_file=None, configs=None,
                  host="127.0.0.1", port=8500, rest_api_port=8501,
                  file_system_poll_wait_seconds=1.0, enable_batching=False,
                  batching_parameters_file=None, batching_options=None,
                  monitoring_config_file=None, rest_api_timeout_in_ms=30000,
                  max_body_bytes=64 << 20, model_config_file_poll_wait_seconds=0,
                  max_num_load_retries=5, load_retry_interval_micros=60_000_000,
                  freeze_gc=False, enable_signature_method_name_check=False,
                  rest_api_num_threads=None, grpc_max_threads=None,
                  maximum_concurrent_rpcs=None, max_connections=256,
                  http_idle_timeout_seconds=30, model_config_allowed_roots=None,
                  http_header_timeout_seconds=20, http_body_timeout_seconds=20,
                  http_body_min_bytes_per_second=500):
    """Build a TF-Serving-compatible ModelServer (call ``start()`` or use ``with``).

    Models come from exactly one of ``model_name`` + ``model_base_path``, a
    ``model_config_file`` (text-format ModelServerConfig) or ``configs``
    (ModelConfig objects). Ports: None disables that API; 0 picks a free port.

    Args:
        model_name / model_base_path: one model served with the latest-version policy.
        model_config_file: a models.config path for several models, policies and labels.
        configs: ModelConfig objects (Python alternative to the file).
        host: interface to bind. Defaults to "127.0.0.1" (exposing it is a choice).
        port: gRPC port. Defaults to 8500.
        rest_api_port: REST port. Defaults to 8501.
        file_system_poll_wait_seconds: seconds between polls for new versions; 0 disables.
        enable_batching: batch concurrent requests server-side.
        batching_parameters_file: text-format BatchingParameters (implies batching).
        batching_options: batching options as a dict instead of the file.
        monitoring_config_file: text-format MonitoringConfig exposing Prometheus metrics.
        rest_api_timeout_in_ms: REST deadline; slower requests answer 504. Defaults to 30000.
        max_body_bytes: largest request accepted (REST 413, gRPC RESOURCE_EXHAUSTED).
        model_config_file_poll_wait_seconds: seconds between re-reads of
            ``model_config_file``; 0 (the default) reads it once.
        max_num_load_retries / load_retry_interval_micros: retries of a failed load and the
            wait between them (TF Serving's defaults: 5 and 60 s).
        freeze_gc: ``gc.freeze()`` after loads (see ModelRepository). Defaults to False.
        enable_signature_method_name_check: Classify/Regress require the signature's
            method_name (TF Serving's flag; default False).
        rest_api_num_threads / grpc_max_threads: request threads (default: 16, or enough for
            a batch to reach max_batch_size).
        maximum_concurrent_rpcs: gRPC RPCs accepted at once (default 4 x grpc threads).
        max_connections: open HTTP connections at once. At the limit a newcomer takes the
            slot of the oldest idle connection, else of the oldest incomplete request (503);
            only when all run requests is it refused (503). Defaults to 256.
        http_idle_timeout_seconds: an HTTP connection idle this long (connected, or between
            requests) is closed. Defaults to 30.
        http_header_timeout_seconds: a request's line and headers must arrive within this
            long of its first byte (408 past it). Defaults to 20.
        http_body_timeout_seconds / http_body_min_bytes_per_second: a body must arrive
            within the timeout plus 1 s per this many bytes received (408 past it), so
            uploads at a decent rate are never cut; a rate of 0 makes the deadline fixed.
            Defaults to 20 and 500 (Apache mod_reqtimeout's ``body=20,MinRate=500``).
        model_config_allowed_roots: directories HandleReloadConfigRequest may load from
            (None: anywhere, as TF Serving). Anyone who reaches the gRPC port can call it.

    Returns:
        A ModelServer, not yet started.

    Raises:
        ValueError: inconsistent or invalid configuration, with what to fix.
    """
    _check_numbers(rest_api_timeout_in_ms=(rest_api_timeout_in_ms, 0),
                   max_body_bytes=(max_body_bytes, 1),
                   file_system_poll_wait_seconds=(file_system_poll_wait_seconds, 0),
                   model_config_file_poll_wait_seconds=(model_config_file_poll_wait_seconds, 0),
                   max_num_load_retries=(max_num_load_retries, 0),
                   load_retry_interval_micros=(load_retry_interval_micros, 0),
                   rest_api_num_threads=(rest_api_num_threads, 1),
                   grpc_max_threads=(grpc_max_threads, 1),
                   maximum_concurrent_rpcs=(maximum_concurrent_rpcs, 1),
                   max_connections=(max_connections, 1),
                   http_idle_timeout_seconds=(http_idle_timeout_seconds, 1),
                   http_header_timeout_seconds=(http_header_timeout_seconds, 0.1),
                   http_body_timeout_seconds=(http_body_timeout_seconds, 0.1),
                   http_body_min_bytes_per_second=(http_body_min_bytes_per_second, 0))
    for name, value in (("port", port), ("rest_api_port", rest_api_port)):
        if value is not None and not (isinstance(value, int) and 0 <= value <= 65535):
            raise ValueError(f"--{name} must be a port number 0-65535 (or None), received "
                             f"{value!r}.")
    sources = [model_base_path is not None, model_config_file is not None, configs is not None]
    if sum(sources) != 1:
        raise ValueError("Give exactly one model source: --model_base_path (with --model_name), "
                         "--model_config_file, or configs=[...].")
    if model_base_path is not None:
        configs = [ModelConfig(name=model_name or "default", base_path=model_base_path)]
    elif model_config_file is not None:
        configs = read_model_config_file(model_config_file)
    batching = None
    if batching_parameters_file and not enable_batching:
        log.warning("--batching_parameters_file is ignored without --enable_batching "
                    "(as in tensorflow_model_server).")
    if batching_parameters_file and enable_batching:
        batching = read_batching_parameters(batching_parameters_file)
    elif batching_options is not None:
        from tfdeploy.serving.batching import validate_options

        batching = validate_options(**batching_options)
    elif enable_batching:
        from tfdeploy.serving.batching import validate_options

        batching = validate_options()
    metrics_path = read_monitoring_config(monitoring_config_file) if monitoring_config_file \
        else None
    if host not in ("127.0.0.1", "localhost", "::1") and port is not None:
        log.warning("Serving on %s: anyone who reaches the gRPC port can call "
                    "HandleReloadConfigRequest and make this server load any SavedModel it "
                    "can read%s.", host,
                    "" if model_config_allowed_roots else
                    " (restrict it with --model_config_allowed_roots)")
    if model_config_allowed_roots is not None:
        model_config_allowed_roots = [r for r in model_config_allowed_roots if r]
        for root in model_config_allowed_roots:
            if not os.path.isdir(root):
                raise ValueError(f"--model_config_allowed_roots: {root!r} is not a directory.")
    repository = ModelRepository(
        configs, poll_wait_seconds=file_system_poll_wait_seconds, batching=batching,
        metrics=metrics_lib.Metrics(), max_num_load_retries=max_num_load_retries,
        load_retry_interval_micros=load_retry_interval_micros, freeze_gc=freeze_gc,
        enable_signature_method_name_check=enable_signature_method_name_check)
    return ModelServer(repository, host=host, port=port, rest_api_port=rest_api_port,
                       metrics_path=metrics_path, rest_api_timeout_in_ms=rest_api_timeout_in_ms,
                       max_body_bytes=max_body_bytes, model_config_file=model_config_file,
                       model_config_file_poll_wait_seconds=model_config_file_poll_wait_seconds,
                       rest_api_num_threads=rest_api_num_threads,
                       grpc_max_threads=grpc_max_threads,
                       maximum_concurrent_rpcs=maximum_concurrent_rpcs,
                       max_connections=max_connections,
                       http_idle_timeout_seconds=http_idle_timeout_seconds,
                       model_config_allowed_roots=model_config_allowed_roots,
                       http_header_timeout_seconds=http_header_timeout_seconds,
                       http_body_timeout_seconds=http_body_timeout_seconds,
                       http_body_min_bytes_per_second=http_body_min_bytes_per_second)


def _check_numbers(**checks):
    """Raise ValueError for a numeric option that is not a number >= its minimum."""
    for name, (value, minimum) in checks.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
                or value < minimum or value == float("inf"):
            raise ValueError(f"--{name} must be a finite number >= {minimum}, received "
                             f"{value!r}.")
