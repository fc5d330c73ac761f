"""Quantization-aware training (QAT): whole-model or selective, pruning- and cluster-preserving."""

import warnings

from tfdeploy.model_io import check_model
from tfdeploy._keras import keras, tfmot
from tfdeploy._walk import is_graph_network, leaf_layers, nodes
from tfdeploy._tfmot import (cluster_preserve_scheme, default_8bit_registry, global_batch_ranges,
                             honour_trainable, prune_preserve_scheme, quantize_layers,
                             set_weight_ranges)
from tfdeploy.compress.calibrate import calibrate_ranges
from tfdeploy.compress.fold import fold_input_preprocessing
from tfdeploy.compress.graph import flatten
from tfdeploy.compress.history import notes, record
from tfdeploy.compress.selection import Select, resolve
from tfdeploy.compress.sparsity import model_sparsity
from tfdeploy.compress.distribute import check_scope
from tfdeploy.compress.strip import strip
from tfdeploy.compress.wrappers import (is_clustering_wrapped, is_pruning_wrapped,
                                        is_quantization_aware)
from tfdeploy.errors import CompressionError, QuantizationFallbackWarning

PRESERVE = ("auto", "sparsity", "cluster", "cluster_sparsity", None)
_SPARSE_ENOUGH = 0.1


def _is_builtin(layer):
    return type(layer).__module__.startswith(("tf_keras.", "keras.", "tensorflow."))


def quantizable_layers(model):
    """Return ``(supported, unsupported)`` layer names for tfmot's default 8-bit QAT."""
    registry = default_8bit_registry()
    foldable = _foldable_norms(model) if is_graph_network(model) else {}
    supported, unsupported = [], []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        ok = registry.supports(layer) or layer.name in foldable
        (supported if ok else unsupported).append(layer.name)
    return supported, unsupported


_NORMS = ("BatchNormalization", "SyncBatchNormalization")
_FOLD_INTO = ("Conv2D", "DepthwiseConv2D", "Dense")


def _foldable_norms(work):
    """``{BatchNormalization name: the layer it follows}`` for every BN that directly follows
    a linear Conv2D / DepthwiseConv2D / Dense: tfmot's Conv+BN(+ReLU) transforms.

    The default 8-bit registry has no config for BatchNormalization: tfmot
    handles it only through those transforms, which match annotated layers
    only. Left unannotated, the convolution's output gets its own fake-quant,
    the converter cannot fold the BN into it, and every BN becomes an extra
    int8 ``MUL`` in the .tflite (52 in a MobileNetV2: slower, and an 8-bit
    rounding before each BN's scale).
    """
    out = {}
    for node in nodes(work):
        layer = node.layer
        if type(layer).__name__ not in _NORMS or len(node.parent_nodes) != 1:
            continue
        parent = node.parent_nodes[0].layer
        if type(parent).__name__ in _FOLD_INTO and \
                getattr(parent, "activation", None) is keras.activations.linear:
            out[layer.name] = parent.name
    return out


def _why_not(configs, foldable=()):
    registry = default_8bit_registry()

    def why_not(layer):
        if layer.name in configs or registry.supports(layer) or layer.name in foldable:
            return None
        if not _is_builtin(layer) and layer.weights:
            return (f"custom layer {type(layer).__name__} has no quantize config; pass "
                    f"quantize_configs={{{layer.name!r}: YourQuantizeConfig()}}")
        return f"8-bit QAT has no config for {type(layer).__name__} (stays float in training)"

    return why_not


def _keep_inference_norms(work, quantized):
    """BatchNormalization layers the float graph calls with ``training=False`` (a transfer
    base's) stay in inference mode under QAT.

    tfmot's clones drop that call argument, so once such a layer is trainable (a slimmed
    or unfrozen base) QAT's ``fit`` normalised by batch statistics and moved the moving
    ones: a slimmed MobileNetV2 fell from 92 % to 50-80 % in two QAT epochs. A frozen
    BatchNormalization runs in inference mode in Keras 2, as `FineTune` keeps them.
    """
    inference = {node.layer.name for node in nodes(work)
                 if isinstance(node.layer, keras.layers.BatchNormalization)
                 and node.call_kwargs.get("training") is False}
    for layer in quantized.layers:
        inner = getattr(layer, "layer", layer)
        if inner.name in inference and layer.trainable:
            layer.trainable = False


