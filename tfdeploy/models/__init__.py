"""Models: the classic CNN, and text models (CNN, BiGRU, Transformer encoder, retrieval towers)."""

from tfdeploy.models.cnn import build_cnn
from tfdeploy.models.text import (PositionEmbedding, RetrievalTrainer, build_id_encoder,
                                  build_text_bigru, build_text_cnn, build_text_encoder,
                                  build_text_transformer, text_vectorizer, vectorize, vocab_size,
                                  vocabulary)

__all__ = ["build_cnn", "text_vectorizer", "vocabulary", "vocab_size", "vectorize",
           "build_text_cnn", "build_text_bigru", "build_text_transformer", "build_text_encoder",
           "build_id_encoder", "RetrievalTrainer", "PositionEmbedding"]
