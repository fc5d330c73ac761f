"""Tokenise text outside the model, exactly as the training ``TextVectorization`` did.

A text model exported to TFLite with builtin ops only takes token ids; the
vocabulary travels beside the file (``model.tflite`` → ``model.vocab.txt``,
one token per line, ids from 2; 0 is padding and 1 out-of-vocabulary) and
`TextTFLiteRunner` applies it. Pure Python + numpy: no TensorFlow, no Keras.

The rules are TextVectorization's ``lower_and_strip_punctuation`` +
``whitespace`` split: ASCII letters lower-cased (``tf.strings.lower`` leaves
other letters alone), Keras's punctuation set removed, split on ASCII
whitespace, ids padded with 0 or cut to the sequence length.
"""

import os
import re

import numpy as np

from tfdeploy.errors import ArtifactError, TextDataError

# tf_keras text_vectorization.DEFAULT_STRIP_REGEX, applied to UTF-8 bytes as TF does.
STRIP_REGEX = re.compile(rb'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')
_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
PAD_ID, OOV_ID = 0, 1


def vocabulary_path(artifact_path):
    """Where a ``.tflite`` text model's vocabulary lives: ``<file minus .tflite>.vocab.txt``."""
    return os.path.splitext(artifact_path)[0] + ".vocab.txt"


def read_vocabulary(path):
    """Read a vocabulary file (one token per line, UTF-8) into a list."""
    if not os.path.isfile(path):
        raise ArtifactError(
            f"Vocabulary file {path!r} is missing. Text models exported with "
            "tfdeploy.export.text_tflite ship it beside the .tflite file; copy it along.")
    with open(path, "rb") as f:
        return [line.rstrip(b"\n").decode("utf-8") for line in f]


def check_texts(texts):
    """Return ``texts`` as a list of str, or raise `TextDataError` saying what is wrong."""
    if isinstance(texts, (str, bytes)):
        texts = [texts]
    if isinstance(texts, np.ndarray):
        texts = texts.ravel().tolist()
    if not isinstance(texts, (list, tuple)):
        raise TextDataError(
            f"Expected a list of strings, received {type(texts).__name__}. Pass e.g. "
            "['Acme beats estimates'].")
    if not texts:
        raise TextDataError("Received an empty list of texts; pass at least one string.")
    out = []
    for i, t in enumerate(texts):
        if isinstance(t, bytes):
            try:
                t = t.decode("utf-8")
            except UnicodeDecodeError:
                raise TextDataError(f"Text {i} is not valid UTF-8 bytes; decode it or send "
                                    "str.") from None
        if not isinstance(t, str):
            raise TextDataError(f"Text {i} is {type(t).__name__} ({t!r}), not a string.")
        out.append(t)
    return out


class TextTokenizer:
    """Map strings to padded int32 id rows with a vocabulary (list or file path).

    Args:
        vocabulary: tokens for ids 2, 3, ... (a list, or a file path).
        sequence_length: ids per row.
    """

    def __init__(self, vocabulary, sequence_length):
        tokens = read_vocabulary(vocabulary) if isinstance(vocabulary, str) else list(vocabulary)
        self.vocabulary = tokens
        self.sequence_length = int(sequence_length)
        self._ids = {t.encode("utf-8"): i + 2 for i, t in enumerate(tokens)}

    def tokens(self, text):
        data = text.encode("utf-8").translate(_ASCII_LOWER)
        return STRIP_REGEX.sub(b"", data).split()

    def __call__(self, texts):
        texts = check_texts(texts)
        out = np.zeros((len(texts), self.sequence_length), np.int32)
        for row, text in enumerate(texts):
            ids = [self._ids.get(t, OOV_ID) for t in self.tokens(text)][:self.sequence_length]
            out[row, :len(ids)] = ids
        return out


class TextTFLiteRunner:
    """Run a ``.tflite`` text model on raw strings: tokenise with its vocabulary, then invoke.

    Args:
        path: the ``.tflite`` file (input: int32 ids ``(batch, length)``).
        vocabulary: vocabulary list or file; defaults to `vocabulary_path` of ``path``.
        num_threads: interpreter threads. Defaults to None.
    """

    format = "tflite"

    def __init__(self, path, vocabulary=None, num_threads=None):
        from tfdeploy.runtime.tflite import TFLiteRunner

        self.runner = TFLiteRunner(path, num_threads=num_threads)
        self.path = path
        (_, shape, _), = self.runner.inputs[:1]
        if len(shape) != 2:
            raise ArtifactError(f"{path!r} takes input shape {shape}; a text model takes "
                                "(batch, sequence_length) token ids.")
        self.tokenizer = TextTokenizer(vocabulary if vocabulary is not None
                                       else vocabulary_path(path), shape[1])

    @property
    def inputs(self):
        return self.runner.inputs

    @property
    def outputs(self):
        return self.runner.outputs

    def run(self, texts):
        return self.runner.run(self.tokenizer(texts))

    def predict(self, texts):
        return self.runner.predict(self.tokenizer(texts))
