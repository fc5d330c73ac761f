"""Models: the classic CNN and MobileNet-family transfer learning (builder + fine-tune callback)."""

from tfdeploy.models.cnn import build_cnn
from tfdeploy.models.finetune import FineTune, base_layers
from tfdeploy.models.mobilenet import (ARCHITECTURES, architecture, base_layer_name,
                                       build_mobilenet, imagenet_weights_file, save_base_weights)

__all__ = ["build_cnn", "build_mobilenet", "FineTune", "base_layers", "base_layer_name",
           "save_base_weights", "imagenet_weights_file", "architecture", "ARCHITECTURES"]
