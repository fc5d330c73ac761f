"""TF-Serving-compatible serving: REST + gRPC server, model repository, batching, metrics,
configs for the real TF Serving, and a client.

    server = create_server(model_name="digits", model_base_path="saved_models/digits",
                           port=8500, rest_api_port=8501).start()
    ...
    server.stop()

This package imports no training code (tfmot, keras-tuner).
"""

from tfdeploy.serving.repository import ModelConfig, ModelRepository
from tfdeploy.serving.server import ModelServer, create_server
from tfdeploy.serving.status import ServingError

__all__ = ["create_server", "ModelServer", "ModelConfig", "ModelRepository", "ServingError"]
