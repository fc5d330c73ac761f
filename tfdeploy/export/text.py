"""Text models: SavedModels that take raw strings, and TFLite files with their vocabulary.

`text_saved_model` puts tokenisation inside the graph: ``serving_default`` takes
a batch of strings ``text`` and a ``TextVectorization`` layer, built from the
vocabulary file (saved as ``assets/vocabulary.txt``), turns them into the ids
the model was trained on. TF Serving and ``tfdeploy serve`` then answer REST
``{"instances": ["Acme beats estimates"]}`` and gRPC string tensors directly.

`retrieval_saved_model` does the same for a query tower and adds the candidate
index: embeddings computed once at export (``assets/index_embeddings.f32``,
raw little-endian float32) and their keys (``assets/index_keys.txt``); the
signature returns the top-k keys and scores.

`text_tflite` writes a builtin-ops-only ``.tflite`` of the id → output network
(tokenisation stays outside: string ops would need Flex) and the vocabulary
beside it (``<file>.vocab.txt``), which `tfdeploy.runtime.text.TextTFLiteRunner`
applies.
"""

import os
import shutil
import tempfile

import numpy as np

from tfdeploy._keras import keras, tf
from tfdeploy.model_io import check_model
from tfdeploy.errors import ExportError
from tfdeploy.export import _warmup, model_card as _card
from tfdeploy._atomic import atomic_directory, atomic_file
from tfdeploy.export._saved_model import LABELS_FILE
from tfdeploy.runtime.versions import list_versions
from tfdeploy.export._tflite import tflite
from tfdeploy.models.text import SPLIT, STANDARDIZE
from tfdeploy.runtime.text import vocabulary_path

TEXT_INPUT = "text"
VOCAB_FILE = "vocabulary.txt"
INDEX_FILE = "index_embeddings.f32"
KEYS_FILE = "index_keys.txt"
QUERY_IDS_FILE = "query_ids.txt"


def _lines(path, items, what):
    items = [str(i) for i in items]
    bad = [i for i in items if not i or "\n" in i or "\r" in i]
    if bad:
        raise ExportError(f"{what} must be non-empty single-line strings, received {bad[:5]!r}.")
    if len(set(items)) != len(items):
        raise ExportError(f"{what} must be unique; found duplicates.")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(items) + "\n")
    return items


def write_vocabulary(path, vocabulary):
    """Write ``vocabulary`` (tokens for ids 2, 3, ...) one per line, atomically; returns path."""
    with atomic_file(path) as tmp:
        _lines(tmp, vocabulary, "vocabulary tokens")
    return path


def _sequence_length(model):
    if len(model.inputs) != 1 or model.inputs[0].shape.rank != 2 or \
            not model.inputs[0].dtype.is_integer or model.inputs[0].shape[1] is None:
        raise ExportError(
            f"Model {model.name!r} must take one int (batch, sequence_length) token-id input "
            f"(tfdeploy.models text builders); it takes {[t.shape for t in model.inputs]}.")
    return int(model.inputs[0].shape[1])


def _version_dir(base_path, version, overwrite):
    if version is None:
        existing = list_versions(base_path)
        version = existing[-1] + 1 if existing else 1
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ExportError(f"version must be a non-negative integer, received {version!r}.")
    final = os.path.join(base_path, str(version))
    if os.path.exists(final) and not overwrite:
        raise ExportError(f"Version directory {final!r} already exists; pass overwrite=True to "
                          "replace it or version=None for the next free version.")
    return version, final


def _vectorizer(vocab_file, length):
    return keras.layers.TextVectorization(
        vocabulary=vocab_file, standardize=STANDARDIZE, split=SPLIT, output_mode="int",
        output_sequence_length=length)


