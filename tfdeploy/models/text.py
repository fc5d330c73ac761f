"""Text models (Keras 2): a TextVectorization front end, a 1-D CNN, a BiGRU and a Transformer.

The front end and the network are kept apart on purpose. `text_vectorizer`
learns a vocabulary (``TextVectorization.adapt``); the networks take the
integer token ids it produces. That lets every compression wrapper (prune,
QAT, distill, strip) work on a plain functional model of ints, lets TFLite
run with builtin ops only (tokenise outside, `tfdeploy.runtime.text` does it
from the vocabulary file shipped beside the ``.tflite``), and lets the
SavedModel export put tokenisation back inside the graph
(`tfdeploy.export.text_saved_model`, the vocabulary saved as an asset).

    vectorizer = text_vectorizer(train.texts, max_tokens=5000, sequence_length=32)
    model = build_text_transformer(vocab_size(vectorizer), 32, num_classes=3)
    model.fit(vectorize(train, vectorizer), ...)
"""

from tfdeploy._keras import keras, tf
from tfdeploy.errors import ModelTypeError

STANDARDIZE = "lower_and_strip_punctuation"
SPLIT = "whitespace"
PAD, OOV = "", "[UNK]"


def text_vectorizer(texts, max_tokens=5000, sequence_length=32):
    """Return a ``TextVectorization`` layer adapted to ``texts`` (ids, padded/truncated).

    Standardisation lower-cases ASCII letters and strips punctuation, splitting
    is on whitespace; id 0 is padding and 1 the out-of-vocabulary token.

    Args:
        texts: a list of str, a numpy array of strings, or a dataset of
            ``(texts, labels)`` / texts.
        max_tokens: vocabulary size including padding and OOV. Defaults to 5000.
        sequence_length: ids per text (longer texts are cut). Defaults to 32.

    Returns:
        The adapted ``keras.layers.TextVectorization``.
    """
    if int(max_tokens) < 3 or int(sequence_length) < 1:
        raise ModelTypeError(f"max_tokens must be >= 3 and sequence_length >= 1, received "
                             f"{max_tokens!r} and {sequence_length!r}.")
    layer = keras.layers.TextVectorization(
        max_tokens=int(max_tokens), standardize=STANDARDIZE, split=SPLIT,
        output_mode="int", output_sequence_length=int(sequence_length))
    if isinstance(texts, tf.data.Dataset):
        texts = texts.map(lambda *item: item[0])
    else:
        texts = tf.constant(list(texts), tf.string)
    layer.adapt(texts)
    return layer


def vocabulary(vectorizer):
    """The learned tokens in id order, without the padding and OOV entries (ids 0 and 1)."""
    vocab = list(vectorizer.get_vocabulary())
    return vocab[2:] if vocab[:2] == [PAD, OOV] else vocab


def vocab_size(vectorizer):
    """Number of ids the vectorizer produces (vocabulary + padding + OOV)."""
    return int(vectorizer.vocabulary_size())


def sequence_length(vectorizer):
    return int(vectorizer.get_config()["output_sequence_length"])


