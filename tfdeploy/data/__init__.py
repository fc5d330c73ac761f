"""Data: bundled digits, image directory → tf.data, augmentation, calibration data, text files +
corpora."""

from tfdeploy.data.augment import augment, augmentation_layers
from tfdeploy.data.digits import DEFAULT_DIR, write_digits
from tfdeploy.data.directory import image_dataset, scan_directory, stratified_split, to_numpy
from tfdeploy.data.profile import input_pipeline_share
from tfdeploy.data.representative import representative_data
from tfdeploy.data.text import read_records, read_texts, text_dataset
from tfdeploy.data.text_corpus import (content_words, qa_corpus, recommendation_corpus,
                                       sentiment_corpus, sentiment_stream, write_qa_corpus,
                                       write_recommendation_corpus, write_sentiment_corpus)

__all__ = ["DEFAULT_DIR", "write_digits", "image_dataset", "scan_directory", "to_numpy",
           "stratified_split",
           "representative_data", "input_pipeline_share", "augment", "augmentation_layers",
           "read_records", "read_texts", "text_dataset", "sentiment_corpus", "sentiment_stream",
           "qa_corpus", "recommendation_corpus", "write_sentiment_corpus", "write_qa_corpus",
           "write_recommendation_corpus", "content_words"]
