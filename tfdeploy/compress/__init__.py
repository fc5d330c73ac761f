"""Compression: wrappers that return new models, the callbacks they need, and strip.

    model = prune(model, 0.8, epochs=3, steps_per_epoch=train_ds)
    model.compile(...); model.fit(train_ds, epochs=3, callbacks=callbacks(model))
    model = strip(model)
    model = quantize(model)          # pruning-preserving QAT when the model is sparse

Also: `prune_n_m` (2:4), `slim` (remove channels for real speed), `cluster`,
`distill`, `fold_input_preprocessing` (input rescaling into the first conv),
`low_rank`, `optimizer` (fine-tuning rates and schedules),
`with_policy` (mixed precision), `sensitivity` (per-layer int8 loss measured on
the exported file in LiteRT: it lives in `tfdeploy.export`, which builds files, and is
reachable here on first use), `apply_plan` (ordered stages, one history)
`report` (what happened to each layer, and why layers were left out), and the
technique `history` every wrapper records (`measured_history` adds what each
technique left in the weights; `tfdeploy.model_io.save_model`/`load_model` keep it
on disk).
"""

from tfdeploy._deprecated import moved
from tfdeploy.compress.calibrate import calibrate_ranges, recalibrate_batchnorm
from tfdeploy.compress.callbacks import (GlobalBatchLogs, PruningStep, SparsityMonitor,
                                         TraceOnce, callbacks)
from tfdeploy.compress.cluster import cluster, unique_weights
from tfdeploy.compress import distribute
from tfdeploy.compress.distill import Distiller, distill
from tfdeploy.compress.fold import fold_input_preprocessing
from tfdeploy.compress.graph import flatten, is_nested
from tfdeploy.compress.history import history
from tfdeploy.compress.lowrank import low_rank
from tfdeploy.compress.nm import n_m_fraction, n_m_pattern, prune_n_m
from tfdeploy.compress.optim import WarmupCosine, fine_tune_rate, optimizer
from tfdeploy.compress.plan import PlanResult, Stage, apply_plan, check_plan, measure
from tfdeploy.compress.precision import compute_dtypes, to_float32, with_policy
from tfdeploy.compress.prune import prune
from tfdeploy.compress.qat import quantizable_layers, quantize
from tfdeploy.compress.report import Report, measured_history, report
from tfdeploy.compress.schedules import ConstantSparsity, PolynomialDecay
from tfdeploy.compress.selection import Select
from tfdeploy.compress.slim import channel_widths, slim
from tfdeploy.compress.sparsity import model_sparsity, sparsity_by_layer
from tfdeploy.compress.strip import strip
from tfdeploy.compress.wrappers import (is_clustering_wrapped, is_pruning_wrapped,
                                        is_quantization_aware)

__all__ = ["prune", "quantize", "calibrate_ranges", "recalibrate_batchnorm", "strip", "callbacks",
           "GlobalBatchLogs", "PruningStep", "SparsityMonitor", "TraceOnce",
           "ConstantSparsity", "PolynomialDecay", "model_sparsity", "sparsity_by_layer",
           "is_pruning_wrapped", "is_quantization_aware", "quantizable_layers",
           "Select", "prune_n_m", "n_m_pattern", "n_m_fraction", "slim", "channel_widths",
           "cluster", "unique_weights", "is_clustering_wrapped", "distill", "Distiller",
           "fold_input_preprocessing",
           "low_rank", "optimizer", "fine_tune_rate", "WarmupCosine", "with_policy",
           "to_float32", "compute_dtypes", "apply_plan", "check_plan", "Stage", "PlanResult",
           "measure", "report", "Report", "flatten", "is_nested", "history", "measured_history",
           "distribute", "sensitivity"]

_moved = moved(__name__, {"load_model": "tfdeploy.model_io", "save_model": "tfdeploy.model_io"},
               stacklevel=3)


def __getattr__(name):
    # per-layer sensitivity is measured on exported .tflite files, so its code lives in
    # export (which imports compress); it is named here too, loaded on first use
    if name == "sensitivity":
        from tfdeploy.export import sensitivity

        return sensitivity
    return _moved(name)  # old paths of names that moved (DeprecationWarning), else AttributeError