def vectorize(dataset, vectorizer):
    """Map a ``(texts, labels)`` dataset to ``(token ids, labels)`` (keeps its attributes)."""
    out = dataset.map(lambda x, y: (vectorizer(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    for attr in ("class_names", "num_examples", "texts", "labels"):
        if hasattr(dataset, attr):
            setattr(out, attr, getattr(dataset, attr))
    return out


@keras.utils.register_keras_serializable(package="tfdeploy")
class PositionEmbedding(keras.layers.Layer):
    """Add a learned embedding of each position to a ``(batch, length, dim)`` sequence."""

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(int(input_shape[-2]), int(input_shape[-1])),
            initializer=keras.initializers.RandomNormal(stddev=0.02))
        super().build(input_shape)

    def call(self, inputs):
        return inputs + tf.cast(self.embeddings, inputs.dtype)[None]


def _ids_input(sequence_length, name="token_ids"):
    return keras.Input((int(sequence_length),), dtype="int32", name=name)


def _head(x, num_classes, dropout, name):
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return keras.layers.Dense(int(num_classes), activation="softmax", name=f"{name}_classifier")(x)


def build_text_cnn(vocab_size, sequence_length, num_classes, embed_dim=32, filters=64,
                   kernel_size=3, dropout=0.2, name="text_cnn"):
    """A small 1-D CNN classifier over token ids: Embedding, Conv1D, global max pool, Dense.

    Args:
        vocab_size: ids the vectorizer produces (see `vocab_size`).
        sequence_length: ids per text.
        num_classes: classes (softmax output).
        embed_dim: embedding width. Defaults to 32.
        filters: Conv1D filters. Defaults to 64.
        kernel_size: Conv1D window. Defaults to 3.
        dropout: dropout before the classifier. Defaults to 0.2.
        name: model name. Defaults to "text_cnn".

    Returns:
        An uncompiled functional ``keras.Model``.
    """
    ids = _ids_input(sequence_length)
    x = keras.layers.Embedding(int(vocab_size), int(embed_dim), name="token_embedding")(ids)
    x = keras.layers.Conv1D(int(filters), int(kernel_size), padding="same", activation="relu",
                            name="conv")(x)
    x = keras.layers.GlobalMaxPooling1D(name="pool")(x)
    return keras.Model(ids, _head(x, num_classes, dropout, "head"), name=name)


def build_text_bigru(vocab_size, sequence_length, num_classes, embed_dim=32, units=32,
                     dropout=0.2, name="text_bigru"):
    """A small bidirectional-GRU classifier over token ids (``unroll=True`` for TFLite)."""
    ids = _ids_input(sequence_length)
    x = keras.layers.Embedding(int(vocab_size), int(embed_dim), name="token_embedding")(ids)
    x = keras.layers.Bidirectional(keras.layers.GRU(int(units), unroll=True), name="bigru")(x)
    return keras.Model(ids, _head(x, num_classes, dropout, "head"), name=name)


def _encoder_block(x, index, num_heads, ff_dim, dropout):
    dim = int(x.shape[-1])
    prefix = f"block{index}"
    attn = keras.layers.MultiHeadAttention(int(num_heads), dim // int(num_heads),
                                           name=f"{prefix}_attention")(x, x)
    if dropout:
        attn = keras.layers.Dropout(dropout, name=f"{prefix}_attention_dropout")(attn)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_norm1")(
        keras.layers.Add(name=f"{prefix}_residual1")([x, attn]))
    ff = keras.layers.Dense(int(ff_dim), activation="relu", name=f"{prefix}_ffn1")(x)
    ff = keras.layers.Dense(dim, name=f"{prefix}_ffn2")(ff)
    if dropout:
        ff = keras.layers.Dropout(dropout, name=f"{prefix}_ffn_dropout")(ff)
    return keras.layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_norm2")(
        keras.layers.Add(name=f"{prefix}_residual2")([x, ff]))


def transformer_body(ids, vocab_size, embed_dim=32, num_heads=2, ff_dim=64, num_blocks=1,
                     dropout=0.1):
    """Token + position embeddings and ``num_blocks`` encoder blocks, mean-pooled."""
    x = keras.layers.Embedding(int(vocab_size), int(embed_dim), name="token_embedding")(ids)
    x = PositionEmbedding(name="position_embedding")(x)
    for i in range(int(num_blocks)):
        x = _encoder_block(x, i, num_heads, ff_dim, dropout)
    return keras.layers.GlobalAveragePooling1D(name="pool")(x)


def build_text_transformer(vocab_size, sequence_length, num_classes, embed_dim=32, num_heads=2,
                           ff_dim=64, num_blocks=1, dropout=0.1, name="text_transformer"):
    """A small Transformer encoder classifier built from ``MultiHeadAttention`` blocks.

    Token + learned position embeddings, ``num_blocks`` post-norm encoder
    blocks (self-attention, residual, LayerNorm, Dense-ReLU-Dense feed-forward,
    residual, LayerNorm), mean pooling and a softmax classifier: the seed's
    "foundation model" in miniature. Layer names are stable
    (``block0_attention``, ``block0_ffn1`` ...) so selections can name them.

    Args:
        vocab_size: ids the vectorizer produces.
        sequence_length: ids per text.
        num_classes: classes.
        embed_dim: model width (divisible by ``num_heads``). Defaults to 32.
        num_heads: attention heads. Defaults to 2.
        ff_dim: feed-forward width. Defaults to 64.
        num_blocks: encoder blocks. Defaults to 1.
        dropout: dropout rate. Defaults to 0.1.
        name: model name. Defaults to "text_transformer".

    Returns:
        An uncompiled functional ``keras.Model``.
    """
    if int(embed_dim) % int(num_heads):
        raise ModelTypeError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}.")
    ids = _ids_input(sequence_length)
    x = transformer_body(ids, vocab_size, embed_dim, num_heads, ff_dim, num_blocks, dropout)
    return keras.Model(ids, _head(x, num_classes, dropout, "head"), name=name)


