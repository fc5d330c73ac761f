"""The model repository: version directories, version policies, labels, polling, warmup.

Each model has a base path holding numeric version directories (``1/``, ``2/``,
...); every other name, such as the ``temp-*`` directories an export is being
written into, is ignored. A version policy picks which versions to serve
(``latest`` N, ``all`` or ``specific``). Polling loads newly wanted versions
first and unloads the unwanted ones only once a wanted version is available,
so there is no window without a model; a version that fails to load leaves the
previous one serving.
"""

import dataclasses
import logging
import os
import re
import threading
import time

from tfdeploy.runtime.versions import list_versions, version_dirs  # noqa: F401 (re-export)
from tfdeploy.serving import warmup
from tfdeploy.serving.servable import Servable
from tfdeploy.serving.status import ServingError, invalid, not_found

log = logging.getLogger("tfdeploy.serving")

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
STATES = ("UNKNOWN", "START", "LOADING", "AVAILABLE", "UNLOADING", "END")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One served model.

    Args:
        name: model name used in URLs and ModelSpec (letters, digits, ``_.-``).
        base_path: directory holding numeric version directories.
        policy: "latest", "all" or "specific". Defaults to "latest".
        num_versions: versions kept by "latest". Defaults to 1.
        versions: the versions served by "specific".
        labels: ``{label: version}``, e.g. ``{"stable": 1, "canary": 2}``.
    """

    name: str
    base_path: str
    policy: str = "latest"
    num_versions: int = 1
    versions: tuple = ()
    labels: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name) or ".." in self.name:
            raise ValueError(f"Invalid model name {self.name!r}: use letters, digits, '_', '.' "
                             "and '-' (no '/', ':' or '..').")
        if not self.base_path:
            raise ValueError(f"Model {self.name!r} has an empty base_path.")
        if self.policy not in ("latest", "all", "specific"):
            raise ValueError(f"Unrecognized version policy {self.policy!r}. Supported policies "
                             "are: ['latest', 'all', 'specific'].")
        if self.policy == "latest" and self.num_versions < 1:
            raise ValueError(f"latest.num_versions must be >= 1, received {self.num_versions}.")
        if self.policy == "specific" and not self.versions:
            raise ValueError(f"Model {self.name!r}: the specific policy needs at least one "
                             "version.")
        for label, version in self.labels.items():
            if not _LABEL.match(label):
                raise ValueError(f"Invalid version label {label!r} for model {self.name!r}: "
                                 "use letters, digits, '_' and '-', starting with a letter.")
            if not isinstance(version, int) or version < 0:
                raise ValueError(f"Label {label!r} must map to a version number, got {version!r}.")

    def wanted(self, on_disk):
        """The versions this policy serves out of the sorted versions ``on_disk``."""
        if self.policy == "latest":
            return set(on_disk[-self.num_versions:])
        if self.policy == "all":
            return set(on_disk)
        return set(self.versions) & set(on_disk)


def configs_from_proto(server_config, root=None):
    """Turn a ``ModelServerConfig`` into ModelConfigs (relative base paths join ``root``)."""
    if server_config.WhichOneof("config") != "model_config_list":
        raise ValueError("Only model_config_list is supported in the model config file "
                         "(custom_model_config is not).")
    configs, seen = [], set()
    for c in server_config.model_config_list.config:
        if c.model_platform not in ("", "tensorflow"):
            raise ValueError(f"Model {c.name!r}: model_platform {c.model_platform!r} is not "
                             "supported; use 'tensorflow'.")
        if c.name in seen:
            raise ValueError(f"Model {c.name!r} is configured twice.")
        seen.add(c.name)
        kind = c.model_version_policy.WhichOneof("policy_choice") or "latest"
        num = c.model_version_policy.latest.num_versions if kind == "latest" else 1
        base = c.base_path
        if root and base and not os.path.isabs(base) and "://" not in base:
            base = os.path.join(root, base)
        configs.append(ModelConfig(
            name=c.name, base_path=base, policy=kind, num_versions=num or 1,
            versions=tuple(c.model_version_policy.specific.versions),
            labels={k: int(v) for k, v in c.version_labels.items()}))
    if not configs:
        raise ValueError("The model config file lists no models.")
    return configs


def read_model_config_file(path):
    """Parse a text-format ``ModelServerConfig`` file (``--model_config_file``)."""
    from tfdeploy.serving.protos import ModelServerConfig, parse_text

    with open(path) as f:
        text = f.read()
    return configs_from_proto(parse_text(text, ModelServerConfig(), what=path))


@dataclasses.dataclass
class VersionStatus:
    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


class _Model:
    def __init__(self, config):
        self.config = config
        self.available = {}  # version -> Servable; replaced, never mutated (lock-free reads)
        self.status = {}     # version -> VersionStatus
        self.failed = set()  # versions whose load failed (not retried)


class ModelRepository:
    """Load, serve and poll the configured models.

    Args:
        configs: ModelConfig objects.
        poll_wait_seconds: seconds between file-system polls; 0 loads once. Defaults to 1.
        batching: batching options (see ``batching.validate_options``), or None for off.
        metrics: a ``Metrics`` registry, or None.
    """

    def __init__(self, configs, poll_wait_seconds=1.0, batching=None, metrics=None):
        self._models = {}
        for c in configs:
            if c.name in self._models:
                raise ValueError(f"Model {c.name!r} is configured twice.")
            self._models[c.name] = _Model(c)
        self.poll_wait_seconds = poll_wait_seconds
        self.batching, self.metrics = batching, metrics
        self._lock = threading.Lock()  # one poll at a time
        self._stop = threading.Event()
        self._thread = None

    @property
    def model_names(self):
        return sorted(self._models)

    def start(self):
        """Load the initial versions (blocking), then poll in a background thread."""
        self.poll_once()
        if self.poll_wait_seconds and self.poll_wait_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, daemon=True,
                                            name="tfdeploy-model-poll")
            self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            for model in self._models.values():
                for servable in model.available.values():
                    if servable.batcher is not None:
                        servable.batcher.stop()

    def reload(self, configs):
        """Switch to a new list of ModelConfigs (HandleReloadConfigRequest / config polling).

        New models are loaded, removed models unloaded, and changed models (base path,
        policy, labels) reconciled; versions that stay wanted keep serving throughout.
        """
        names = [c.name for c in configs]
        if len(set(names)) != len(names):
            raise ValueError(f"A model is configured twice in {names}.")
        with self._lock:
            old = self._models
            models = {}
            for c in configs:
                model = old.get(c.name)
                if model is None or model.config.base_path != c.base_path:
                    model = _Model(c)          # a new model, or one moved to a new base path
                else:
                    model.config = c
                models[c.name] = model
            for model in models.values():
                self._reconcile(model)
            self._models = models   # replaced at once: readers see the old or the new map
            for name, model in old.items():
                if models.get(name) is not model:
                    for version in sorted(model.available):
                        self._unload(model, version)
                    log.info("Retired the previous configuration of model %s", name)

    def _poll_loop(self):
        while not self._stop.wait(self.poll_wait_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001  (polling must survive anything)
                log.exception("Polling the model base paths failed")

    def poll_once(self):
        """Reconcile every model with its base path once."""
        with self._lock:
            for model in self._models.values():
                self._reconcile(model)

    def _reconcile(self, model):
        cfg = model.config
        try:
            dirs = version_dirs(cfg.base_path)
        except OSError as exc:
            # A missing or unreadable base path says nothing about the versions: keep serving.
            log.warning("Could not list base path of servable %s (%s); keeping the versions "
                        "being served.", cfg.name, exc.strerror or type(exc).__name__)
            return
        on_disk = list(dirs)
        if not on_disk and not model.available:
            log.warning("No versions of servable %s found under base path %s", cfg.name,
                        cfg.base_path)
        wanted = cfg.wanted(on_disk)
        for version in sorted(wanted - set(model.available) - model.failed, reverse=True):
            if self._stop.is_set():
                return
            self._load(model, version, dirs[version])
        keep_old = not on_disk or not (wanted & set(model.available))
        for version in sorted(set(model.available) - wanted):
            if on_disk and keep_old:
                continue  # nothing wanted is available yet: keep serving what we have
            self._unload(model, version)

    def _load(self, model, version, path):
        cfg = model.config
        model.status[version] = VersionStatus(version, "LOADING")
        log.info("Loading servable version {name: %s version: %d}", cfg.name, version)
        start = time.perf_counter()
        try:
            servable = Servable(cfg.name, version, path)
            if self.metrics is not None:
                servable.on_run = self._runtime_observer(cfg.name)
            if self.batching:
                from tfdeploy.serving.batching import Batcher

                on_batch = self._batch_observer(cfg.name) if self.metrics is not None else None
                servable.batcher = Batcher(servable.call, on_batch=on_batch, **self.batching)
            try:
                replayed = warmup.replay(servable)
            except Exception:
                if servable.batcher is not None:
                    servable.batcher.stop()
                raise
        except Exception as exc:  # noqa: BLE001  (a bad version must not take the server down)
            code = exc.code if isinstance(exc, ServingError) else "UNKNOWN"
            model.status[version] = VersionStatus(version, "END", code, str(exc))
            model.failed.add(version)
            log.error("Loading servable version {name: %s version: %d} failed: %s", cfg.name,
                      version, exc)
            return
        model.available = {**model.available, version: servable}
        model.status[version] = VersionStatus(version, "AVAILABLE")
        log.info("Successfully loaded servable version {name: %s version: %d} in %.2fs "
                 "(%d warmup records replayed)", cfg.name, version,
                 time.perf_counter() - start, replayed)

    def _unload(self, model, version):
        servable = model.available[version]
        model.status[version] = VersionStatus(version, "UNLOADING")
        model.available = {v: s for v, s in model.available.items() if v != version}
        if servable.batcher is not None:
            servable.batcher.stop()
        model.status[version] = VersionStatus(version, "END")
        log.info("Unloaded servable version {name: %s version: %d}", model.config.name, version)

    def _batch_observer(self, name):
        from tfdeploy.serving.metrics import BATCH_SIZE

        def observe(size):
            self.metrics.observe(BATCH_SIZE, size, model_name=name)
        return observe

    def _runtime_observer(self, name):
        from tfdeploy.serving.metrics import RUNTIME_LATENCY

        def observe(seconds):
            self.metrics.observe(RUNTIME_LATENCY, seconds * 1e6, model_name=name)
        return observe

    # -- lookups used by the front ends -------------------------------------------------------
    def _model(self, name, missing_message):
        model = self._models.get(name)
        if model is None:
            raise not_found(missing_message)
        return model

    def resolve_version(self, name, version=None, label=None):
        """The version number a request names (None means latest), after the label lookup."""
        if label:
            model = self._models.get(name)
            if model is None or label not in model.config.labels:
                raise invalid(f"Unrecognized servable version label: {label}")
            return model.config.labels[label]
        return version

    def get(self, name, version=None, label=None):
        """Return the Servable a request names; NOT_FOUND as TF Serving words it."""
        version = self.resolve_version(name, version, label)
        if version is None:
            model = self._model(name, f"Servable not found for request: Latest({name})")
            available = model.available
            if not available:
                raise not_found(f"Servable not found for request: Latest({name})")
            return available[max(available)]
        model = self._model(name, f"Servable not found for request: Specific({name}, {version})")
        servable = model.available.get(int(version))
        if servable is None:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return servable

    def status(self, name, version=None, label=None):
        """VersionStatus list for GetModelStatus (newest first)."""
        version = self.resolve_version(name, version, label)
        model = self._model(name, f"Could not find any versions of model {name}")
        statuses = dict(model.status)
        if version is not None:
            if int(version) not in statuses:
                raise not_found(f"Could not find version {version} of model {name}")
            return [statuses[int(version)]]
        if not statuses:
            raise not_found(f"Could not find any versions of model {name}")
        return [statuses[v] for v in sorted(statuses, reverse=True)]