class _TextModule(tf.Module):
    """Signatures over raw strings: classify (or embed), and optional top-k retrieval."""

    def __init__(self, model, vocab_file, labels_file=None, index=None, query_ids_file=None):
        super().__init__(name="tfdeploy_text_serving")
        self.model_variables = list(model.variables)
        self.serving_functions = {}
        if vocab_file is not None:
            self.vectorizer = _vectorizer(vocab_file, _sequence_length(model))
            dtype = model.inputs[0].dtype

            def encode(text):
                return tf.cast(self.vectorizer(text), dtype)
            spec = tf.TensorSpec([None], tf.string, name=TEXT_INPUT)
        else:
            self.query_asset = tf.saved_model.Asset(query_ids_file)
            self.query_table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
                self.query_asset, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), default_value=-1)
            dtype = model.inputs[0].dtype

            def encode(query_id):
                index = self.query_table.lookup(query_id)
                check = tf.debugging.assert_non_negative(
                    index, message="Unknown query id: it is not in the exported id vocabulary")
                with tf.control_dependencies([check]):
                    return tf.cast(index, dtype)
            spec = tf.TensorSpec([None], tf.string, name="query_id")

        self.labels = None
        if labels_file is not None:
            self.labels_asset = tf.saved_model.Asset(labels_file)
            self.labels = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
                self.labels_asset, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                tf.string, tf.lookup.TextFileIndex.WHOLE_LINE), default_value="")

        def embed(inputs):
            return tf.cast(model(encode(inputs), training=False), tf.float32)

        if index is None:
            def classify(text):
                probs = embed(text)
                if self.labels is None:
                    return {"outputs": probs}
                class_index = tf.argmax(probs, axis=-1)
                return {"probabilities": probs, "class_index": class_index,
                        "class_label": self.labels.lookup(class_index)}
            self.serving_functions["serving_default"] = tf.function(
                classify, input_signature=[spec])
            return
        embeddings_file, keys_file, dim, k = index
        self.index_asset = tf.saved_model.Asset(embeddings_file)
        self.keys_asset = tf.saved_model.Asset(keys_file)

        def search(inputs):
            query = embed(inputs)
            table = tf.reshape(tf.io.decode_raw(tf.io.read_file(self.index_asset), tf.float32),
                               [-1, dim])
            keys = tf.strings.split(tf.strings.strip(tf.io.read_file(self.keys_asset)), "\n")
            scores = tf.matmul(query, table, transpose_b=True)
            top = tf.math.top_k(scores, k=tf.minimum(k, tf.shape(table)[0]))
            return {"scores": top.values, "indices": tf.cast(top.indices, tf.int64),
                    "keys": tf.gather(keys, top.indices)}
        self.serving_functions["serving_default"] = tf.function(search, input_signature=[spec])
        self.serving_functions["embed"] = tf.function(
            lambda inputs: {"embedding": embed(inputs)}, input_signature=[spec])


