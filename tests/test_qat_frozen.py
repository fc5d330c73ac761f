"""QAT keeps a frozen base frozen, and FineTune unfreezes it inside the same fit.

tfmot's QuantizeWrapper lists the kernels it quantizes as trainable whatever the
layer's ``trainable`` says; `tfdeploy._tfmot.honour_trainable` fixes that.
"""

import numpy as np
import pytest

import tfdeploy as td

L = td.keras.layers


def _transfer_model():
    td.tf.random.set_seed(0)
    inp = td.keras.Input((16, 16, 3))
    h = inp
    for i in (1, 2):
        h = L.Conv2D(8, 3, name=f"c{i}")(h)
        h = L.BatchNormalization(name=f"bn{i}")(h)
        h = L.ReLU(6.0, name=f"r{i}")(h)
    base = td.keras.Model(inp, h, name="base")
    base.trainable = False
    inputs = td.keras.Input((16, 16, 3))
    x = L.GlobalAveragePooling2D()(base(inputs, training=False))
    return td.keras.Model(inputs, L.Dense(3, activation="softmax", name="head")(x))


def _values(model):
    return {w.name: w.numpy().copy() for w in model.weights}


def _data():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 6, (64, 16, 16, 3)).astype("float32"), rng.integers(0, 3, 64)


@pytest.fixture(scope="module")
def qat():
    model = td.compress.quantize(_transfer_model())
    model.compile(td.keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model


def test_frozen_base_stays_frozen_under_qat(qat):
    trainable = {w.name for w in qat.trainable_weights}
    assert trainable == {"head/kernel:0", "head/bias:0"}, trainable
    names = [w.name for w in qat.weights]
    assert len(names) == len(set(names))  # nothing listed twice, nothing lost
    assert {"c1/kernel:0", "c2/kernel:0", "c2/bias:0"} <= set(names)
    before = _values(qat)
    qat.fit(*_data(), epochs=1, batch_size=16, verbose=0)
    after = _values(qat)
    for name in ("c1/kernel:0", "c2/kernel:0", "bn2/moving_mean:0"):
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    assert not np.array_equal(before["head/kernel:0"], after["head/kernel:0"])


def test_fine_tune_unfreezes_quantized_layers_in_the_same_fit(qat, tmp_path):
    before = _values(qat)
    fine_tune = td.models.FineTune(at_epoch=1, unfreeze=3)  # quant_c2, bn2, quant_r2
    history = qat.fit(*_data(), epochs=2, batch_size=16, verbose=0, callbacks=[fine_tune])
    assert fine_tune.unfrozen == ["quant_c2", "quant_r2"]  # BN stays in inference mode
    params = history.history["fine_tune/trainable_params"]
    assert params[1] == params[0] + 8 * 3 * 3 * 8 + 8  # c2's kernel and bias joined the head
    after = _values(qat)
    assert not np.array_equal(before["c2/kernel:0"], after["c2/kernel:0"])
    for name in ("c1/kernel:0", "bn2/moving_mean:0", "bn2/moving_variance:0"):
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    # the partly frozen QAT model saves and loads with every weight in its place
    path = str(tmp_path / "qat.h5")
    qat.save(path)
    loaded = td.model_io.load_model(path)
    for layer in qat.layers:  # variable names differ after loading; compare layer by layer
        got = loaded.get_layer(layer.name).get_weights()
        assert len(got) == len(layer.get_weights()), layer.name
        for a, b in zip(got, layer.get_weights()):
            np.testing.assert_array_equal(a, b, err_msg=layer.name)


def test_unfrozen_base_batchnorm_stays_in_inference_mode_under_qat():
    """A base called with training=False keeps its BatchNormalization in inference mode
    under QAT once the base is trainable (a slimmed or unfrozen base): tfmot's clones drop
    the call argument, and QAT's fit then normalised by batch statistics."""
    model = _transfer_model()
    model.trainable = True  # e.g. a slimmed base fine-tuned whole
    x, y = _data()
    qat = td.compress.quantize(model, calibration_data=x)
    stats = lambda: {w.name: w.numpy().copy() for w in qat.weights  # noqa: E731
                     if "moving_" in w.name}
    before = stats()
    assert len(before) == 4
    qat.compile(td.keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    qat.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for name, value in stats().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    assert {w.name for w in qat.trainable_weights} >= {"c1/kernel:0", "c2/kernel:0",
                                                       "head/kernel:0"}
