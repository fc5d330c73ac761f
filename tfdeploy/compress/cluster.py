"""Weight clustering: each kernel keeps at most N distinct values (shared centroids).

Clustered kernels compress very well (gzip) and stay clustered through
cluster-preserving QAT (`quantize(model, preserve="cluster")`). Fine-tune the
wrapped model with an ordinary ``fit`` (a low learning rate), then `strip`.
"""

import numpy as np

from tfdeploy.model_io import check_model
from tfdeploy._keras import keras, tfmot
from tfdeploy._walk import leaf_layers
from tfdeploy._tfmot import cluster_weights, clustering_supports
from tfdeploy.compress.graph import flatten
from tfdeploy.compress.history import record
from tfdeploy.compress.selection import resolve
from tfdeploy.compress.distribute import check_scope
from tfdeploy.compress.sparsity import kernel, model_sparsity, unwrap
from tfdeploy.compress.strip import strip
from tfdeploy.compress.wrappers import (is_clustering_wrapped, is_pruning_wrapped,
                                        is_quantization_aware)
from tfdeploy.errors import CompressionError

INITS = ("kmeans++", "density", "linear", "random")


def _init(init):
    ci = tfmot().clustering.keras.CentroidInitialization
    return {"kmeans++": ci.KMEANS_PLUS_PLUS, "density": ci.DENSITY_BASED,
            "linear": ci.LINEAR, "random": ci.RANDOM}[init]


def _why_not(n_clusters, preserve_sparsity):
    def why_not(layer):
        if not layer.weights:
            return f"{type(layer).__name__} has no weights"
        if not clustering_supports(layer):
            return f"tfmot has no clustering support for {type(layer).__name__}"
        values = kernel(layer)
        if values is None:
            return None
        values = values.ravel()
        if preserve_sparsity:
            pos, neg = np.unique(values[values > 0]).size, np.unique(values[values < 0]).size
            if min(pos, neg) < n_clusters:
                return (f"too few distinct non-zero weights ({pos} positive, {neg} negative) for "
                        f"{n_clusters} sparsity-preserving clusters")
        elif np.unique(values).size <= n_clusters:
            return f"kernel has only {np.unique(values).size} distinct weights for {n_clusters} " \
                "clusters"
        return None

    return why_not


def cluster(model, n_clusters=16, init="kmeans++", layers=None, preserve_sparsity="auto"):
    """Wrap a model for weight clustering; returns a new model, the input is untouched.

    Args:
        model: a trained, built Keras 2 Sequential or functional model (float,
            or pruned and stripped). Not a QAT model: cluster first, then
            `quantize(..., preserve="cluster")`.
        n_clusters: distinct values per kernel, at least 2. Defaults to 16.
        init: centroid initialisation: "kmeans++", "density", "linear" or
            "random". Defaults to "kmeans++".
        layers: which layers (see `Select`); None clusters every supported layer
            with more weights than clusters. Defaults to None.
        preserve_sparsity: keep zero weights zero (sparsity-preserving
            clustering); "auto" does so when at least 10% of the weights are
            zero. Sparse layers left out of clustering are then frozen during
            the fine-tune (and made trainable again by `strip`), so their
            zeros survive too. Defaults to "auto".

    Returns:
        A new ``keras.Model`` with clustering wrappers; compile, fine-tune and
        `strip` it.

    Raises:
        CompressionError: bad ``n_clusters`` or ``init``, a quantization-aware or
            already clustered model, or nothing to cluster.

    Example:
        >>> clustered = cluster(model, 16)
        >>> clustered.compile(...); clustered.fit(train_ds, epochs=1)
        >>> model = strip(clustered)      # unique_weights(model) <= 16 per kernel
    """
    model = check_model(model, graph=True)
    check_scope(model, "cluster")
    if not isinstance(n_clusters, int) or n_clusters < 2:
        raise CompressionError(f"n_clusters must be an integer >= 2, received {n_clusters!r}.")
    if init not in INITS:
        raise CompressionError(f"Unrecognized init={init!r}. Supported inits are: {list(INITS)}.")
    if is_quantization_aware(model):
        raise CompressionError(
            f"Model {model.name!r} is quantization-aware; clustering after QAT is not supported. "
            "Cluster the float model first, then apply quantize(model, preserve='cluster').")
    if is_clustering_wrapped(model):
        raise CompressionError(
            f"Model {model.name!r} is already wrapped for clustering; strip it first.")
    source = model
    if is_pruning_wrapped(model):
        model = strip(model)
    if preserve_sparsity == "auto":
        preserve_sparsity = model_sparsity(model) >= 0.1
    work = flatten(model)
    chosen, skipped = resolve(work, layers, _why_not(n_clusters, preserve_sparsity), "clustering")
    names = set(chosen)
    params = {"number_of_clusters": n_clusters, "cluster_centroids_init": _init(init),
              "preserve_sparsity": bool(preserve_sparsity)}

    # A sparse layer left out of sparsity-preserving clustering has nothing keeping its zeros
    # at zero during the fine-tune: freeze it (on the private copy) until `strip`.
    frozen = []
    if preserve_sparsity:
        for layer in work.layers:
            values = kernel(layer)
            if layer.name not in names and layer.trainable and values is not None \
                    and np.mean(values == 0) >= 0.1:
                layer.trainable = False
                frozen.append(layer.name)

    def clone_fn(layer):
        return cluster_weights(layer, **params) if layer.name in names else layer

    out = keras.models.clone_model(work, clone_function=clone_fn)
    out._tfdeploy_frozen_sparse = frozen
    record(out, "clustered", chosen, skipped, source=source,
           detail=f"{n_clusters} clusters ({init})",
           params={"n_clusters": n_clusters, "init": init,
                   "preserve_sparsity": bool(preserve_sparsity), "frozen_sparse": frozen})
    return out


def unique_weights(model):
    """``{layer: number of distinct values in its kernel}`` (read from the weights).

    For a clustering-wrapped model the clustered kernel is read; after `strip`
    the plain kernels are.
    """
    out = {}
    for layer in leaf_layers(model):
        values = kernel(layer)
        if values is not None and not isinstance(layer, keras.layers.InputLayer):
            out[unwrap(layer).name] = int(np.unique(values).size)
    return out


__all__ = ["cluster", "unique_weights", "is_clustering_wrapped", "INITS"]