def build_text_encoder(vocab_size, sequence_length, output_dim=32, kind="cnn", embed_dim=32,
                       name="text_encoder", input_name="token_ids", **kwargs):
    """A text tower for retrieval: ids → unit-length ``output_dim`` embedding.

    Args:
        vocab_size: ids the vectorizer produces.
        sequence_length: ids per text.
        output_dim: embedding size. Defaults to 32.
        kind: "cnn" (Conv1D + max pool) or "transformer" (MultiHeadAttention
            blocks; ``num_heads``/``ff_dim``/``num_blocks`` go in ``kwargs``).
            Defaults to "cnn".
        embed_dim: token embedding width. Defaults to 32.
        name: model name. input_name: input name.

    Returns:
        A functional ``keras.Model`` whose outputs have L2 norm 1.
    """
    ids = _ids_input(sequence_length, input_name)
    if kind == "transformer":
        x = transformer_body(ids, vocab_size, embed_dim, dropout=0.0, **kwargs)
    elif kind == "cnn":
        x = keras.layers.Embedding(int(vocab_size), int(embed_dim), name="token_embedding")(ids)
        x = keras.layers.Conv1D(kwargs.get("filters", 64), 3, padding="same", activation="relu",
                                name="conv")(x)
        x = keras.layers.GlobalMaxPooling1D(name="pool")(x)
    else:
        raise ModelTypeError(f"Unrecognized kind={kind!r}. Supported kinds are: "
                             "['cnn', 'transformer'].")
    x = keras.layers.Dense(int(output_dim), name="projection")(x)
    return keras.Model(ids, keras.layers.UnitNormalization(name="normalize")(x), name=name)


def build_id_encoder(num_ids, output_dim=32, embed_dim=32, name="id_encoder",
                     input_name="user_index"):
    """An id tower for retrieval (e.g. users): Embedding table → Dense → unit length."""
    idx = keras.Input((), dtype="int32", name=input_name)
    x = keras.layers.Embedding(int(num_ids), int(embed_dim), name="id_embedding")(idx)
    x = keras.layers.Dense(int(output_dim), name="projection")(x)
    return keras.Model(idx, keras.layers.UnitNormalization(name="normalize")(x), name=name)


def duplicate_mask(inputs):
    """``(batch, batch)`` bool: entry ``(i, j)`` is True when ``j != i`` and input j equals input i.

    ``inputs`` is one tensor (ids, token-id rows, features) or a tuple/dict of them;
    rows are equal when every component is.
    """
    parts = tf.nest.flatten(inputs)
    same = None
    for part in parts:
        flat = tf.reshape(part, [tf.shape(part)[0], -1])
        eq = tf.reduce_all(tf.equal(flat[:, None, :], flat[None, :, :]), axis=-1)
        same = eq if same is None else tf.logical_and(same, eq)
    eye = tf.eye(tf.shape(same)[0], dtype=tf.bool)
    return tf.logical_and(same, tf.logical_not(eye))


def _mask_duplicates(logits, inputs):
    return tf.where(duplicate_mask(inputs), tf.cast(-1e9, logits.dtype), logits)


class RetrievalTrainer(keras.Model):
    """Train a query tower and a candidate tower with an in-batch softmax.

    For a batch of matching ``(query, candidate)`` pairs the logits are the
    scaled cosine similarities of every query with every candidate of the
    batch; the loss is cross-entropy with the diagonal as the target (both
    directions when ``symmetric``). The towers are plain functional models:
    compress and export them on their own afterwards. Pass the same model
    twice for a shared (Siamese) encoder.

    Args:
        query_tower: model mapping a query batch to unit embeddings.
        candidate_tower: model mapping a candidate batch to unit embeddings.
        temperature: softmax temperature. Defaults to 0.05.
        symmetric: also train candidate → query. Defaults to True.
    """

    def __init__(self, query_tower, candidate_tower, temperature=0.05, symmetric=True, **kw):
        super().__init__(**kw)
        self.query_tower, self.candidate_tower = query_tower, candidate_tower
        self.temperature, self.symmetric = float(temperature), bool(symmetric)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def call(self, inputs, training=False):
        return self.query_tower(inputs[0], training=training)

    def _loss(self, data, training):
        queries, candidates = data[0], data[1]
        q = self.query_tower(queries, training=training)
        c = self.candidate_tower(candidates, training=training)
        logits = tf.matmul(q, c, transpose_b=True) / self.temperature
        labels = tf.range(tf.shape(logits)[0])
        # a candidate equal to the row's own (two questions of one answer, one item bought
        # by two users in the batch) is not a negative: leave it out of the softmax
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels, _mask_duplicates(logits, candidates)))
        if self.symmetric:
            loss = 0.5 * (loss + tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels, _mask_duplicates(tf.transpose(logits), queries))))
        return loss

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss = self._loss(data, True)
            extra = self.query_tower.losses + (
                [] if self.candidate_tower is self.query_tower else self.candidate_tower.losses)
            if extra:
                loss = loss + tf.add_n(extra)
        variables = self.query_tower.trainable_variables
        if self.candidate_tower is not self.query_tower:
            variables = variables + self.candidate_tower.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        self.loss_tracker.update_state(self._loss(data, False))
        return {"loss": self.loss_tracker.result()}
