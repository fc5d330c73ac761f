"""Configs for the real TF Serving: models.config, batching, monitoring, Docker, Kubernetes.

``write_configs`` writes, into one directory:

- ``models.config``: text-format ModelServerConfig (models under ``/models/NAME``),
- ``batching_parameters.txt``: text-format BatchingParameters,
- ``monitoring.config``: text-format MonitoringConfig (Prometheus),
- ``docker-compose.yml``: the ``tensorflow/serving`` image with the models mounted read-only,
- ``kubernetes.yaml``: a ConfigMap, a Deployment and a Service.
- ``kserve.yaml``: a KServe ``ServingRuntime`` running ``tfdeploy serve`` (it speaks V1 and
  the Open Inference Protocol, V2) with readiness and liveness probes on the V2 health
  routes, and an ``InferenceService`` per model on it with ``protocolVersion: v2``.

Every protobuf file is parsed back with its proto before it is written.
"""

import json
import os
import re

from tfdeploy.serving import metrics as metrics_lib
from tfdeploy.serving import protos
from tfdeploy.serving.repository import ModelConfig

CONTAINER_MODELS = "/models"
CONTAINER_CONFIG = "/etc/tfserving"
DEFAULT_IMAGE = "tensorflow/serving:latest"
# An image with tfdeploy installed (``pip install tfdeploy``; its entry point ``tfdeploy``).
DEFAULT_TFDEPLOY_IMAGE = "tfdeploy:latest"
KSERVE_MODEL_DIR = "/mnt/models"   # where KServe's storage initializer puts storageUri
KSERVE_HTTP_PORT = 8080            # KServe's default container port


def model_server_config(configs, container_root=CONTAINER_MODELS):
    """A ModelServerConfig message; each model's base_path becomes ``container_root/NAME``."""
    msg = protos.ModelServerConfig()
    for c in configs:
        out = msg.model_config_list.config.add(
            name=c.name, base_path=f"{container_root}/{c.name}" if container_root else c.base_path,
            model_platform="tensorflow")
        policy = out.model_version_policy
        if c.policy == "latest":
            policy.latest.num_versions = c.num_versions
        elif c.policy == "all":
            policy.all.SetInParent()
        else:
            policy.specific.versions.extend(sorted(c.versions))
        for label, version in sorted(c.labels.items()):
            out.version_labels[label] = version
    return msg


def batching_parameters(max_batch_size=32, batch_timeout_micros=1000, num_batch_threads=None,
                        max_enqueued_batches=100, allowed_batch_sizes=()):
    """A validated BatchingParameters message."""
    from tfdeploy.serving.batching import validate_options

    validate_options(max_batch_size=max_batch_size, batch_timeout_micros=batch_timeout_micros,
                     num_batch_threads=num_batch_threads or 1,
                     max_enqueued_batches=max_enqueued_batches,
                     allowed_batch_sizes=allowed_batch_sizes)
    msg = protos.BatchingParameters()
    msg.max_batch_size.value = max_batch_size
    msg.batch_timeout_micros.value = batch_timeout_micros
    msg.max_enqueued_batches.value = max_enqueued_batches
    if num_batch_threads:
        msg.num_batch_threads.value = num_batch_threads
    msg.allowed_batch_sizes.extend(allowed_batch_sizes)
    return msg


def monitoring_config(path=metrics_lib.DEFAULT_PATH):
    msg = protos.MonitoringConfig()
    msg.prometheus_config.enable = True
    msg.prometheus_config.path = path
    return msg


# -- YAML (block style; every string JSON-quoted, which YAML reads as the same string) -----
_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
_KEYWORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _KEYWORDS:
        return text
    return json.dumps(text)


def to_yaml(value, indent=0):
    """Dump dicts/lists/scalars as block YAML."""
    pad = "  " * indent
    lines = []
    if isinstance(value, dict):
        if not value:
            return pad + "{}"
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{_scalar(k)}:")
                lines.append(to_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}{_scalar(k)}: {to_yaml(v, 0).strip()}")
        return "\n".join(lines)
    if isinstance(value, list):
        if not value:
            return pad + "[]"
        for item in value:
            if isinstance(item, (dict, list)) and item:
                body = to_yaml(item, indent + 1).lstrip()
                lines.append(f"{pad}- {body}")
            else:
                lines.append(f"{pad}- {to_yaml(item, 0).strip()}")
        return "\n".join(lines)
    return pad + _scalar(value)


