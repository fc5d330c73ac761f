"""The technique history: recorded by every wrapper, carried through strip, saved, carded."""

import json

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import CompressionError

C = td.compress

X = np.random.default_rng(0).uniform(0, 255, (64, 8, 8, 1)).astype(np.float32)
Y = np.arange(64) % 3


def _data():
    return td.tf.data.Dataset.from_tensor_slices((X, Y)).batch(16)


def _fit(model, batches=4):
    model.compile(td.keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(_data().take(batches), epochs=1, verbose=0, callbacks=C.callbacks(model))
    return model


@pytest.fixture(scope="module")
def base():
    td.keras.utils.set_random_seed(0)
    return _fit(td.models.build_cnn((8, 8, 1), num_classes=3, width=0.25))


@pytest.fixture(scope="module")
def compressed(base):
    """slim -> prune -> strip -> cluster -> strip -> low_rank -> QAT, one history."""
    model = C.slim(base, 0.5, layers=["conv3", "conv4"])
    model = C.strip(_fit(C.prune(model, 0.5, epochs=1, steps_per_epoch=_data())))
    model = C.strip(_fit(C.cluster(model, 8), batches=1))
    model = C.low_rank(model, 0.5, layers=["dense1"])
    return model, C.quantize(model, preserve=None)


def test_every_technique_is_recorded_and_carried_through_strip(compressed):
    model, qat = compressed
    assert [e["technique"] for e in C.history(model)] == ["slimmed", "pruned", "clustered",
                                                          "low_rank"]
    assert [e["technique"] for e in C.history(qat)][-1] == "quantized"
    entries = {e["technique"]: e for e in C.measured_history(model)}
    assert entries["pruned"]["params"]["target_sparsity"] == 0.5
    assert entries["slimmed"]["params"]["widths"]["conv3"][1] == \
        entries["slimmed"]["result"]["widths"]["conv3"]
    assert entries["clustered"]["params"]["n_clusters"] == 8
    assert all(n <= 8 for n in entries["clustered"]["result"]["unique_weights"].values()
               if n), entries["clustered"]["result"]
    rank = entries["low_rank"]["params"]["factorised"]["dense1"]["rank"]
    assert entries["low_rank"]["result"]["rank"] == {"dense1": rank}
    # low_rank replaced dense1: the pruning/clustering record says so instead of guessing
    assert "dense1" in entries["pruned"]["result"]["missing_layers"]


def test_model_card_lists_the_history_with_parameters_and_measured_results(compressed, tmp_path):
    model, qat = compressed
    path = td.export.saved_model(model, str(tmp_path / "m"))
    # the sparsity of what is served, read from the SavedModel's own variables
    served = td.verify.weight_summary(path)
    assert served["sparsity"] == pytest.approx(C.model_sparsity(model), abs=0.01)
    assert served["sparsity"] > 0.3
    assert served["dtypes"] == {"float32": served["params"]}
    card = td.export.read_model_card(path)
    steps = [s["step"] for s in card["compression"]]
    assert steps == ["slimmed", "pruned", "clustered", "low_rank", "measured"]
    pruned = card["compression"][1]
    assert pruned["params"]["target_sparsity"] == 0.5 and "conv2" in pruned["layers"]
    # measured from the exported model's weights, not copied from the request
    assert pruned["result"]["layer_sparsity"]["conv2"] == pytest.approx(
        float(np.mean(model.get_layer("conv2").get_weights()[0] == 0)))
    tfl = td.export.tflite(qat, str(tmp_path / "q.tflite"), model_card={})
    card = json.load(open(str(tmp_path / "q.card.json")))
    assert [s["step"] for s in card["compression"]][-2:] == ["quantized", "measured"]
    assert card["compression"][-2]["params"]["preserve"] is None
    assert tfl.endswith("q.tflite")


def test_distill_n_m_and_plan_record_too(base):
    d = C.distill(base, td.models.build_cnn((8, 8, 1), num_classes=3, width=0.125))
    entry = C.history(d.student)[-1]
    assert entry["technique"] == "distilled" and entry["params"]["teacher"] == base.name
    nm = C.strip(_fit(C.prune_n_m(base, 2, 4), batches=1))  # the mask is set at step 1
    assert C.measured_history(nm)[-1]["result"]["n_m_fraction"]["conv2"] == 1.0
    result = C.apply_plan(base, [C.Stage("fine_tune", epochs=0),
                                 C.Stage("prune", epochs=1, target_sparsity=0.5)], _data())
    assert [e["technique"] for e in C.history(result.model)] == ["pruned"]


def test_history_survives_save_and_load(compressed, tmp_path):
    model, _ = compressed
    for name in ("m.keras", "m.h5", "m_dir"):
        path = str(tmp_path / name)
        td.model_io.save_model(model, path)
        loaded = td.model_io.load_model(path)
        assert C.history(loaded) == C.history(model), name
        np.testing.assert_allclose(loaded.predict(X[:4], verbose=0),
                                   model.predict(X[:4], verbose=0), atol=1e-5)


def test_plan_order_is_validated_before_anything_trains(base):
    trained = []
    spy = td.keras.callbacks.LambdaCallback(on_train_begin=lambda logs: trained.append(1))
    bad = {
        r"Stage 3 \('fine_tune'\) comes after stage 2 \('quantize'\)":
            ["prune", "quantize", "fine_tune"],
        r"Stage 2 \('slim'\) comes after stage 1 \('quantize'\)": ["quantize", "slim"],
        r"Stage 3 \('cluster'\) comes after stage 2": ["fine_tune", "quantize", "cluster"],
        r"Stage 2 \('prune'\) has epochs=0": ["fine_tune", C.Stage("prune", epochs=0)],
    }
    for message, stages in bad.items():
        with pytest.raises(CompressionError, match=message + ".*Valid orders"):
            C.apply_plan(base, stages, _data(), callbacks=[spy])
    assert trained == []


def test_fractional_epochs_and_steps_are_refused(base):
    with pytest.raises(CompressionError, match=r"epochs must be a whole number.*2\.5"):
        C.prune(base, 0.5, epochs=2.5, steps_per_epoch=4)
    with pytest.raises(CompressionError, match=r"steps_per_epoch must be a whole number"):
        C.prune(base, 0.5, epochs=2, steps_per_epoch=3.5)
    with pytest.raises(CompressionError, match=r"epochs must be a whole number"):
        C.Stage("fine_tune", epochs=1.5)
    assert C.is_pruning_wrapped(C.prune(base, 0.5, epochs=2.0, steps_per_epoch=4))
