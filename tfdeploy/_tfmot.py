"""tfmot internals tfdeploy relies on, gathered in one place (tfmot is in maintenance mode).

On the ground floor: `compress`, `export` and `bridge` all ask it, and it imports
nothing of tfdeploy's but the floor's layer walker.

Everything here reaches past tfmot's public API (private modules, wrapper attributes,
registry methods, class names). It was read against the tfmot versions in
`CHECKED_VERSIONS`; `check_version` warns once when another one is installed, and
``tests/test_house.py`` fails, so the next upgrade starts by re-reading this file.

The ``is_*`` predicates never import tfmot: when tfmot is not loaded, no layer can be
one of its wrappers.
"""

import sys
import warnings
from collections import Counter

from tfdeploy._walk import nodes, producer

#: tfmot versions whose internals this module was checked against: [low, high).
CHECKED_VERSIONS = ((0, 8, 0), (0, 9, 0))
_MODULE = "tensorflow_model_optimization"
_checked = []


def load():
    """Import tfmot (once) and return it, without the import of Keras 3 it makes for nothing.

    tfmot's pruning registry runs ``from keras.src.engine import base_layer`` at import; with
    Keras 3 installed that imports the whole of Keras 3 (1.4 s of CPU, 1.5x all the rest of
    tfmot's import), then fails (Keras 3 has no ``engine``) and tfmot goes on without it.
    When this process has not imported ``keras``, it is hidden while tfmot imports, so that
    line fails at once, with the same outcome; a process that has imported Keras 3 (the
    bridge) keeps it. Every tfmot import in tfdeploy comes here first.
    """
    module = sys.modules.get(_MODULE)
    if module is not None:
        return module
    hide = "keras" not in sys.modules
    if hide:
        sys.modules["keras"] = None  # `import keras` raises ImportError while it is there
    try:
        import tensorflow_model_optimization as module
    finally:
        if hide and "keras" in sys.modules and sys.modules["keras"] is None:
            del sys.modules["keras"]
    return module


def check_version():
    """True when the installed tfmot is in `CHECKED_VERSIONS`, else warn once and False."""
    if not _checked:
        tfmot = load()
        version = tuple(int(p) for p in tfmot.__version__.split(".")[:3] if p.isdigit())
        low, high = CHECKED_VERSIONS
        ok = low <= version < high
        if not ok:
            warnings.warn(
                f"tensorflow-model-optimization {tfmot.__version__} is installed; tfdeploy's "
                f"use of its internals was checked against versions {low} to {high} "
                "(exclusive). Pruning, clustering and QAT may misbehave.", RuntimeWarning,
                stacklevel=3)
        _checked.append(ok)
    return _checked[0]


def _loaded():
    return sys.modules.get(_MODULE)


def _class_named(layer, name):
    return any(c.__name__ == name and c.__module__.startswith(_MODULE)
               for c in type(layer).__mro__)


def is_prune_wrapper(layer):
    """True for a tfmot pruning wrapper (``PruneLowMagnitude``)."""
    return _loaded() is not None and isinstance(layer, prune_wrapper_class())


def is_cluster_wrapper(layer):
    """True for a tfmot clustering wrapper (``ClusterWeights``)."""
    return _loaded() is not None and isinstance(layer, cluster_wrapper_class())


def is_quantize_wrapper(layer):
    """True for a tfmot ``QuantizeWrapper`` (or ``QuantizeWrapperV2``)."""
    return _loaded() is not None and _class_named(layer, "QuantizeWrapper")


def is_quantize_layer(layer):
    """True for tfmot's ``QuantizeLayer`` (the input fake-quant of a QAT model)."""
    return _loaded() is not None and _class_named(layer, "QuantizeLayer")


def is_training_wrapper(layer):
    """True for any tfmot layer that only exists while training: a pruning, clustering or
    quantize wrapper, or the ``QuantizeLayer`` of a quantization-aware model."""
    return (is_prune_wrapper(layer) or is_cluster_wrapper(layer) or is_quantize_wrapper(layer)
            or is_quantize_layer(layer))