def _server_args(batching, monitoring_path, grpc_port, rest_port):
    args = [f"--port={grpc_port}", f"--rest_api_port={rest_port}",
            f"--model_config_file={CONTAINER_CONFIG}/models.config",
            "--model_config_file_poll_wait_seconds=60",
            "--file_system_poll_wait_seconds=1"]
    if batching:
        args += ["--enable_batching=true",
                 f"--batching_parameters_file={CONTAINER_CONFIG}/batching_parameters.txt"]
    if monitoring_path:
        args.append(f"--monitoring_config_file={CONTAINER_CONFIG}/monitoring.config")
    return args


def docker_compose(configs, config_dir, args, image=DEFAULT_IMAGE, grpc_port=8500,
                   rest_port=8501):
    volumes = [f"{os.path.abspath(c.base_path)}:{CONTAINER_MODELS}/{c.name}:ro" for c in configs]
    volumes.append(f"{os.path.abspath(config_dir)}:{CONTAINER_CONFIG}:ro")
    return {"services": {"tfserving": {
        "image": image,
        "command": args,
        "ports": [f"{grpc_port}:{grpc_port}", f"{rest_port}:{rest_port}"],
        "volumes": volumes,
        "restart": "unless-stopped",
        "healthcheck": {
            "test": ["CMD-SHELL", f"timeout 2 bash -c '</dev/tcp/127.0.0.1/{rest_port}' "
                                  "|| exit 1"],
            "interval": "10s", "timeout": "3s", "retries": 3}}}}


def kubernetes(configs, files, args, app="tfserving", image=DEFAULT_IMAGE, replicas=1,
               models_pvc=None, grpc_port=8500, rest_port=8501, monitoring_path=None):
    """ConfigMap + Deployment + Service documents for the tensorflow/serving image."""
    labels = {"app": app}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": f"{app}-config", "labels": labels}, "data": files}
    annotations = {}
    if monitoring_path:
        annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(rest_port),
                       "prometheus.io/path": monitoring_path}
    first = configs[0].name
    container = {
        "name": "tensorflow-serving", "image": image, "args": args,
        "ports": [{"name": "grpc", "containerPort": grpc_port},
                  {"name": "http", "containerPort": rest_port}],
        "volumeMounts": [{"name": "models", "mountPath": CONTAINER_MODELS, "readOnly": True},
                         {"name": "config", "mountPath": CONTAINER_CONFIG, "readOnly": True}],
        "readinessProbe": {"httpGet": {"path": f"/v1/models/{first}", "port": rest_port},
                           "initialDelaySeconds": 5, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": grpc_port}, "initialDelaySeconds": 15,
                          "periodSeconds": 10},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                      "limits": {"memory": "2Gi"}},
    }
    models_volume = {"name": "models"}
    if models_pvc:
        models_volume["persistentVolumeClaim"] = {"claimName": models_pvc, "readOnly": True}
    else:
        models_volume["persistentVolumeClaim"] = {"claimName": f"{app}-models", "readOnly": True}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": app, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels, "annotations": annotations},
                              "spec": {"containers": [container], "volumes": [
                                  models_volume,
                                  {"name": "config", "configMap": {"name": f"{app}-config"}}]}}}}
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": app, "labels": labels},
               "spec": {"selector": labels, "type": "ClusterIP", "ports": [
                   {"name": "grpc", "port": grpc_port, "targetPort": grpc_port},
                   {"name": "http", "port": rest_port, "targetPort": rest_port}]}}
    return [config_map, deployment, service]


