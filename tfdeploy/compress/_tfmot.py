"""tfmot internals tfdeploy relies on, gathered in one place (tfmot is in maintenance mode)."""


def prune_wrapper_class():
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

    return pruning_wrapper.PruneLowMagnitude


def prune_registry():
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    return prune_registry.PruneRegistry


def _default_8bit_supports(layer):
    """Whether tfmot's default 8-bit registry has a quantize config for ``layer``.

    tfmot's collaborative (prune-/cluster-preserving) registries answer True for
    every layer without trainable weights (e.g. ``Rescaling``), then fail in
    ``get_quantize_config``, which asks the default 8-bit registry. Their
    ``supports`` must also ask it.
    """
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry)

    return default_8bit_quantize_registry.Default8BitQuantizeRegistry().supports(layer)


def prune_preserve_scheme():
    """tfmot's pruning-preserving 8-bit QAT scheme, with its layer-support check fixed."""
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
    from tensorflow_model_optimization.python.core.clustering.keras import cluster_wrapper

    return cluster_wrapper.ClusterWeights