def _write_warmup(path, name, key, samples):
    model_pb2, predict_pb2, prediction_log_pb2 = _warmup._apis()
    with tf.io.TFRecordWriter(path) as writer:
        for sample in samples[:_warmup.MAX_RECORDS]:
            request = _warmup._request(predict_pb2, model_pb2, name, "serving_default",
                                       {key: np.array([sample.encode("utf-8")], dtype=object)})
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def _save(model, base_path, version, overwrite, files, module_args, warmup, warmup_key,
          model_card, fields):
    version, final = _version_dir(base_path, version, overwrite)
    scratch = tempfile.mkdtemp(prefix="tfdeploy-text-")
    try:
        paths = {}
        for name, (items, what) in files.items():
            if items is None:
                continue
            path = os.path.join(scratch, name)
            if isinstance(items, np.ndarray):
                items.astype("<f4").tofile(path)
            else:
                _lines(path, items, what)
            paths[name] = path
        module = _TextModule(model, **module_args(paths))
        try:
            with atomic_directory(final, overwrite=overwrite) as tmp:
                tf.saved_model.save(module, tmp, signatures=module.serving_functions)
                extra = os.path.join(tmp, "assets.extra")
                os.makedirs(extra, exist_ok=True)
                if warmup:
                    _write_warmup(os.path.join(extra, _warmup.WARMUP_FILE),
                                  os.path.basename(os.path.normpath(base_path)), warmup_key,
                                  list(warmup))
                fields["artifact"].update({"format": "saved_model", "version": version,
                                           "signatures": sorted(module.serving_functions),
                                           "warmup_requests": bool(warmup)})
                _card.write(os.path.join(extra, _card.CARD_FILE), model, fields, model_card)
        except (OSError, ValueError, TypeError) as exc:
            raise ExportError(f"Writing SavedModel to {final!r} failed: {exc}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


def text_saved_model(model, base_path, vocabulary, class_names=None, version=None,
                     overwrite=False, warmup_texts=None, model_card=None):
    """Export a token-id text model as a SavedModel whose ``serving_default`` takes raw strings.

    ``serving_default``: ``text`` (string, ``[batch]``) → ``probabilities``,
    ``class_index`` and ``class_label`` when ``class_names`` are given, else
    ``outputs``. The vocabulary is ``assets/vocabulary.txt``, read by a
    ``TextVectorization`` layer in the graph (same standardisation and split as
    `tfdeploy.models.text_vectorizer`); labels are ``assets/labels.txt``.
    Written atomically in TF Serving's ``base_path/VERSION/`` layout.

    Args:
        model: a Keras 2 model taking int token ids ``(batch, sequence_length)``.
        base_path: e.g. ``saved_models/sentiment``.
        vocabulary: tokens for ids 2, 3, ... (`tfdeploy.models.vocabulary`).
        class_names: one label per output class. Defaults to None.
        version: integer version; None picks the next free one.
        overwrite: replace an existing version. Defaults to False.
        warmup_texts: a few real texts for ``assets.extra/tf_serving_warmup_requests``.
        model_card: dict merged into ``assets.extra/model_card.json``.

    Returns:
        The version directory written.

    Raises:
        ExportError: the model does not take token ids, bad vocabulary/class
            names, an existing version, or a failed write.

    Example:
        >>> text_saved_model(model, "saved_models/sentiment", vocabulary(vectorizer),
        ...                  class_names=["negative", "neutral", "positive"])
    """
    model = check_model(model)
    _sequence_length(model)
    if class_names is not None and len(class_names) != int(model.outputs[0].shape[-1]):
        raise ExportError(f"class_names has {len(class_names)} entries but the model outputs "
                          f"{model.outputs[0].shape[-1]} classes; pass one name per class.")
    files = {VOCAB_FILE: (list(vocabulary), "vocabulary tokens"),
             LABELS_FILE: (class_names, "class_names")}
    fields = {"artifact": {"input": TEXT_INPUT, "vocabulary_size": len(vocabulary),
                           "class_names": list(class_names) if class_names else None}}
    return _save(model, base_path, version, overwrite, files,
                 lambda p: {"vocab_file": p[VOCAB_FILE], "labels_file": p.get(LABELS_FILE)},
                 warmup_texts, TEXT_INPUT, model_card, fields)


def retrieval_saved_model(query_model, base_path, index_embeddings, index_keys, vocabulary=None,
                          query_ids=None, k=10, version=None, overwrite=False, warmup=None,
                          model_card=None):
    """Export a query tower plus a candidate index; ``serving_default`` returns the top k.

    The query is raw text (``text``, tokenised in the graph with
    ``vocabulary``) or, for id towers, a string id (``query_id``, looked up in
    ``query_ids``; an unknown id is an INVALID_ARGUMENT error). Outputs:
    ``scores`` (cosine similarities, ``[batch, k]``), ``indices`` and ``keys``
    of the best candidates. The ``embed`` signature returns the query
    ``embedding``. The index is computed once by the caller and shipped as
    assets (``index_embeddings.f32``, ``index_keys.txt``).

    Args:
        query_model: Keras 2 tower: token ids (or int ids) → embedding.
        base_path: e.g. ``saved_models/answers``.
        index_embeddings: float array ``(num_candidates, dim)``.
        index_keys: one string key per candidate (answer text, item id ...).
        vocabulary: token list for text queries. Defaults to None.
        query_ids: id list for id queries (index i ↔ id i). Defaults to None.
        k: results per query. Defaults to 10.
        version: as in `text_saved_model`.
        overwrite: as in `text_saved_model`.
        model_card: as in `text_saved_model`.
        warmup: a few example queries (str) for the warmup file.

    Returns:
        The version directory written.

    Raises:
        ExportError: neither or both of ``vocabulary``/``query_ids``, shapes that
            do not match, bad keys, or a failed write.
    """
    query_model = check_model(query_model, "query_model")
    if (vocabulary is None) == (query_ids is None):
        raise ExportError("Pass exactly one of vocabulary= (text queries) or query_ids= "
                          "(id queries).")
    if vocabulary is not None:
        _sequence_length(query_model)
    emb = np.asarray(index_embeddings, np.float32)
    dim = int(query_model.outputs[0].shape[-1])
    if emb.ndim != 2 or emb.shape[1] != dim or emb.shape[0] != len(index_keys):
        raise ExportError(f"index_embeddings must be (len(index_keys)={len(index_keys)}, {dim}) "
                          f"to match the query embedding; received {emb.shape}.")
    if int(k) < 1:
        raise ExportError(f"k must be >= 1, received {k!r}.")
    files = {VOCAB_FILE: (list(vocabulary) if vocabulary is not None else None,
                          "vocabulary tokens"),
             QUERY_IDS_FILE: (list(query_ids) if query_ids is not None else None, "query_ids"),
             KEYS_FILE: (list(index_keys), "index_keys"), INDEX_FILE: (emb, "")}
    key = TEXT_INPUT if vocabulary is not None else "query_id"
    fields = {"artifact": {"input": key, "index_size": int(emb.shape[0]), "k": int(k),
                           "embedding_dim": dim}}
    return _save(query_model, base_path, version, overwrite, files,
                 lambda p: {"vocab_file": p.get(VOCAB_FILE),
                            "query_ids_file": p.get(QUERY_IDS_FILE),
                            "index": (p[INDEX_FILE], p[KEYS_FILE], dim, int(k))},
                 warmup, key, model_card, fields)


def text_tflite(model, path, vocabulary, quantization="float32", representative_data=None,
                class_names=None, model_card=None):
    """Write a builtin-ops ``.tflite`` of a token-id text model and its vocabulary beside it.

    Tokenisation stays outside the file (string ops are not TFLite builtins);
    ``<path minus .tflite>.vocab.txt`` holds the vocabulary and
    `tfdeploy.runtime.text.TextTFLiteRunner` applies it to raw strings.

    Args:
        model: Keras 2 model taking int token ids.
        path: the ``.tflite`` file.
        vocabulary: tokens for ids 2, 3, ...
        quantization: any `tfdeploy.export.tflite` quantization ("dynamic" and
            "int8" store the embedding tables as int8). Defaults to "float32".
        representative_data: token-id batches (a dataset of ``(ids, labels)``)
            for "int8" calibration.
        class_names: as in `tfdeploy.export.tflite`.
        model_card: as in `tfdeploy.export.tflite`.

    Returns:
        ``path``.
    """
    model = check_model(model)
    _sequence_length(model)
    tflite(model, path, quantization=quantization, representative_data=representative_data,
           class_names=class_names, model_card=model_card)
    write_vocabulary(vocabulary_path(path), vocabulary)
    return path


__all__ = ["text_saved_model", "retrieval_saved_model", "text_tflite", "write_vocabulary"]
