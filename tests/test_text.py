"""Text data, text models, their compression, export and serving (real files, real server)."""

import json
import os

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import tfdeploy as td
from tfdeploy import compress, export, models, verify
from tfdeploy.errors import ExportError, TextDataError
from tfdeploy.runtime.text import TextTFLiteRunner, TextTokenizer
from test_serving_support import rest_call

CLASSES = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return td.data.write_sentiment_corpus(str(tmp_path_factory.mktemp("sentiment")), n=400)


@pytest.fixture(scope="module")
def sentiment(corpus):
    train = td.data.text_dataset(os.path.join(corpus, "train"), shuffle=True)
    test = td.data.text_dataset(os.path.join(corpus, "test.jsonl"))
    vectorizer = models.text_vectorizer(train.texts, 1000, 12)
    return train, test, vectorizer, models.vectorize(train, vectorizer)


@pytest.fixture(scope="module")
def cnn(sentiment):
    _, _, vectorizer, train_ids = sentiment
    td.tf.random.set_seed(0)
    model = models.build_text_cnn(models.vocab_size(vectorizer), 12, 3, embed_dim=16, filters=16)
    model.compile(td.keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(train_ids, epochs=3, verbose=0)
    return model


# -- data ------------------------------------------------------------------------------------
def test_directory_jsonl_and_csv_read_the_same_corpus(corpus):
    texts, labels, names = td.data.read_texts(os.path.join(corpus, "train"))
    assert names == CLASSES and len(texts) == len(labels) == 300
    a = td.data.read_texts(os.path.join(corpus, "test.jsonl"))
    b = td.data.read_texts(os.path.join(corpus, "test.csv"))
    assert a[0] == b[0] and list(a[1]) == list(b[1]) and a[2] == b[2] == CLASSES
    assert td.data.sentiment_corpus(50, seed=3) == td.data.sentiment_corpus(50, seed=3)
    ds = td.data.text_dataset(os.path.join(corpus, "test.csv"), batch_size=7)
    x, y = next(iter(ds))
    assert x.dtype == tf.string and x.shape == (7,) and ds.num_examples == 100


@pytest.mark.parametrize("name, content, match", [
    ("a.csv", "body,label\nhello,pos\n", r"no column\(s\) \['text'\]; its header is \['body'"),
    ("a.jsonl", '{"text": "hi"}\n', r"line 1 has no key\(s\) \['label'\]"),
    ("a.jsonl", '{"text": "hi", "label": "x"}\nnot json\n', "line 2 is not valid JSON"),
    ("a.csv", "text,label\n", "holds no records"),
    ("a.jsonl", "", "holds no records"),
    ("a.csv", b"text,label\ncaf\xe9,pos\n", r"not valid UTF-8 \(byte 0xe9 .* line 2\)"),
    ("a.csv", "text,label\n  ,pos\n", "line/file 2: the text is empty"),
    ("a.txt", "hello", "unknown extension '.txt'"),
])
def test_bad_text_files_raise_clear_errors(tmp_path, name, content, match):
    path = tmp_path / name
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(TextDataError, match=match):
        td.data.text_dataset(str(path))


def test_bad_text_directories(tmp_path):
    with pytest.raises(TextDataError, match="does not exist"):
        td.data.read_texts(str(tmp_path / "missing"))
    with pytest.raises(TextDataError, match="no class sub-folders"):
        td.data.read_texts(str(tmp_path))
    (tmp_path / "pos").mkdir()
    (tmp_path / "neg").mkdir()
    (tmp_path / "pos" / "1.txt").write_text("good")
    with pytest.raises(TextDataError, match=r"\['neg'\] .* contain no .txt files"):
        td.data.read_texts(str(tmp_path))


# -- tokenisation outside the graph ------------------------------------------------------------
def test_python_tokenizer_matches_text_vectorization(sentiment):
    train, _, vectorizer, _ = sentiment
    odd = ["Ünïcode STRASSE Straße, acme's (beats) a-b", "x\ty\u00a0z  ACME!!", "", "   ",
           "one two three four five six seven eight nine ten eleven twelve thirteen"]
    texts = train.texts[:50] + odd
    tokenizer = TextTokenizer(models.vocabulary(vectorizer), 12)
    np.testing.assert_array_equal(tokenizer(texts), vectorizer(tf.constant(texts)).numpy())


@pytest.mark.parametrize("bad, match", [(123, "Expected a list of strings"),
                                        ([], "empty list"), ([b"\xff\xfe"], "not valid UTF-8"),
                                        (["ok", 5], "Text 1 is int")])
def test_bad_texts_for_the_runner(bad, match):
    with pytest.raises(TextDataError, match=match):
        TextTokenizer(["a"], 4)(bad)


# -- compression -----------------------------------------------------------------------------
def test_attention_projections_ffn_and_embeddings_are_pruned(sentiment):
    _, _, vectorizer, train_ids = sentiment
    model = models.build_text_transformer(models.vocab_size(vectorizer), 12, 3, embed_dim=16,
                                          ff_dim=32)
    wrapped = compress.prune(model, 0.5, schedule="constant", epochs=1,
                             steps_per_epoch=train_ids)
    wrapped.compile(td.keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    wrapped.fit(train_ids, epochs=1, verbose=0, callbacks=compress.callbacks(wrapped))
    pruned = compress.strip(wrapped)
    attention = pruned.get_layer("block0_attention")
    for proj in ("_query_dense", "_key_dense", "_value_dense", "_output_dense"):
        kernel = getattr(attention, proj).kernel.numpy()
        assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.02), proj
    for name in ("block0_ffn1", "block0_ffn2"):
        assert np.mean(pruned.get_layer(name).kernel.numpy() == 0) == pytest.approx(0.5, abs=0.02)
    table = pruned.get_layer("token_embedding").embeddings.numpy()
    assert np.mean(table == 0) == pytest.approx(0.5, abs=0.02)
    # what tfmot cannot prune or quantize is named, not skipped silently
    text = str(compress.report(wrapped))
    assert "position_embedding" in text and "no pruning support for PositionEmbedding" in text
    _, unsupported = compress.quantizable_layers(pruned)
    assert {"block0_attention", "token_embedding"} <= set(unsupported)


@pytest.mark.parametrize("quantization", ["dynamic", "int8"])
def test_embedding_table_is_int8_in_tflite_and_runner_takes_raw_text(
        tmp_path, sentiment, cnn, quantization):
    _, test, vectorizer, train_ids = sentiment
    path = export.text_tflite(cnn, str(tmp_path / "s.tflite"), models.vocabulary(vectorizer),
                              quantization=quantization, representative_data=train_ids)
    tables = [t for t in verify.weight_tensors(path) if "token_embedding" in t["name"]]
    assert [t["dtype"] for t in tables] == ["int8"]
    assert tables[0]["values"].shape == cnn.get_layer("token_embedding").embeddings.shape
    runner = TextTFLiteRunner(path)   # reads s.vocab.txt beside the file
    expected = cnn(vectorizer(tf.constant(test.texts))).numpy().argmax(-1)
    assert np.mean(runner.predict(test.texts).argmax(-1) == expected) >= 0.95


def test_text_export_refuses_image_models_and_bad_vocabulary(tmp_path, cnn):
    image_model = models.build_cnn((32, 32, 1), num_classes=3, width=0.125)
    with pytest.raises(ExportError, match="token-id input"):
        export.text_saved_model(image_model, str(tmp_path / "x"), ["a"])
    with pytest.raises(ExportError, match="single-line"):
        export.text_saved_model(cnn, str(tmp_path / "y"), ["a", "b\nc"])
    with pytest.raises(ExportError, match="class_names has 2 entries"):
        export.text_saved_model(cnn, str(tmp_path / "z"), ["a"], class_names=["a", "b"])
    assert not os.path.exists(tmp_path / "y" / "1")


# -- serving raw text ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served_sentiment(tmp_path_factory, sentiment, cnn):
    from tfdeploy.serving import ModelConfig, create_server

    _, test, vectorizer, _ = sentiment
    root = tmp_path_factory.mktemp("text_serving")
    version = export.text_saved_model(cnn, str(root / "sentiment"), models.vocabulary(vectorizer),
                                      class_names=CLASSES, warmup_texts=test.texts[:2])
    server = create_server(configs=[ModelConfig("sentiment", str(root / "sentiment"))], port=0,
                           rest_api_port=0, file_system_poll_wait_seconds=0)
    server.start()
    yield server, version
    server.stop()


def test_saved_model_has_vocabulary_asset_and_string_signature(served_sentiment):
    _, version = served_sentiment
    assert sorted(os.listdir(os.path.join(version, "assets"))) == ["labels.txt", "vocabulary.txt"]
    sig = tf.saved_model.load(version).signatures["serving_default"]
    assert sig.structured_input_signature[1]["text"].dtype == tf.string


def test_served_model_answers_raw_text_over_rest_and_grpc(served_sentiment, sentiment, cnn):
    server, _ = served_sentiment
    _, test, vectorizer, _ = sentiment
    texts = test.texts[:5] + ["ACME shares plunge!!", ""]
    expected = cnn(vectorizer(tf.constant(texts))).numpy()
    status, body = rest_call(server.rest_port, "POST", "/v1/models/sentiment:predict",
                             {"instances": texts})
    assert status == 200
    np.testing.assert_allclose([p["probabilities"] for p in body["predictions"]], expected,
                               atol=1e-5)
    assert [p["class_label"] for p in body["predictions"]] == \
        [CLASSES[i] for i in expected.argmax(-1)]
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "sentiment"
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(np.array(texts, dtype=object)))
        response = stub.Predict(request, timeout=30)
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["probabilities"]), expected,
                                   atol=1e-5)
        assert [b.decode() for b in tf.make_ndarray(response.outputs["class_label"])] == \
            [CLASSES[i] for i in expected.argmax(-1)]
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(np.array([1.5], np.float32)))
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("body, match", [
    ({"instances": [1.5]}, "not of expected type: string"),
    ({"instances": []}, "No instances"),
    ({"instances": [["a", "b"]]}, ""),
    ({"inputs": {"txt": ["a"]}}, "Missing but required"),
])
def test_bad_rest_text_requests_are_4xx(served_sentiment, body, match):
    server, _ = served_sentiment
    status, answer = rest_call(server.rest_port, "POST", "/v1/models/sentiment:predict", body)
    assert 400 <= status < 500, answer
    assert match in json.dumps(answer)