def pruning_masks(layer):
    """``[(weight, mask)]`` of a pruning wrapper (empty for any other layer)."""
    if not is_prune_wrapper(layer):
        return []
    return [(weight, mask) for weight, mask, _ in getattr(layer, "pruning_vars", []) or []]


def clustered_kernels(layer):
    """``[(name, array)]``: the kernels a clustering wrapper computes (centroids gathered)."""
    if not is_cluster_wrapper(layer):
        return []
    out = []
    for name, algorithm in layer.clustering_algorithms.items():
        weight = algorithm.get_clustered_weight(layer.pulling_indices[name],
                                                layer.original_clusterable_weights[name])
        out.append((name, weight.numpy()))
    return out


def quantize_wrapper_kernels(layer):
    """``[(name, array)]``: the float kernels held by a QuantizeWrapper."""
    if not is_quantize_wrapper(layer):
        return []
    return [(w.name, w.numpy()) for w in layer.weights
            if w.name.split("/")[-1].split(":")[0].endswith("kernel")]


def quantize_wrapper_inner_weights(layer):
    """``{short name: variable}`` of the wrapped layer's own weights (kernel, bias, ...)."""
    return {w.name.split("/")[-1]: w for w in layer.weights
            if w.name.startswith(layer.layer.name + "/")}


def quantize_activation_inner(activation):
    """The plain activation a tfmot activation stands for, else None.

    A ``QuantizeAwareActivation`` holds the layer's own activation. tfmot's
    Conv/Dense + BatchNormalization transforms give the convolution a
    ``NoOpActivation`` (the identity, "do not fake-quantize here": its ReLU comes
    after the BN), which Keras cannot deserialize: it stands for ``"linear"``,
    the activation those transforms require of the float layer.
    """
    if type(activation).__name__ == "QuantizeAwareActivation":
        activation = activation.activation
        return "linear" if type(activation).__name__ == "NoOpActivation" else activation
    if type(activation).__name__ == "NoOpActivation":
        return "linear"
    return None


#: range-variable prefixes: an activation's output ("post_activation"), its input
#: ("pre_activation"), and the output quantizer of layers quantized at their output only
#: ("output": Add, ReLU, Concatenate, pooling, a BatchNormalization folded into its conv)
_RANGES = {"post_activation": "output", "pre_activation": "pre_activation", "output": "output"}


def activation_range_variables(qat_model):
    """``{wrapped layer name: [(variable, "output"|"pre_activation", is_max)]}``.

    The min/max variables tfmot's quantize wrappers keep for a layer's output and
    for the input of its activation.
    """
    wrapped = {}
    for layer in qat_model.layers:
        if not is_quantize_wrapper(layer):
            continue
        for w in layer.non_trainable_weights:
            short = w.name.split("/")[-1].split(":")[0]
            for prefix, kind in _RANGES.items():
                if short in (f"{prefix}_min", f"{prefix}_max"):
                    wrapped.setdefault(layer.layer.name, []).append(
                        (w, kind, short.endswith("_max")))
    return wrapped


def input_range_variables(qat_model):
    """``[(layer, min variable, max variable)]`` of every tfmot ``QuantizeLayer``: the
    fake-quant tfmot puts where a float tensor (the model input, or an unquantized
    layer's output) enters a quantized layer; its range starts at [0, 0] and is set by the
    first training batch."""
    out = []
    for layer in qat_model.layers:
        if not is_quantize_layer(layer):
            continue
        # named after the layer: quantize_layer_min, quantize_layer_1_min, ...
        short = {w.name.split("/")[-1].split(":")[0]: w for w in layer.non_trainable_weights}
        lo = [w for n, w in short.items() if n.endswith("_min")]
        hi = [w for n, w in short.items() if n.endswith("_max")]
        if len(lo) == 1 and len(hi) == 1:
            out.append((layer, lo[0], hi[0]))
    return out


