"""Prune -> cluster -> cluster-and-sparsity-preserving QAT -> int8: every kernel keeps its zeros.

Regression test for two ways the zeros used to get lost in this chain:
- a sparse layer too small to cluster was left out, and the clustering fine-tune refilled it;
- tfmot shares one weight quantizer among all Conv2D layers and switches its sparsity
  preservation off for good at the first layer without zeros, so every later Conv2D lost its
  zeros during QAT.
"""

import numpy as np

import tfdeploy as td

C = td.compress


def _fit(model, data, lr=1e-4):
    model.compile(td.keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(data, epochs=1, verbose=0, callbacks=C.callbacks(model))


def test_zeros_survive_prune_cluster_qat_int8(trained_model, train_ds, tmp_path):
    data = train_ds.take(12)
    pruned = C.prune(trained_model, schedule=C.ConstantSparsity(0.8, unit="step"), epochs=1,
                     steps_per_epoch=12)
    _fit(pruned, data)
    pruned = C.strip(pruned)
    clustered = C.cluster(pruned, 16)
    assert "conv1" in clustered._tfdeploy_frozen_sparse  # 72 weights: too few to cluster
    _fit(clustered, data)
    clustered = C.strip(clustered)
    assert clustered.get_layer("conv1").trainable
    for name, sparsity in C.sparsity_by_layer(clustered).items():
        assert sparsity >= 0.79, (name, sparsity)
    qat = C.quantize(clustered)
    assert qat._tfdeploy_qat["preserve"] == "cluster_sparsity"
    _fit(qat, data)
    for name, sparsity in C.sparsity_by_layer(qat).items():
        assert sparsity >= 0.79, (name, sparsity)
    path = td.export.tflite(qat, str(tmp_path / "m.tflite"), "int8", representative_data=data)
    kernels = [t for t in td.verify.weight_tensors(path) if len(t["shape"]) >= 2]
    assert len(kernels) == 8
    for t in kernels:
        assert t["dtype"] == "int8"
        assert np.mean(t["values"] == 0) >= 0.79, t["name"]


def test_zero_free_first_conv_keeps_preservation_for_later_convs(trained_model, train_ds):
    """conv1 stays dense (not pruned): tfmot's shared quantizer used to stop preserving
    sparsity at that first zero-free Conv2D, for every Conv2D after it."""
    data = train_ds.take(12)
    later = ["conv2", "conv3", "conv4", "conv5", "conv6", "dense1", "probabilities"]
    pruned = C.prune(trained_model, schedule=C.ConstantSparsity(0.8, unit="step"), epochs=1,
                     steps_per_epoch=12, layers=later)
    _fit(pruned, data)
    clustered = C.cluster(C.strip(pruned), 16, layers=C.Select(exclude=["conv1"]))
    _fit(clustered, data)
    clustered = C.strip(clustered)
    assert not np.any(clustered.get_layer("conv1").kernel.numpy() == 0)  # no zero at all
    qat = C.quantize(clustered, preserve="cluster_sparsity")
    _fit(qat, data)
    by_layer = C.sparsity_by_layer(qat)
    for name in later:
        assert by_layer[name] >= 0.79, (name, by_layer[name])
