"""Low-rank factorisation: chosen rank, reconstruction error read back from the new weights."""

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import CompressionError

C = td.compress
L = td.keras.layers


def _model(rank=4, seed=0):
    rng = np.random.RandomState(seed)
    inputs = td.keras.Input((6, 6, 32))
    x = L.Conv2D(48, 1, name="pw")(inputs)
    x = L.Conv2D(8, 3, name="c3")(x)
    x = L.Flatten()(x)
    x = L.Dense(64, activation="relu", name="fc")(x)
    model = td.keras.Model(inputs, L.Dense(5, name="out")(x))
    for name, (n_in, n_out) in {"pw": (32, 48), "fc": (128, 64)}.items():
        layer = model.get_layer(name)
        low = rng.randn(n_in, rank) @ rng.randn(rank, n_out)
        kernel = (low + 0.01 * rng.randn(n_in, n_out)).astype("float32")
        layer.set_weights([kernel.reshape(layer.kernel.shape), layer.get_weights()[1]])
    return model


def test_rank_and_reconstruction_error():
    model = _model(rank=4)
    small = C.low_rank(model, energy=0.99)
    info = small._tfdeploy_low_rank
    assert set(info) == {"pw", "fc"}
    for name in ("pw", "fc"):
        assert info[name]["rank"] == 4
        original = model.get_layer(name).kernel.numpy().reshape(-1, info[name]["full_rank"]
                                                                if name == "fc" else 48)
        a = small.get_layer(f"{name}_lr_a").kernel.numpy()
        b = small.get_layer(f"{name}_lr_b").kernel.numpy()
        product = a.reshape(-1, 4) @ b.reshape(4, -1)
        error = np.linalg.norm(original - product) / np.linalg.norm(original)
        assert error == pytest.approx(info[name]["rel_error"], rel=1e-3)
        # Eckart-Young: the error of the best rank-r approximation is the dropped energy.
        assert error == pytest.approx(np.sqrt(1.0 - info[name]["energy"]), rel=1e-2)
        assert error < 0.02
    assert small.count_params() < model.count_params() - 5000
    assert not any(layer.name.endswith("_lr_a") for layer in model.layers)  # input untouched
    x = np.random.RandomState(1).randn(3, 6, 6, 32).astype("float32")
    ref = model.predict(x, verbose=0)
    np.testing.assert_allclose(small.predict(x, verbose=0), ref,
                               atol=0.05 * np.abs(ref).max())
    rows = C.report(small).to_dict()
    assert rows["fc_lr_a"]["low_rank"] and "not Conv2D (3, 3)" in rows["c3"]["left_out"]["low_rank"]


def test_lower_energy_gives_lower_rank_and_fine_tunes():
    model = _model(rank=8)
    ranks = [C.low_rank(model, e, layers=["fc"])._tfdeploy_low_rank["fc"]["rank"]
             for e in (0.5, 0.9, 0.999)]
    assert ranks[0] < ranks[1] <= ranks[2] <= 8
    small = C.low_rank(model, 0.9, layers=["fc"])
    small.compile("adam", "mse")
    x = np.random.RandomState(2).randn(16, 6, 6, 32).astype("float32")
    before = small.get_layer("fc_lr_a").kernel.numpy().copy()
    small.fit(x, model.predict(x, verbose=0), epochs=1, verbose=0)
    assert not np.allclose(before, small.get_layer("fc_lr_a").kernel.numpy())


def test_low_rank_errors():
    model = _model()
    for bad in (0.0, 1.2, -1):
        with pytest.raises(CompressionError, match=r"energy must be a fraction in \(0, 1\]"):
            C.low_rank(model, bad)
    with pytest.raises(CompressionError, match=r"c3 \(low-rank handles Dense and 1x1 Conv2D"):
        C.low_rank(model, 0.9, layers=["c3"])
    with pytest.raises(CompressionError, match="gets smaller"):
        C.low_rank(model, 1.0, layers=["out"])