def set_weight_ranges(qat_model):
    """Set every quantized weight's range from the weight itself; returns how many were set.

    tfmot's weight quantizers start their min/max at [-6, 6] and set them from the
    weights only in a training step: until then (a calibrated QAT model before
    `fit`, or converted straight away) a kernel whose values are about 0.1 is
    rounded to a handful of levels and a classifier head's to zero. This runs
    each weight quantizer once as a training step would (ranges from the current
    weights; a cluster-preserving quantizer also re-pulls its centroids, as it
    does at every step); no weight is trained.
    """
    count = 0
    for layer in qat_model.layers:
        if not is_quantize_wrapper(layer):
            continue
        for weight, quantizer, variables in getattr(layer, "_weight_vars", ()):
            quantizer(weight, training=True, weights=variables)
            count += 1
    return count


def prunable_weight_names(layer):
    """The weights tfmot's pruning registry would prune in ``layer`` ([] if none)."""
    registry = prune_registry()
    if not registry.supports(layer):
        return []
    return list(registry._weight_names(layer))


def clustering_supports(layer):
    """Whether tfmot's clustering registry supports ``layer``."""
    load()
    from tensorflow_model_optimization.python.core.clustering.keras import clustering_registry

    return clustering_registry.ClusteringRegistry.supports(layer)


def cluster_weights(layer, **params):
    """tfmot's experimental ``cluster_weights`` (the one that takes ``preserve_sparsity``)."""
    check_version()
    from tensorflow_model_optimization.python.core.clustering.keras.experimental import (
        cluster as experimental)

    return experimental.cluster_weights(layer, **params)


def default_8bit_registry():
    """tfmot's default 8-bit QAT registry (which layers have a quantize config)."""
    load()
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry)

    return default_8bit_quantize_registry.Default8BitQuantizeRegistry()


def prune_wrapper_class():
    load()
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

    return pruning_wrapper.PruneLowMagnitude


def prune_registry():
    load()
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    return prune_registry.PruneRegistry


def _default_8bit_supports(layer):
    """Whether tfmot's default 8-bit registry has a quantize config for ``layer``.

    tfmot's collaborative (prune-/cluster-preserving) registries answer True for
    every layer without trainable weights (e.g. ``Rescaling``), then fail in
    ``get_quantize_config``, which asks the default 8-bit registry. Their
    ``supports`` must also ask it.
    """
    return default_8bit_registry().supports(layer)


def prune_preserve_scheme():
    """tfmot's pruning-preserving 8-bit QAT scheme, with its layer-support check fixed."""
    check_version()
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts \
        .prune_preserve import default_8bit_prune_preserve_quantize_scheme as scheme_mod
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts \
        .prune_preserve import prune_preserve_quantize_registry as registry_mod

    class Registry(registry_mod.Default8bitPrunePreserveQuantizeRegistry):
        def supports(self, layer):
            return _default_8bit_supports(layer) and super().supports(layer)

    class Scheme(scheme_mod.Default8BitPrunePreserveQuantizeScheme):
        def get_quantize_registry(self):
            return Registry()

    return Scheme()


def cluster_preserve_scheme(preserve_sparsity):
    """tfmot's cluster-preserving 8-bit QAT scheme, with the same layer-support fix."""
    check_version()
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts \
        .cluster_preserve import cluster_preserve_quantize_registry as registry_mod
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts \
        .cluster_preserve import default_8bit_cluster_preserve_quantize_scheme as scheme_mod

    class Registry(registry_mod.Default8bitClusterPreserveQuantizeRegistry):
        def __init__(self, preserve):
            super().__init__(preserve)
            self._preserve = preserve

        def supports(self, layer):
            return _default_8bit_supports(layer) and super().supports(layer)

        def get_quantize_config(self, layer):
            # tfmot shares ONE weight quantizer per config type among all layers, and the
            # quantizer switches its own `preserve_sparsity` off for good when it meets a
            # layer without zeros: every later Conv2D then loses its pruned zeros. A fresh
            # quantizer per layer keeps that decision per layer.
            self._config_quantizer_map = {
                "Default8BitQuantizeConfig":
                    registry_mod.ClusterPreserveDefault8BitWeightsQuantizer(self._preserve),
                "Default8BitConvQuantizeConfig":
                    registry_mod.ClusterPreserveDefault8BitConvWeightsQuantizer(self._preserve),
            }
            return super().get_quantize_config(layer)

    class Scheme(scheme_mod.Default8BitClusterPreserveQuantizeScheme):
        def get_quantize_registry(self):
            return Registry(self.preserve_sparsity)

    return Scheme(preserve_sparsity)


