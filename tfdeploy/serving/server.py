"""The server factory: a model repository behind TF Serving's REST and gRPC APIs."""

import logging
import threading

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
                 model_config_file=None, model_config_file_poll_wait_seconds=0):
        self.repository, self.host = repository, host
        self.model_config_file = model_config_file
        self.model_config_file_poll_wait_seconds = model_config_file_poll_wait_seconds
        self._config_thread = None
        self.metrics = repository.metrics
        self._port, self._rest_port = port, rest_api_port
        self.metrics_path = metrics_path
        self.rest_api_timeout_in_ms, self.max_body_bytes = rest_api_timeout_in_ms, max_body_bytes
        self.grpc_port = self.rest_port = None
        self._grpc = self._http = self._rest = self._http_thread = None
        self._stopped = threading.Event()

    def start(self):
        """Load the models (blocking), then open the ports; returns self."""
        from tfdeploy.serving.grpc_service import make_grpc_server
        from tfdeploy.serving.rest import RestApi, make_http_server

        self.repository.start()
        try:
            if self._port is not None:
                self._grpc, self.grpc_port = make_grpc_server(
                    self.repository, self.metrics, self.host, self._port,
                    max_message_bytes=self.max_body_bytes)
                self._grpc.start()
                log.info("Running gRPC ModelServer at %s:%d ...", self.host, self.grpc_port)
            if self._rest_port is not None:
                self._rest = RestApi(self.repository, self.metrics, self.metrics_path,
                                     self.rest_api_timeout_in_ms, self.max_body_bytes)
                self._http = make_http_server(self._rest, self.host, self._rest_port)
                self.rest_port = self._http.server_address[1]
                self._http_thread = threading.Thread(target=self._http.serve_forever,
                                                     kwargs={"poll_interval": 0.2},
                                                     daemon=True, name="tfdeploy-rest")
                self._http_thread.start()
                log.info("Exporting HTTP/REST API at:%s:%d ...", self.host, self.rest_port)
        except BaseException:
            self.stop()
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
            self._http.shutdown()          # no new connections
            self._http.server_close()
        grpc_done = self._grpc.stop(grace) if self._grpc is not None else None
        # (gRPC rejects new RPCs now and lets running ones finish within the grace period)
        if self._rest is not None:
            if not self._rest.drain(grace):
                log.warning("REST requests still running after %.1fs; stopping anyway.", grace)
            self._rest.close()
        if grpc_done is not None:
            grpc_done.wait(grace + 1)
        if self._config_thread is not None:
            self._config_thread.join(timeout=30)
        self.repository.stop()
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
                  max_body_bytes=64 << 20, model_config_file_poll_wait_seconds=0):
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

    Returns:
        A ModelServer, not yet started.

    Raises:
        ValueError: inconsistent or invalid configuration, with what to fix.
    """
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
    repository = ModelRepository(configs, poll_wait_seconds=file_system_poll_wait_seconds,
                                 batching=batching, metrics=metrics_lib.Metrics())
    return ModelServer(repository, host=host, port=port, rest_api_port=rest_api_port,
                       metrics_path=metrics_path, rest_api_timeout_in_ms=rest_api_timeout_in_ms,
                       max_body_bytes=max_body_bytes, model_config_file=model_config_file,
                       model_config_file_poll_wait_seconds=model_config_file_poll_wait_seconds)
