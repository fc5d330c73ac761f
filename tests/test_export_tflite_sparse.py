"""XNNPACK-policy pruning exported with TFLite's sparse weight format (sparse=True)."""

import numpy as np

import tfdeploy as td

L = td.keras.layers


def _mobilenet_like():
    """The shape XNNPACK sparse inference accepts: padded 3x3/2 stem, 1x1 convs, GAP."""
    inputs = td.keras.Input((32, 32, 3))
    x = L.ZeroPadding2D(1)(inputs)
    x = L.Conv2D(16, 3, strides=2, padding="valid", activation="relu", name="stem")(x)
    for i, width in enumerate((64, 128, 128)):
        x = L.Conv2D(width, 1, activation="relu", name=f"pw{i}")(x)
    x = L.GlobalAveragePooling2D(keepdims=True)(x)
    x = L.Conv2D(10, 1, name="head")(x)
    return td.keras.Model(inputs, L.Softmax()(L.Flatten()(x)))


def test_xnnpack_pruned_model_exports_sparse_and_predicts_the_same(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (48, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 48)
    pruned = td.compress.prune(_mobilenet_like(),
                               schedule=td.compress.ConstantSparsity(0.85, unit="step"),
                               epochs=1, steps_per_epoch=3, policy="xnnpack")
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=td.compress.callbacks(pruned))
    model = td.compress.strip(pruned)
    by_layer = td.compress.sparsity_by_layer(model)
    assert by_layer["stem"] == 0.0  # the policy leaves the 3x3 stem dense
    assert all(abs(by_layer[n] - 0.85) < 0.01 for n in ("pw0", "pw1", "pw2"))

    dense = td.export.tflite(model, str(tmp_path / "dense.tflite"))
    sparse = td.export.tflite(model, str(tmp_path / "sparse.tflite"), sparse=True)
    assert td.verify.path_bytes(sparse) < 0.5 * td.verify.path_bytes(dense)
    expected = model.predict(x[:8], verbose=0)
    for path in (dense, sparse):
        np.testing.assert_allclose(td.runtime.load(path).predict(x[:8]), expected, atol=1e-5)