def kserve(configs, image=DEFAULT_TFDEPLOY_IMAGE, runtime="tfdeploy", models_pvc=None,
            app="tfserving", storage_uris=None):
    """A KServe ``ServingRuntime`` running ``tfdeploy serve`` and an ``InferenceService`` per
    model (``protocolVersion: v2``), as a list of documents.

    The runtime's container serves REST (V1 and V2) on KServe's port 8080, is ready when
    ``GET /v2/health/ready`` answers 200 (every model has a version loaded) and alive while
    ``GET /v2/health/live`` does. A model's ``storageUri`` is ``storage_uris[name]``, or
    ``pvc://MODELS_PVC/NAME`` (the claim of the Deployment in ``kubernetes.yaml``).
    """
    probe = {"initialDelaySeconds": 5, "periodSeconds": 5, "timeoutSeconds": 2}
    container = {
        "name": "kserve-container", "image": image,
        "command": ["tfdeploy"],
        "args": ["serve", "--model_name={{.Name}}", f"--model_base_path={KSERVE_MODEL_DIR}",
                 f"--rest_api_port={KSERVE_HTTP_PORT}", "--port=8081", "--host=0.0.0.0"],
        "ports": [{"containerPort": KSERVE_HTTP_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": KSERVE_HTTP_PORT},
                           **probe},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": KSERVE_HTTP_PORT},
                          **dict(probe, initialDelaySeconds=15, periodSeconds=10)},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                      "limits": {"memory": "2Gi"}},
    }
    runtime_doc = {
        "apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime",
        "metadata": {"name": runtime},
        "spec": {"supportedModelFormats": [{"name": "tensorflow", "version": "2",
                                            "autoSelect": False}],
                 "protocolVersions": ["v1", "v2"],
                 "containers": [container]}}
    claim = models_pvc or f"{app}-models"
    docs = [runtime_doc]
    for c in configs:
        uri = (storage_uris or {}).get(c.name) or f"pvc://{claim}/{c.name}"
        docs.append({
            "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": c.name},
            "spec": {"predictor": {"model": {
                "modelFormat": {"name": "tensorflow"}, "protocolVersion": "v2",
                "runtime": runtime, "storageUri": uri}}}})
    return docs


def write_configs(configs, output_dir, batching=None, monitoring_path=metrics_lib.DEFAULT_PATH,
                  image=DEFAULT_IMAGE, replicas=1, models_pvc=None, grpc_port=8500,
                  rest_port=8501, app="tfserving"):
    """Write every config for the real TF Serving into ``output_dir``; return their paths.

    Args:
        configs: ModelConfig objects (their base_path is mounted at ``/models/NAME``).
        output_dir: directory to write into (created).
        batching: keyword arguments of ``batching_parameters``, or None for no batching.
        monitoring_path: Prometheus path, or None for no monitoring config.
        image: the TF Serving image. Defaults to "tensorflow/serving:latest".
        replicas: Deployment replicas. Defaults to 1.
        models_pvc: PersistentVolumeClaim holding the models (``<app>-models`` by default).

    Returns:
        ``{file name: path}``.
    """
    if not configs:
        raise ValueError("No models given; pass at least one NAME=BASE_PATH.")
    for c in configs:
        if not isinstance(c, ModelConfig):
            raise TypeError(f"Expected ModelConfig objects, received {type(c).__name__}.")
    os.makedirs(output_dir, exist_ok=True)
    texts = {"models.config": protos.to_text(model_server_config(configs))}
    if batching is not None:
        texts["batching_parameters.txt"] = protos.to_text(batching_parameters(**batching))
    if monitoring_path:
        texts["monitoring.config"] = protos.to_text(monitoring_config(monitoring_path))
    # Parse every proto file back before writing anything.
    protos.parse_text(texts["models.config"], protos.ModelServerConfig(), "models.config")
    if "batching_parameters.txt" in texts:
        protos.parse_text(texts["batching_parameters.txt"], protos.BatchingParameters(),
                          "batching_parameters.txt")
    if "monitoring.config" in texts:
        protos.parse_text(texts["monitoring.config"], protos.MonitoringConfig(),
                          "monitoring.config")
    args = _server_args(batching is not None, monitoring_path, grpc_port, rest_port)
    compose = docker_compose(configs, output_dir, args, image, grpc_port, rest_port)
    k8s = kubernetes(configs, dict(texts), args, app, image, replicas, models_pvc, grpc_port,
                     rest_port, monitoring_path)
    texts["docker-compose.yml"] = to_yaml(compose) + "\n"
    texts["kubernetes.yaml"] = "\n---\n".join(to_yaml(doc) for doc in k8s) + "\n"
    texts["kserve.yaml"] = "\n---\n".join(
        to_yaml(doc) for doc in kserve(configs, models_pvc=models_pvc, app=app)) + "\n"
    paths = {}
    for name, text in texts.items():
        path = os.path.join(output_dir, name)
        with open(path, "w") as f:
            f.write(text)
        paths[name] = path
    return paths


__all__ = ["model_server_config", "batching_parameters", "monitoring_config", "to_yaml",
           "docker_compose", "kubernetes", "kserve", "write_configs", "DEFAULT_IMAGE",
           "CONTAINER_MODELS"]
