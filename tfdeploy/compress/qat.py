"""Quantization-aware training (QAT), including pruning-preserving QAT."""

from tfdeploy._keras import check_model, keras, tfmot
from tfdeploy.compress._tfmot import prune_preserve_scheme
from tfdeploy.compress.prune import copy_model, is_pruning_wrapped
from tfdeploy.compress.sparsity import model_sparsity
from tfdeploy.errors import CompressionError

PRESERVE = ("auto", "sparsity", None)
_SPARSE_ENOUGH = 0.1


def _registry():
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry)

    return default_8bit_quantize_registry.Default8BitQuantizeRegistry()


def quantizable_layers(model):
    """Return ``(supported, unsupported)`` layer names for tfmot's default 8-bit QAT."""
    registry = _registry()
    supported, unsupported = [], []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        (supported if registry.supports(layer) else unsupported).append(layer.name)
    return supported, unsupported


def quantize(model, preserve="auto"):
    """Wrap a model for 8-bit quantization-aware training; returns a new model.

    Every layer tfmot's default 8-bit scheme supports is annotated; the others
    (e.g. the ``Rescaling`` input layer) stay float during training and are
    quantized by the full-integer TFLite conversion afterwards. Pruning wrappers
    are stripped first.

    Args:
        model: a built Keras 2 (tf_keras) Sequential or functional model.
        preserve: "sparsity" uses the pruning-preserving scheme (zeros stay zero
            through QAT and into the int8 TFLite file); None uses the default
            scheme; "auto" picks "sparsity" when at least 10% of the kernel
            weights are already zero. Defaults to "auto".

    Returns:
        A new ``keras.Model`` with quantize wrappers; compile and fit it.

    Raises:
        ModelTypeError: Keras 3 model, non-model, or subclassed model.
        CompressionError: unknown ``preserve`` or nothing to quantize.
    """
    check_model(model)
    if preserve not in PRESERVE:
        raise CompressionError(
            f"Unrecognized preserve={preserve!r}. Supported values are: {list(PRESERVE)}.")
    qk = tfmot().quantization.keras
    if any(isinstance(layer, qk.QuantizeWrapper) for layer in model.layers):
        raise CompressionError(
            f"Model {model.name!r} is already quantization-aware; quantize the original "
            "float model instead.")
    if is_pruning_wrapped(model):
        from tfdeploy.compress.strip import strip

        model = strip(model)
    sparsity = model_sparsity(model)
    if preserve == "auto":
        preserve = "sparsity" if sparsity >= _SPARSE_ENOUGH else None
    supported, _ = quantizable_layers(model)
    if not supported:
        raise CompressionError(
            f"No layer of model {model.name!r} is supported by 8-bit QAT (Conv2D, Dense, ...).")
    work = copy_model(model)
    names = set(supported)

    def annotate(layer):
        return qk.quantize_annotate_layer(layer) if layer.name in names else layer

    with qk.quantize_scope():
        annotated = keras.models.clone_model(work, clone_function=annotate)
        if preserve == "sparsity":
            scheme = prune_preserve_scheme()
            quantized = qk.quantize_apply(annotated, scheme)
        else:
            quantized = qk.quantize_apply(annotated)
    quantized._tfdeploy_qat = {"preserve": preserve, "layers": supported,
                               "sparsity_before": sparsity}
    return quantized


def is_quantization_aware(model):
    """True when ``model`` holds tfmot quantize wrappers."""
    wrapper = tfmot().quantization.keras.QuantizeWrapper
    return any(isinstance(layer, wrapper) for layer in model.layers)