def test_retrieval_export_serves_top_k_and_refuses_unknown_ids(tmp_path, sentiment):
    from tfdeploy.serving.servable import Servable

    _, _, vectorizer, _ = sentiment
    tower = models.build_id_encoder(3, 8, 8)
    items = np.eye(8, dtype=np.float32)[:4]
    version = export.retrieval_saved_model(tower, str(tmp_path / "rec"), items,
                                           ["i0", "i1", "i2", "i3"], query_ids=["u0", "u1", "u2"],
                                           k=2)
    assert "index_embeddings.f32" in os.listdir(os.path.join(version, "assets"))
    servable = Servable("rec", 1, version)
    _, out = servable.run("", {"query_id": np.array([b"u1"], object)})
    user = tower(np.array([1], np.int32)).numpy()
    best = np.argsort(-(user @ items.T)[0])[:2]
    assert [k.decode() for k in out["keys"][0]] == [f"i{i}" for i in best]
    from tfdeploy.serving.status import ServingError

    with pytest.raises(ServingError, match="Unknown query id"):
        servable.run("", {"query_id": np.array([b"nobody"], object)})
    with pytest.raises(ExportError, match="exactly one of vocabulary"):
        export.retrieval_saved_model(tower, str(tmp_path / "bad"), items, ["a"] * 4)


def test_recall_at_k_against_random():
    rng = np.random.default_rng(0)
    cands = rng.normal(size=(50, 8))
    cands /= np.linalg.norm(cands, axis=1, keepdims=True)
    assert verify.recall_at_k(cands[:20] + 0.01, cands, np.arange(20), 1) == 1.0
    assert verify.random_recall(50, 5) == 0.1