def cluster_wrapper_class():
    load()
    from tensorflow_model_optimization.python.core.clustering.keras import cluster_wrapper

    return cluster_wrapper.ClusterWeights


def honour_trainable():
    """Make tfmot's quantize wrappers keep a frozen layer frozen (idempotent, process-wide).

    ``QuantizeWrapper.build`` appends the weights it quantizes (kernels) to the
    wrapper's own trainable list "so they get trained", and its
    ``trainable_weights`` never looks at ``trainable``: under QAT a frozen
    transfer-learning base trains its kernels anyway, and unfreezing changes
    nothing. With this fix a wrapper whose layer is frozen reports no trainable
    weights and lists them all as non-trainable; a trainable wrapper answers
    exactly as tfmot does.
    """
    check_version()
    from tensorflow_model_optimization.python.core.quantization.keras import quantize_wrapper

    for cls in (quantize_wrapper.QuantizeWrapper, quantize_wrapper.QuantizeWrapperV2):
        if cls.__dict__.get("_tfdeploy_honours_trainable"):
            continue
        trainable = cls.trainable_weights.fget
        non_trainable = cls.non_trainable_weights.fget

        def trainable_weights(self, _original=trainable):
            return _original(self) if self.trainable else []

        def non_trainable_weights(self, _original=non_trainable):
            if self.trainable:
                return _original(self)
            return self._dedup_weights(self.layer.non_trainable_weights
                                       + self._trainable_weights + self._non_trainable_weights)

        cls.trainable_weights = property(trainable_weights)
        cls.non_trainable_weights = property(non_trainable_weights)
        cls._tfdeploy_honours_trainable = True


#: tfmot's range-collecting fake-quant ops (``quant_ops``): each takes its range from the
#: batch it is given (MovingAverageQuantizer: activations; AllValuesQuantizer: the input
#: ``QuantizeLayer``; LastValueQuantizer: weights, and activations in custom configs)
_RANGE_OPS = ("MovingAvgQuantize", "AllValuesQuantize", "LastValueQuantize")


def global_batch_ranges():
    """Make tfmot's fake-quants take their ranges from the whole global batch under a
    ``tf.distribute`` strategy, as one device would (idempotent, process-wide).

    tfmot computes a range from the batch each replica holds: a moving-average
    range (every activation) then moves toward the mean over replicas of their
    own batch's min/max, and an all-values range (the input ``QuantizeLayer``)
    holds a different value on each replica during the step, so from the first
    step the replicas quantize with other ranges than one process on the whole
    batch, and train other weights. With this fix, while training under several
    replicas in sync, each range op gets its input extended by two rows holding
    the min and the max over every replica's batch (``all_gather``, exact; per
    channel where the op is per channel), and its output without them: tfmot's
    own range arithmetic (zero inside, symmetric, narrow range, moving average)
    then runs on the global batch's min/max, the same on every replica. Nothing
    changes with one replica, outside training, or for a variable (a weight is
    the same on every replica).
    """
    check_version()
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    for name in _RANGE_OPS:
        op = getattr(quant_ops, name)
        if not getattr(op, "_tfdeploy_global_batch", False):
            setattr(quant_ops, name, _global_batch_op(op))


