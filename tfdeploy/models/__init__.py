"""Models: the classic CNN, MobileNet-family transfer learning (builder + fine-tune callback),
and text models (CNN, BiGRU, Transformer encoder, retrieval towers)."""

from tfdeploy.models.cnn import build_cnn
from tfdeploy.models.finetune import FineTune, base_layers
from tfdeploy.models.mobilenet import (ARCHITECTURES, architecture, base_layer_name,
                                       build_mobilenet, imagenet_weights_file, save_base_weights)
from tfdeploy.models.text import (PositionEmbedding, RetrievalTrainer, build_id_encoder,
                                  build_text_bigru, build_text_cnn, build_text_encoder,
                                  build_text_transformer, duplicate_mask, text_vectorizer,
                                  vectorize, vocab_size, vocabulary)

__all__ = ["build_cnn", "build_mobilenet", "FineTune", "base_layers", "base_layer_name",
           "save_base_weights", "imagenet_weights_file", "architecture", "ARCHITECTURES",
           "text_vectorizer", "vocabulary", "vocab_size", "vectorize",
           "build_text_cnn", "build_text_bigru", "build_text_transformer", "build_text_encoder",
           "build_id_encoder", "RetrievalTrainer", "PositionEmbedding", "duplicate_mask"]
