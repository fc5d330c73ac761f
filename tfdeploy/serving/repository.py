"""The model repository: version directories, version policies, labels, polling, warmup.

Each model has a base path holding numeric version directories (``1/``, ``2/``,
...); every other name, such as the ``temp-*`` directories an export is being
written into, is ignored. A version policy picks which versions to serve
(``latest`` N, ``all`` or ``specific``). Polling loads newly wanted versions
first and unloads the unwanted ones only once a wanted version is available,
so there is no window without a model; a version that fails to load (after
``max_num_load_retries`` retries) leaves the previous one serving, and a base path
that cannot be listed never unloads anything. Version directory names follow TF
Serving's rule (``tfdeploy.runtime.versions``).
"""

import contextlib
import dataclasses
import gc
import logging
import os
import re
import threading
import time

from tfdeploy.runtime.versions import INT64_MAX, INT64_MIN, version_dirs
from tfdeploy.runtime.versions import list_versions  # noqa: F401  (re-exported)
from tfdeploy.serving import warmup
from tfdeploy.serving.servable import Servable
from tfdeploy.serving.options import RUNTIME_CHOICES
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
        runtime: what runs its ``serving_default``: "tensorflow", "auto", "litert",
            "onnxruntime" or "openvino" (``selection``); "" takes the server's
            ``--runtime``. In a models.config file: ``model_platform``. Defaults to "".
    """

    name: str
    base_path: str
    policy: str = "latest"
    num_versions: int = 1
    versions: tuple = ()
    labels: dict = dataclasses.field(default_factory=dict)
    runtime: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name) or ".." in self.name:
            raise ValueError(f"Invalid model name {self.name!r}: use letters, digits, '_', '.' "
                             "and '-' (no '/', ':' or '..').")
        if not self.base_path:
            raise ValueError(f"Model {self.name!r} has an empty base_path.")
        if self.runtime and self.runtime not in RUNTIME_CHOICES:
            raise ValueError(f"Model {self.name!r}: unrecognized runtime {self.runtime!r}. "
                             f"Supported runtimes are: {list(RUNTIME_CHOICES)}.")
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
        if c.model_platform not in ("",) + RUNTIME_CHOICES:
            raise ValueError(f"Model {c.name!r}: model_platform {c.model_platform!r} is not "
                             f"supported; use one of {list(RUNTIME_CHOICES)} (the runtime of "
                             "its serving_default; 'tensorflow' is TF Serving's).")
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
            labels={k: int(v) for k, v in c.version_labels.items()},
            runtime="" if c.model_platform == "tensorflow" else c.model_platform))
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
        self.status = {}     # version -> VersionStatus; replaced, never mutated
        self.failed = set()  # versions whose load failed (retried once they leave the disk)
        self.lock = threading.Lock()  # one reconciliation of this model at a time

    def set_status(self, version, state, code="OK", message=""):
        self.status = {**self.status, version: VersionStatus(version, state, code, message)}


def check_allowed_roots(configs, allowed_roots):
    """Raise PERMISSION_DENIED unless every base path lies under one of ``allowed_roots``.

    Paths are compared after resolving symbolic links and ``..``, so a reload request
    cannot escape the roots. ``allowed_roots=None`` allows everything (TF Serving's
    behaviour).
    """
    if allowed_roots is None:
        return
    roots = [os.path.realpath(r) for r in allowed_roots]
    for c in configs:
        if "://" in c.base_path:
            raise ServingError("PERMISSION_DENIED",
                               f"Model {c.name!r}: remote base paths are not allowed by "
                               "--model_config_allowed_roots.")
        real = os.path.realpath(c.base_path)
        if not any(os.path.commonpath([real, r]) == r for r in roots):
            raise ServingError("PERMISSION_DENIED",
                               f"Model {c.name!r}: its base path is outside the roots the "
                               "operator allowed (--model_config_allowed_roots).")


class ModelRepository:
    """Load, serve and poll the configured models.

    Loading, warmup and unloading happen outside the repository's lock: status and
    routing never wait behind a slow load. A version being unloaded is first taken out
    of routing, then finishes every request already routed to it (reference-counted
    handles, batching queues included) before its batcher stops.

    Args:
        configs: ModelConfig objects.
        poll_wait_seconds: seconds between file-system polls; 0 loads once. Defaults to 1.
        batching: batching options (see ``batching.validate_options``), or None for off.
        metrics: a ``Metrics`` registry, or None.
        max_num_load_retries: retries of a failed load (TF Serving's flag). Defaults to 5.
        load_retry_interval_micros: wait between retries. Defaults to 60 s (TF Serving's).
        freeze_gc: ``gc.freeze()`` after each load, so full collections no longer scan the
            hundreds of thousands of objects a loaded model keeps; an unload unfreezes,
            collects once and freezes again so an unloaded version is freed. Defaults to
            False (a library should not freeze its host's garbage; ``tfdeploy serve`` sets
            it).
        enable_signature_method_name_check: Classify/Regress require the signature's
            method_name (TF Serving's flag, default False).
        isolation: "none" (models run in this process), "process" (each version in a
            restartable worker process: ``tfdeploy.serving.isolation``) or "auto" (a worker
            process only where validation cannot keep a wrong rank away from a kernel that
            aborts on it: ``servable.needs_isolation``). Defaults to "none"; the server's
            default is "auto".
        isolation_call_timeout: seconds a call to a model in a worker process may wait for
            its answer before the worker is taken to be stuck and replaced; None: no limit.
            Defaults to None (the server's default is 300).
    """

    def __init__(self, configs, poll_wait_seconds=1.0, batching=None, metrics=None,
                 max_num_load_retries=5, load_retry_interval_micros=60_000_000,
                 freeze_gc=False, enable_signature_method_name_check=False, isolation="none",
                 runtime="tensorflow", runtime_threads=None, isolation_call_timeout=None):
        self._models = {}
        for c in configs:
            if c.name in self._models:
                raise ValueError(f"Model {c.name!r} is configured twice.")
            self._models[c.name] = _Model(c)
        if max_num_load_retries < 0 or load_retry_interval_micros < 0:
            raise ValueError("max_num_load_retries and load_retry_interval_micros must be >= 0, "
                             f"received {max_num_load_retries} and {load_retry_interval_micros}.")
        self.poll_wait_seconds = poll_wait_seconds
        self.batching, self.metrics = batching, metrics
        self.max_num_load_retries = int(max_num_load_retries)
        self.load_retry_interval = load_retry_interval_micros / 1e6
        self.freeze_gc = freeze_gc
        self.enable_signature_method_name_check = enable_signature_method_name_check
        self.isolation, self.isolation_call_timeout = isolation, isolation_call_timeout
        self.runtime, self.runtime_threads = runtime, runtime_threads
        self._reload_lock = threading.Lock()  # one reload at a time (never held by polling)
        self._stop = threading.Event()
        self._thread = None
        self._unloads = []
        self._unloads_lock = threading.Lock()

    @property
    def model_names(self):
        return sorted(self._models)

    @property
    def version_labels(self):
        """Every version label of every model's config, sorted."""
        return sorted({label for m in list(self._models.values()) for label in m.config.labels})

    def start(self):
        """Load the initial versions (blocking), then poll in a background thread."""
        self.poll_once()
        if self.poll_wait_seconds and self.poll_wait_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, daemon=True,
                                            name="tfdeploy-model-poll")
            self._thread.start()
        return self

    def stop(self, grace=30.0):
        """Stop polling, let routed requests finish (up to ``grace`` s), stop the batchers."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for model in list(self._models.values()):
            with model.lock:
                for version in sorted(model.available):
                    self._unload(model, version)
        self.wait_for_unloads(grace)

    def wait_for_unloads(self, timeout=None):
        """Wait until every unload started so far has drained; True when all did."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._unloads_lock:
            threads = list(self._unloads)
        for t in threads:
            t.join(None if end is None else max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    def reload(self, configs):
        """Switch to a new list of ModelConfigs (HandleReloadConfigRequest / config polling).

        New models are loaded, removed models unloaded, and changed models (base path,
        policy, labels) reconciled; versions that stay wanted keep serving throughout. A
        model moved to a new base path where nothing loads keeps serving its old base path.

        Raises:
            ServingError: FAILED_PRECONDITION naming the models whose new base path served
                nothing (the rest of the new config is applied).
        """
        names = [c.name for c in configs]
        if len(set(names)) != len(names):
            raise ValueError(f"A model is configured twice in {names}.")
        with self._reload_lock:
            old = self._models
            models, kept = {}, []
            for c in configs:
                model = old.get(c.name)
                if model is None or model.config.base_path != c.base_path:
                    fresh = _Model(c)          # a new model, or one moved to a new base path
                    with fresh.lock:
                        self._reconcile(fresh)
                    if model is not None and model.available and not fresh.available:
                        kept.append(c.name)    # the new base path serves nothing: keep the old
                        models[c.name] = model
                        continue
                    models[c.name] = fresh
                else:
                    model.config = c
                    models[c.name] = model
                    self._reconcile_soon(model)
            self._models = models   # replaced at once: readers see the old or the new map
            for name, model in old.items():
                if models.get(name) is not model:
                    with model.lock:
                        for version in sorted(model.available):
                            self._unload(model, version)
                    log.info("Retired the previous configuration of model %s", name)
        if kept:
            raise ServingError("FAILED_PRECONDITION",
                               f"No version could be loaded from the new base path of "
                               f"{kept}; the previous versions keep serving.")

    def _reconcile_soon(self, model):
        """Reconcile now when the model is idle; otherwise right after its current load."""
        if model.lock.acquire(blocking=False):
            try:
                self._reconcile(model)
            finally:
                model.lock.release()
            return

        def later():
            with model.lock:
                self._reconcile(model)
        threading.Thread(target=later, daemon=True, name="tfdeploy-reconcile").start()

    def _poll_loop(self):
        while not self._stop.wait(self.poll_wait_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001  (polling must survive anything)
                log.exception("Polling the model base paths failed")

    def poll_once(self):
        """Reconcile every model with its base path once."""
        for model in list(self._models.values()):
            if self._stop.is_set():
                return
            with model.lock:
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
        model.failed &= set(on_disk)   # a failed version that was removed may come back
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
            if keep_old:
                continue  # empty listing, or nothing wanted available yet: keep serving
            self._unload(model, version)

    def _scrub(self, model, message):
        """``message`` without the model's absolute base path (it goes to clients)."""
        base = model.config.base_path
        for path in sorted({base, os.path.abspath(base), os.path.realpath(base)}, key=len,
                           reverse=True):
            if path and path not in (".", os.sep):
                message = message.replace(path, f"<base_path of {model.config.name}>")
        return message

    def _load(self, model, version, path):
        cfg = model.config
        model.set_status(version, "LOADING")
        attempts = 1 + self.max_num_load_retries
        for attempt in range(1, attempts + 1):
            log.info("Loading servable version {name: %s version: %d}", cfg.name, version)
            start = time.perf_counter()
            try:
                servable, replayed = self._load_once(cfg, version, path)
                break
            except Exception as exc:  # noqa: BLE001  (a bad version must not take the server down)
                code = exc.code if isinstance(exc, ServingError) else "UNKNOWN"
                log.error("Loading servable version {name: %s version: %d} failed (attempt "
                          "%d of %d): %s", cfg.name, version, attempt, attempts, exc)
                if attempt == attempts or self._stop.wait(self.load_retry_interval):
                    model.set_status(version, "END", code, self._scrub(model, str(exc)))
                    model.failed.add(version)
                    return
        model.available = {**model.available, version: servable}
        model.set_status(version, "AVAILABLE")
        if self.freeze_gc:
            gc.freeze()   # the model's long-lived objects leave the collector's scans
        log.info("Successfully loaded servable version {name: %s version: %d} in %.2fs "
                 "(%d warmup records replayed)", cfg.name, version,
                 time.perf_counter() - start, replayed)

    def _load_once(self, cfg, version, path):
        servable = Servable(cfg.name, version, path,
                            method_name_check=self.enable_signature_method_name_check,
                            isolation=self.isolation,
                            isolation_call_timeout=self.isolation_call_timeout)
        if self.metrics is not None:
            servable.on_run = self._runtime_observer(cfg.name)
        policy = cfg.runtime or self.runtime
        try:
            logs = warmup.read_logs(servable)   # read once: the runtime choice and the replay
            records = warmup.predict_feeds(servable, logs) if policy != "tensorflow" else []
            servable.select_runtime(policy, records, self.runtime_threads)
        except Exception:
            servable.close()
            raise
        if self.metrics is not None:
            self._runtime_gauges(cfg.name, servable)
        if self.batching:
            from tfdeploy.serving.batching import Batcher

            on_batch = self._batch_observer(cfg.name) if self.metrics is not None else None
            servable.batcher = Batcher(servable.call, on_batch=on_batch, **self.batching)
        try:
            replayed = warmup.replay(servable, logs)
        except Exception:
            if servable.batcher is not None:
                servable.batcher.stop()
            servable.close()
            raise
        return servable, replayed

    def _unload(self, model, version):
        """Take ``version`` out of routing now; it finishes its routed requests, then stops."""
        servable = model.available[version]
        model.set_status(version, "UNLOADING")
        model.available = {v: s for v, s in model.available.items() if v != version}
        servable.retire()
        name = model.config.name

        def finish():
            servable.wait_drained()
            if servable.batcher is not None:
                servable.batcher.stop()
            servable.close()
            if self.metrics is not None:
                self.metrics.clear_gauges(model_name=name, version=version)
            model.set_status(version, "END")
            log.info("Unloaded servable version {name: %s version: %d}", name, version)
            if self.freeze_gc:
                servable.release_model()
                gc.unfreeze()   # let the unloaded version's objects be collected, once
                gc.collect()
                gc.freeze()

        t = threading.Thread(target=finish, daemon=True, name="tfdeploy-unload")
        with self._unloads_lock:
            self._unloads = [u for u in self._unloads if u.is_alive()] + [t]
        t.start()

    def _runtime_gauges(self, name, servable):
        from tfdeploy.serving.metrics import (RUNTIME_CANDIDATE_CONCURRENT,
                                              RUNTIME_CANDIDATE_P50, RUNTIME_SELECTED)

        report, version = servable.runtime_report, str(servable.version)
        serving = report["serving"]
        self.metrics.set_gauge(RUNTIME_SELECTED, 1, model_name=name, version=version,
                               runtime=serving["runtime"], artifact=serving["artifact"],
                               threads=str(serving.get("threads") or ""))
        for row in report["candidates"]:   # one sample per thread setting timed
            timings = row.get("timings") or (
                {str(row.get("threads")): row} if row.get("p50_ms") is not None else {})
            for threads, figures in timings.items():
                self.metrics.set_gauge(RUNTIME_CANDIDATE_P50, figures["p50_ms"] * 1000,
                                       model_name=name, version=version,
                                       runtime=row["runtime"], artifact=row["artifact"],
                                       threads=threads,
                                       passed=str(bool(row.get("passed"))).lower())
            if row.get("concurrent"):   # a tie alone, timed under concurrent calls
                self.metrics.set_gauge(RUNTIME_CANDIDATE_CONCURRENT,
                                       row["concurrent"]["calls_per_s"], model_name=name,
                                       version=version, runtime=row["runtime"],
                                       artifact=row["artifact"], threads=str(row.get("threads")),
                                       callers=str(row["concurrent"]["callers"]))

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
    def recent_call_seconds(self, name):
        """The largest recent model-call time (moving average, s) among a model's available
        versions; 0 when none ran yet or the model is unknown."""
        model = self._models.get(name)
        if model is None:
            return 0.0
        return max((s.recent_call_seconds for s in model.available.values()), default=0.0)

    def _model(self, name, missing_message):
        model = self._models.get(name)
        if model is None:
            raise not_found(missing_message)
        return model

    def resolve_version(self, name, version=None, label=None):
        """The version number a request names (None means latest), after the label lookup."""
        if version is not None:
            version = int(version)
            if not INT64_MIN <= version <= INT64_MAX:
                raise invalid(f"Version {version} is out of the int64 range.")
        if label:
            model = self._models.get(name)
            if model is None or label not in model.config.labels:
                raise invalid(f"Unrecognized servable version label: {label}")
            return model.config.labels[label]
        return version

    def get(self, name, version=None, label=None):
        """Return the Servable a request names; NOT_FOUND as TF Serving words it.

        For metadata only: a request that runs the model takes a handle (``serve``).
        """
        version = self.resolve_version(name, version, label)
        if version is None:
            model = self._model(name, f"Servable not found for request: Latest({name})")
            available = model.available
            if not available:
                raise not_found(f"Servable not found for request: Latest({name})")
            return available[max(available)]
        model = self._model(name, f"Servable not found for request: Specific({name}, {version})")
        servable = model.available.get(version)
        if servable is None:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return servable

    @contextlib.contextmanager
    def serve(self, name, version=None, label=None):
        """A reference-counted handle on the Servable a request names.

        The version cannot finish unloading while the handle is held, so a request routed
        to it always completes.
        """
        while True:
            servable = self.get(name, version, label)
            if servable.acquire():
                break   # else it was retired between the lookup and the acquire: look again
        try:
            yield servable
        finally:
            servable.release()

    def status(self, name, version=None, label=None):
        """VersionStatus list for GetModelStatus (newest first)."""
        version = self.resolve_version(name, version, label)
        model = self._model(name, f"Could not find any versions of model {name}")
        statuses = dict(model.status)
        if version is not None:
            if version not in statuses:
                raise not_found(f"Could not find version {version} of model {name}")
            return [statuses[version]]
        if not statuses:
            raise not_found(f"Could not find any versions of model {name}")
        return [statuses[v] for v in sorted(statuses, reverse=True)]