def _global_batch_op(op):
    """``op`` (a tfmot range op) fed the global batch's min/max, see `global_batch_ranges`."""
    import inspect

    import tensorflow as tf

    signature = inspect.signature(op)

    def global_op(inputs, min_var, max_var, *args, **kwargs):
        call = signature.bind(inputs, min_var, max_var, *args, **kwargs)
        call.apply_defaults()
        per_channel = bool(call.arguments.get("per_channel", False))
        context = tf.distribute.get_replica_context()
        if (call.arguments["is_training"] is not True or context is None
                or context.num_replicas_in_sync == 1 or isinstance(inputs, tf.Variable)
                or (inputs.shape.rank or 0) < (2 if per_channel else 1)):
            return op(inputs, min_var, max_var, *args, **kwargs)
        extended = _with_global_extremes(context, inputs, per_channel)
        return op(extended, min_var, max_var, *args, **kwargs)[:-2]

    global_op._tfdeploy_global_batch = True
    global_op.__name__ = global_op.__qualname__ = op.__name__
    global_op.__doc__ = op.__doc__
    return global_op


def _with_global_extremes(context, inputs, per_channel):
    """``inputs`` with two rows appended along axis 0: the min and the max over every
    replica's ``inputs`` (per last-axis channel when ``per_channel``)."""
    import tensorflow as tf

    axes = list(range(inputs.shape.rank - 1)) if per_channel else None
    local = tf.stack([tf.reduce_min(inputs, axis=axes), tf.reduce_max(inputs, axis=axes)])
    every = context.all_gather(local[tf.newaxis], axis=0)  # (replicas, 2[, channels])
    lo, hi = tf.reduce_min(every[:, 0], axis=0), tf.reduce_max(every[:, 1], axis=0)
    row = tf.concat([[1], tf.shape(inputs)[1:]], 0)
    return tf.concat([inputs, tf.broadcast_to(lo, row), tf.broadcast_to(hi, row)], axis=0)


def _quantize_modules():
    load()
    from tensorflow_model_optimization.python.core.quantization.keras import (
        quantize, quantize_annotate, quantize_config, quantize_layer, quantize_wrapper)

    return quantize, quantize_annotate, quantize_config, quantize_layer, quantize_wrapper


def quantize_apply_annotated(model, names, configs=None, scheme=None):
    """tfmot's public path: annotate the layers ``names`` of ``model`` (with ``configs[name]``
    where given) in a clone, then ``quantize_apply`` it. Returns the QAT model."""
    quantize, *_ = _quantize_modules()
    configs, names = configs or {}, set(names)

    def annotate(layer):
        if layer.name not in names:
            return layer
        return quantize.quantize_annotate_layer(layer, quantize_config=configs.get(layer.name))

    from tensorflow_model_optimization.python.core.keras.compat import keras

    annotated = keras.models.clone_model(model, clone_function=annotate)
    return quantize.quantize_apply(annotated, scheme) if scheme is not None else \
        quantize.quantize_apply(annotated)


