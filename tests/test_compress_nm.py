"""N:M (2:4) structured sparsity: the pattern read back from stripped kernels and the .tflite."""

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.compress.graph import copy_model
from tfdeploy.errors import CompressionError

C = td.compress


def test_two_four_pattern_in_stripped_kernels_and_tflite(trained_model, train_ds, test_arrays,
                                                         tmp_path):
    before = [w.copy() for w in trained_model.get_weights()]
    sparse = C.prune_n_m(trained_model, 2, 4)
    sparse.compile(td.keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy",
                   ["accuracy"])
    sparse.fit(train_ds, epochs=1, verbose=0, callbacks=C.callbacks(sparse))
    model = C.strip(sparse)
    pattern = C.n_m_pattern(model, 2, 4)
    assert set(pattern) == {"conv2", "conv3", "conv4", "conv5", "conv6", "dense1",
                            "probabilities"}
    assert all(v == 1.0 for v in pattern.values()), pattern
    for name in pattern:
        assert C.sparsity_by_layer(model)[name] == pytest.approx(0.5, abs=0.01)
    # conv1 sees a 1-channel image: no group of 4 input channels exists.
    assert C.report(model).to_dict()["conv1"]["left_out"]["n_m"] == \
        "1 input channel(s) is not a multiple of m=4"
    x, y = test_arrays
    assert td.verify.accuracy(model, x, y) > 0.8
    for a, b in zip(before, trained_model.get_weights()):
        np.testing.assert_array_equal(a, b)  # the input model is untouched

    path = td.export.tflite(model, str(tmp_path / "nm.tflite"))
    checked = 0
    for tensor in td.verify.weight_tensors(path):
        values = tensor["values"]
        if values.ndim in (2, 4) and values.shape[-1] % 4 == 0 and values.size >= 64:
            assert C.n_m_fraction(values, 2, 4, layout="tflite") == 1.0, tensor["name"]
            checked += 1
    assert checked >= 6


def test_pattern_check_detects_violations():
    kernel = np.ones((3, 3, 8, 4), np.float32)
    assert C.n_m_fraction(kernel, 2, 4) == 0.0
    kernel[:, :, 0::2, :] = 0
    assert C.n_m_fraction(kernel, 2, 4) == 1.0
    kernel[0, 0, 0, 0] = 1.0
    assert 0.9 < C.n_m_fraction(kernel, 2, 4) < 1.0


def test_n_m_errors():
    model = td.models.build_cnn((8, 8, 1), num_classes=3, width=0.125)
    with pytest.raises(CompressionError, match="0 < n < m"):
        C.prune_n_m(model, 4, 4)
    with pytest.raises(CompressionError, match=r"conv1 \(1 input channel\(s\) is not a multiple"):
        C.prune_n_m(model, 2, 4, layers=["conv1"])
    pruned = C.prune_n_m(copy_model(model))
    with pytest.raises(CompressionError, match="already wrapped for pruning"):
        C.prune_n_m(pruned)