def _keep_synchronized_norms(model, quantized):
    """BatchNormalization layers built with ``synchronized=True`` (the statistics of the
    whole global batch under a ``tf.distribute`` strategy) stay synchronized under QAT.

    tf_keras leaves ``synchronized`` out of the layer's config, so tfmot's clones (and
    ours) rebuilt them normalising by each replica's share of the batch: under a
    strategy, QAT then trained other weights than one process on the whole batches.
    """
    synchronized = {layer.name for layer in leaf_layers(model)
                    if isinstance(layer, keras.layers.BatchNormalization)
                    and getattr(layer, "synchronized", False)}
    for layer in quantized.layers:
        inner = getattr(layer, "layer", layer)
        if inner.name in synchronized and isinstance(inner, keras.layers.BatchNormalization):
            inner.synchronized = True
            inner.fused = False  # as Keras builds a synchronized layer


def _pick_preserve(model, preserve, sparsity):
    if preserve != "auto":
        return preserve
    clustered = "clustered" in notes(model)
    if clustered:
        return "cluster_sparsity" if sparsity >= _SPARSE_ENOUGH else "cluster"
    return "sparsity" if sparsity >= _SPARSE_ENOUGH else None


def _float_fallback(work, chosen, skipped):
    """Name the TensorFlow-op layers tfmot cannot fake-quantize, warn, and say so in ``skipped``.

    MobileNetV3's hard-swish ``x * relu6(x + 3) / 6`` and its squeeze-excite gate
    are built from ``TFOpLambda`` layers (``tf.__operators__.add``,
    ``tf.math.multiply``), for which tfmot has no quantize config: they train
    float, and only the full-integer TFLite conversion quantizes them (from the
    representative data; some ``MUL`` ops may stay float). This is reported, never silent.
    """
    ops = [layer.name for layer in work.layers
           if type(layer).__name__ == "TFOpLambda" and layer.name not in chosen]
    if not ops:
        return []
    reason = ("TensorFlow op (hard-swish / hard-sigmoid / squeeze-excite arithmetic): tfmot has "
              "no QAT config, so it trains float; the int8 TFLite conversion quantizes what it "
              "can from the representative data")
    for name in ops:
        skipped[name] = reason
    warnings.warn(QuantizationFallbackWarning(
        f"QAT leaves {len(ops)} TensorFlow-op layer(s) float during training (e.g. "
        f"{ops[:3]}): tfmot cannot fake-quantize the hard-swish / squeeze-excite arithmetic of "
        "MobileNetV3. A quantization='int8' TFLite conversion with representative data "
        "quantizes what it can (some MUL ops may stay float: see "
        "`tfdeploy.verify.op_dtypes(path)`); verify the file's accuracy in its runtime. "
        "`tfdeploy.compress.report` lists the layers."), stacklevel=3)
    return ops


# the precisions of `tfdeploy.verify.precision_map` whose operators compute in float
_FLOAT_COMPUTE = ("float", "float16", "int8w", "int4w")


def _float_layers(work, precision_map):
    """Names of ``work``'s layers a mixed-precision map leaves computing in float: "float" and
    the weight-only precisions ("float16", "int8w", "int4w": weights stored small, dequantized
    for a float operator) (keys as `tfdeploy.verify.precision_map` reads them from a file:
    ``conv1``, ``base/block_1``)."""
    if not isinstance(precision_map, dict) or not precision_map:
        raise CompressionError(
            "precision_map must be a non-empty {layer: precision} dict, e.g. the "
            "'precision_map' of an auto .tflite's model card or "
            f"tfdeploy.verify.precision_map(path); received {precision_map!r}.")
    names = {layer.name for layer in work.layers}
    found, matched = [], 0
    for key, precision in precision_map.items():
        hits = [part for part in str(key).split("/") if part in names]
        matched += bool(hits)
        if hits and precision in _FLOAT_COMPUTE:
            found.append(hits[-1])
    if not matched:
        raise CompressionError(
            f"No key of precision_map names a layer of model {work.name!r} (keys: "
            f"{sorted(precision_map)[:8]}, layers: {sorted(names)[:8]}...); pass the map "
            "searched for this model.")
    return sorted(set(found))


