"""Compression: wrappers that return new models, the callbacks they need, and strip.

    model = prune(model, 0.8, epochs=3, steps_per_epoch=train_ds)
    model.compile(...); model.fit(train_ds, epochs=3, callbacks=callbacks(model))
    model = strip(model)
    model = quantize(model)          # pruning-preserving QAT when the model is sparse
"""

from tfdeploy.compress.callbacks import PruningStep, SparsityMonitor, callbacks
from tfdeploy.compress.prune import is_pruning_wrapped, prune
from tfdeploy.compress.qat import is_quantization_aware, quantizable_layers, quantize
from tfdeploy.compress.schedules import ConstantSparsity, PolynomialDecay
from tfdeploy.compress.sparsity import model_sparsity, sparsity_by_layer
from tfdeploy.compress.strip import strip

__all__ = ["prune", "quantize", "strip", "callbacks", "PruningStep", "SparsityMonitor",
           "ConstantSparsity", "PolynomialDecay", "model_sparsity", "sparsity_by_layer",
           "is_pruning_wrapped", "is_quantization_aware", "quantizable_layers"]