def quantize_layers(model, names, configs=None, scheme=None):
    """`quantize_apply_annotated`'s model, built with three fewer rebuilds of the graph.

    tfmot's ``quantize_apply`` takes an annotated model, clones it with its weights (a
    ``from_config`` rebuild and a weight copy), clones that again to strip the annotate
    wrappers, keeping which layers they marked, runs the scheme's layout transform (a
    ``from_config`` rebuild) and wraps the result in a last clone. Here the marks come
    straight from ``names`` on the unannotated ``model``, which only the layout transform
    reads (its config and weights, as tfmot's copy would give them; ``model`` is left as it
    was), and the last clone wraps its output. Each custom ``QuantizeConfig`` is serialized
    and read back, as tfmot's clone of the annotate wrapper does, so every layer gets its
    own copy. On a tfmot outside `CHECKED_VERSIONS` this is `quantize_apply_annotated`.

    Args:
        model: a flat built Keras 2 functional or Sequential model; it is not changed.
        names: the names of the layers to quantize (tfmot's annotated layers).
        configs: ``{name: QuantizeConfig}`` for layers that do not use the scheme's
            registry. Defaults to None.
        scheme: a tfmot ``QuantizeScheme``; None is the default 8-bit one.

    Raises:
        ValueError: nothing to quantize (tfmot's message).
        RuntimeError: a layer in ``names`` the registry has no config for (tfmot's message).
    """
    if not check_version():
        return quantize_apply_annotated(model, names, configs, scheme)
    quantize, annotate_mod, config_mod, layer_mod, wrapper_mod = _quantize_modules()
    from tensorflow_model_optimization.python.core.keras.compat import keras
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_scheme)
    import tensorflow as tf

    configs, names = configs or {}, set(names)
    scheme = scheme or default_8bit_quantize_scheme.Default8BitQuantizeScheme()
    calls = list(nodes(model))
    if not any(node.layer.name in names for node in calls):
        raise ValueError("`model` must contain at least one layer which have been annotated "
                         "with `quantize_annotate*`. There are no layers to quantize.")
    # quantize_apply's _extract_original_model, read off the unannotated graph: a layer
    # called once whose one input comes from an unannotated layer needs that layer's output
    # quantized
    count = Counter(id(node.layer) for node in calls)
    layer_quantize_map, requires_output_quantize = {}, set()
    for node in calls:
        layer = node.layer
        if layer.name not in names or layer.name in layer_quantize_map:
            continue
        if count[id(layer)] == 1:
            inbound = tf.nest.flatten(node.inbound_layers)
            if len(inbound) == 1 and inbound[0].name not in names:
                requires_output_quantize.add(inbound[0].name)
        config = configs.get(layer.name)
        if config is not None:  # the annotate wrapper's get_config / from_config
            config = annotate_mod.deserialize_keras_object(
                annotate_mod.serialize_keras_object(config),
                module_objects=vars(annotate_mod), custom_objects=None)
        layer_quantize_map[layer.name] = {"quantize_config": config}
    inputs = [producer(t) for t in model.inputs]
    for node in calls:  # the input layers that feed an annotated layer
        if node.layer.name in layer_quantize_map:
            for parent in tf.nest.flatten(node.inbound_layers):
                if any(parent is i for i in inputs):
                    layer_quantize_map[parent.name] = {}
    legacy = model.__dict__.get("use_legacy_config", _UNSET)
    try:
        transformed, layer_quantize_map = scheme.get_layout_transformer().apply(
            model, layer_quantize_map)
    finally:  # the transform marks the model for Keras's legacy config format
        if legacy is _UNSET:
            if "use_legacy_config" in model.__dict__:
                delattr(model, "use_legacy_config")
        else:
            model.use_legacy_config = legacy
    registry = scheme.get_quantize_registry()

    def wrap(layer):  # quantize_apply's _quantize
        if isinstance(layer, layer_mod.QuantizeLayer):
            if len(layer._outbound_nodes) > 1:
                return layer
            layer_config = layer.get_config()
            if layer.name not in layer_quantize_map:
                with quantize.quantize_scope():
                    return layer_mod.QuantizeLayer.from_config(layer_config)
            layer_config.update(layer_quantize_map[layer.name])
            return layer_mod.QuantizeLayer.from_config(layer_config)
        if (layer.name not in layer_quantize_map and layer.name not in requires_output_quantize) \
                or isinstance(layer, wrapper_mod.QuantizeWrapper):
            return layer
        if layer.name in requires_output_quantize:
            if not registry.supports(layer):
                return layer
            full = registry.get_quantize_config(layer)
            if not full:
                return layer
            config = config_mod.OutputOnlyConfig(full)
        else:
            config = layer_quantize_map[layer.name].get("quantize_config")
            if not config and registry.supports(layer):
                config = registry.get_quantize_config(layer)
        if not config:
            raise RuntimeError(
                f"Layer {layer.name}:{layer.__class__} is not supported. You can quantize this "
                "layer by passing a `tfmot.quantization.keras.QuantizeConfig` instance to the "
                "`quantize_annotate_layer` API.")
        return wrapper_mod.QuantizeWrapperV2(layer, config, name_prefix="quant_")

    return keras.models.clone_model(transformed, input_tensors=None, clone_function=wrap)


_UNSET = object()