def quantize(model, preserve="auto", layers=None, quantize_configs=None, calibration_data=None,
             precision_map=None):
    """Wrap a model for 8-bit quantization-aware training; returns a new model.

    Every layer tfmot's default 8-bit scheme supports is annotated (or only
    those chosen by ``layers``); built-in layers without a config (e.g. the
    ``Rescaling`` input layer) stay float during training and are quantized by
    the full-integer TFLite conversion afterwards. Custom layers with weights
    need a ``tfmot.quantization.keras.QuantizeConfig`` (``quantize_configs``),
    or must be left out with ``layers``. Pruning wrappers are stripped first;
    nested models are flattened.

    Args:
        model: a built Keras 2 (tf_keras) Sequential or functional model.
        preserve: "sparsity" keeps zeros zero through QAT and into the int8
            file; "cluster" keeps the cluster centroids shared (after
            `cluster` + `strip`); "cluster_sparsity" keeps both; None uses the
            default scheme; "auto" picks "cluster"/"cluster_sparsity" for a
            clustered model, else "sparsity" when at least 10% of the kernel
            weights are zero. Defaults to "auto".
        layers: which layers to annotate (selective QAT, see `Select`); None
            annotates every supported layer. Defaults to None.
        quantize_configs: ``{layer_name: QuantizeConfig}`` for custom layers
            (or to override a built-in layer's config). Defaults to None.
        calibration_data: inputs (``tf.data.Dataset`` or array, e.g. the training
            set) used to set the activation ranges from the float model before
            QAT starts (tfmot starts them at [-6, 6] and moves them with a slow
            moving average, so a short QAT fine-tune otherwise clips activations
            and loses accuracy; see `calibrate_ranges`). Defaults to None.
        precision_map: a mixed-precision choice ``{layer: precision}`` (the
            model card of ``export.tflite(..., quantization="auto")``, or
            `tfdeploy.verify.precision_map` of its file): the layers it leaves
            "float" stay unannotated, so QAT trains only what will be quantized.
            It is recorded in the history; ``export.tflite(qat_model,
            quantization="auto", representative_data=...)`` then builds that
            map from the QAT-trained weights. Not with ``layers``. Defaults to None.

    Returns:
        A new ``keras.Model`` with quantize wrappers; compile and fit it.

    Raises:
        ModelTypeError: Keras 3 model, non-model, or subclassed model.
        CompressionError: unknown ``preserve``, already quantized, a custom
            layer without a config, or nothing to quantize.

    Example:
        >>> qat = quantize(model, layers=Select(types=keras.layers.Conv2D))
    """
    model = check_model(model, graph=True)
    given = model  # strip, fold and flatten rebuild layers from their configs
    check_scope(model, "quantize")
    honour_trainable()  # a frozen base stays frozen under QAT (tfmot trains its kernels anyway)
    global_batch_ranges()  # under a strategy, ranges from the global batch, as on one device
    if preserve not in PRESERVE:
        raise CompressionError(
            f"Unrecognized preserve={preserve!r}. Supported values are: {list(PRESERVE)}.")
    qk = tfmot().quantization.keras
    if is_quantization_aware(model):
        raise CompressionError(
            f"Model {model.name!r} is already quantization-aware; quantize the original "
            "float model instead.")
    source = model
    if is_pruning_wrapped(model) or is_clustering_wrapped(model):
        model = strip(model)
    configs = dict(quantize_configs or {})
    bad = [v for v in configs.values() if not isinstance(v, qk.QuantizeConfig)]
    if bad:
        raise CompressionError(
            f"quantize_configs values must be tfmot QuantizeConfig instances, received {bad!r}.")
    sparsity = model_sparsity(model)
    preserve = _pick_preserve(source, preserve, sparsity)
    # the input rescaling goes into the first conv (one less full-size MUL/ADD/CONCAT in
    # the int8 file); not under the preserving schemes, whose kernels it would change
    work = fold_input_preprocessing(model) if preserve is None else model
    if work is model:
        work = flatten(model)
    else:
        source = work  # its history holds the fold
    foldable = _foldable_norms(work)
    why_not = _why_not(configs, foldable)
    float_layers = []
    if precision_map is not None:
        if layers is not None:
            raise CompressionError("Pass either layers= or precision_map= to quantize, not both.")
        float_layers = _float_layers(work, precision_map)
        if float_layers:
            layers = Select(exclude=float_layers)
    if layers is None:
        custom = [layer for layer in work.layers
                  if (why_not(layer) or "").startswith("custom")]
        if custom:
            names = ", ".join(f"{layer.name!r} ({type(layer).__name__})" for layer in custom)
            raise CompressionError(
                f"Cannot quantize custom layer(s) {names}: tfmot has no quantize config for "
                "them. Pass quantize_configs={layer_name: QuantizeConfig()} to quantize them, or "
                "leave them float with layers=Select(exclude=[layer_name]).")
    chosen, skipped = resolve(work, layers, why_not, "QAT")
    for norm, conv in foldable.items():  # a BN is folded into its conv, so it goes with it
        if norm in chosen and conv not in chosen and norm not in configs:
            chosen.remove(norm)
            skipped[norm] = (f"folded into {conv!r} by the converter; {conv!r} is not "
                             "quantized, so neither is it")
    names = set(chosen)
    scope = {type(c).__name__: type(c) for c in configs.values()}
    scope.update({type(layer).__name__: type(layer) for layer in work.layers
                  if layer.name in configs or not _is_builtin(layer)})
    with qk.quantize_scope(scope):
        if preserve == "sparsity":
            scheme = prune_preserve_scheme()
        elif preserve in ("cluster", "cluster_sparsity"):
            scheme = cluster_preserve_scheme(preserve == "cluster_sparsity")
        else:
            scheme = None
        try:  # tfmot's quantize_apply of work with these layers annotated, built once
            quantized = quantize_layers(work, names, configs, scheme)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise CompressionError(f"QAT could not be applied to model {model.name!r}: {exc}") \
                from exc
    fallback = _float_fallback(work, names, skipped)
    _keep_inference_norms(work, quantized)
    _keep_synchronized_norms(given, quantized)
    set_weight_ranges(quantized)  # tfmot's start of [-6, 6] until the first training step
    calibrated = {}
    if calibration_data is not None:
        calibrated = calibrate_ranges(quantized, work, calibration_data)
    quantized._tfdeploy_qat = {"preserve": preserve, "layers": chosen,
                               "sparsity_before": sparsity, "calibrated": len(calibrated),
                               "float_fallback": fallback}
    detail = f"int8 QAT (preserve={preserve})"
    if fallback:
        detail += (f"; {len(fallback)} TensorFlow-op layer(s) (hard-swish/hard-sigmoid/SE "
                   "arithmetic) stay float in QAT; the int8 converter quantizes what it can")
    record(quantized, "quantized", chosen, skipped, source=source, detail=detail,
           params={"preserve": preserve, "sparsity_before": sparsity,
                   "calibrated_ranges": len(calibrated),
                   "custom_configs": sorted(configs), "float_fallback": fallback,
                   **({"precision_map": dict(precision_map), "float_layers": float_layers}
                      if precision_map is not None else {})})
    return quantized


__all__ = ["quantize", "quantizable_layers", "is_quantization_aware", "PRESERVE"]
