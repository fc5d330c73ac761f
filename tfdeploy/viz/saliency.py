"""Explain predictions of any Keras image model: integrated gradients, Grad-CAM, agreement.

    attr = integrated_gradients(model, images)            # (n, h, w, c), sums to f(x) - f(0)
    cam = grad_cam(model, images)                          # (n, h, w) in [0, 1]
    saliency_agreement(attribution_map(attr_float), attribution_map(attr_int8))
    # {"spearman": 0.93, "topk_overlap": 0.81}: did compression change what the model looks at?

Works on plain, pruned, quantization-aware (tfmot fake-quant passes gradients
straight through) and nested transfer models (a MobileNet base inside a
functional model: Grad-CAM uses the base's output).
"""

import weakref

import numpy as np

from tfdeploy._keras import keras, tf
from tfdeploy.errors import DataError, ModelTypeError


def _output(result):
    if isinstance(result, dict):
        return result["probabilities"] if "probabilities" in result else next(iter(result.values()))
    if isinstance(result, (list, tuple)):
        return result[0]
    return result


def _images(images):
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise DataError(f"images must be a batch (n, height, width, channels), received shape "
                        f"{x.shape}; add a batch axis with x[None] for one image.")
    return x


def _targets(model, x, target):
    if target is None:
        return np.argmax(_output(model(x, training=False)).numpy(), axis=-1)
    target = np.broadcast_to(np.asarray(target, dtype=np.int64), (len(x),))
    return target


def integrated_gradients(model, images, target=None, baseline=None, steps=50, batch_size=128):
    """Integrated gradients of the target class score with respect to the input pixels.

    Riemann trapezoid sum over ``steps`` intervals on the straight path from
    ``baseline`` to each image; attributions sum to about
    ``f(image)[target] - f(baseline)[target]`` (the completeness axiom).

    Args:
        model: a Keras image model (output: class scores or probabilities).
        images: array ``(n, h, w, c)`` in the model's input units (raw pixels for
            tfdeploy's CNN).
        target: class index (int or one per image); None uses the predicted class.
        baseline: array broadcastable to one image; None uses zeros (black).
        steps: path intervals. Defaults to 50.
        batch_size: interpolated inputs per forward/backward pass. Defaults to 128.

    Returns:
        Attributions, an array shaped like ``images``.
    """
    x = _images(images)
    if int(steps) < 1:
        raise DataError(f"steps must be >= 1, received {steps!r}.")
    base = np.zeros_like(x[0]) if baseline is None else np.broadcast_to(
        np.asarray(baseline, np.float32), x.shape[1:])
    targets = _targets(model, x, target)
    alphas = np.linspace(0.0, 1.0, int(steps) + 1, dtype=np.float32)
    weights = np.full(len(alphas), 1.0 / steps, dtype=np.float32)
    weights[0] = weights[-1] = 0.5 / steps
    path_grads = _path_gradients(model)
    out = np.zeros_like(x)
    for i in range(len(x)):
        diff = x[i] - base
        total = np.zeros_like(x[i])
        for start in range(0, len(alphas), batch_size):
            a = alphas[start:start + batch_size]
            path = tf.convert_to_tensor(base[None] + a[:, None, None, None] * diff[None])
            grads = path_grads(path, tf.constant(int(targets[i]))).numpy()
            total += np.tensordot(weights[start:start + batch_size], grads, axes=1)
        out[i] = diff * total
    return out


_COMPILED = weakref.WeakKeyDictionary()


def _path_gradients(model):
    """A compiled ``(inputs, class) -> d score / d inputs`` for ``model``, traced once per
    model and input shape (kept while the model lives)."""
    if model in _COMPILED:
        return _COMPILED[model]
    ref = weakref.ref(model)  # the cache must not keep the model alive

    @tf.function(reduce_retracing=True)
    def gradients(path, target):
        with tf.GradientTape() as tape:
            tape.watch(path)
            score = tf.gather(_output(ref()(path, training=False)), target, axis=1)
        return tape.gradient(score, path)

    _COMPILED[model] = gradients
    return gradients


def attribution_map(attributions):
    """Collapse ``(n, h, w, c)`` attributions to ``(n, h, w)`` by summing channels (signed)."""
    a = np.asarray(attributions)
    return a.sum(axis=-1) if a.ndim == 4 else a


def _conv_layer(model, layer):
    if layer is not None:
        return model.get_layer(layer) if isinstance(layer, str) else layer
    spatial = []
    for candidate in reversed(model.layers):
        shape = getattr(candidate, "output_shape", None)
        if isinstance(shape, list):
            shape = shape[0]
        if shape is not None and len(shape) == 4 \
                and not isinstance(candidate, keras.layers.InputLayer):
            if (shape[1] or 2) > 1 or (shape[2] or 2) > 1:
                return candidate
            spatial.append(candidate)
    if spatial:  # only 1x1 maps (a small input to a deep net): coarse, but defined
        return spatial[0]
    raise ModelTypeError(
        f"Grad-CAM needs a layer with a 4-D (n, h, w, channels) output in model "
        f"{model.name!r}; none was found among its top-level layers. Pass layer=<name>.")


def _outer_output(layer):
    """The layer's output tensor in the model that calls it (a nested model's last call)."""
    if isinstance(layer, keras.Model) and layer.inbound_nodes:
        return layer.inbound_nodes[-1].outputs  # not .output: the nested model's own graph
    return layer.output


def grad_cam(model, images, target=None, layer=None):
    """Grad-CAM heatmaps: the target class's gradient-weighted activations of a conv layer.

    Args:
        model: a Keras image model.
        images: array ``(n, h, w, c)``.
        target: class index (int or one per image); None uses the predicted class.
        layer: the conv layer (name or layer). None picks the last top-level layer
            with a spatial 4-D output (the last conv of the CNN, ``out_relu`` of
            MobileNetV2, the base model of a transfer model).

    Returns:
        Heatmaps ``(n, h, w)`` resized to the input, each scaled to [0, 1].
    """
    x = _images(images)
    conv = _conv_layer(model, layer)
    grad_model = keras.Model(model.inputs, [_outer_output(conv), _output(model.outputs)])
    targets = _targets(model, x, target)
    xt = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        maps, preds = grad_model(xt, training=False)
        preds = _output(preds)
        score = tf.gather(preds, targets, axis=1, batch_dims=1)
    grads = tape.gradient(score, maps)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1))[..., None]
    cam = tf.image.resize(cam, x.shape[1:3], method="bilinear")[..., 0].numpy()
    peak = cam.reshape(len(x), -1).max(axis=1)
    return cam / np.where(peak > 0, peak, 1.0)[:, None, None]


def saliency_agreement(maps_a, maps_b, k=0.1):
    """How much two models' saliency maps agree, averaged over images.

    Args:
        maps_a: array ``(n, h, w)`` (e.g. `attribution_map` of a model's
            integrated gradients, or Grad-CAM maps).
        maps_b: array of the same shape for the other model, on the same images.
        k: share of pixels in the top-k overlap. Defaults to 0.1.

    Returns:
        ``{"spearman": mean rank correlation of the maps (1 = same ordering of
        pixels, 0 = unrelated), "topk_overlap": mean share of the top-k pixels by
        |saliency| that both maps pick (1 = same pixels; chance ≈ k)}``.
    """
    from scipy.stats import spearmanr

    a, b = np.asarray(maps_a, np.float64), np.asarray(maps_b, np.float64)
    if a.shape != b.shape or a.ndim != 3:
        raise DataError(f"saliency maps must both be (n, h, w); received {a.shape} and "
                        f"{b.shape}.")
    if not 0 < k <= 1:
        raise DataError(f"k must be in (0, 1], received {k!r}.")
    top = max(1, int(round(k * a[0].size)))
    rho, overlap = [], []
    for ma, mb in zip(a.reshape(len(a), -1), b.reshape(len(b), -1)):
        if np.ptp(ma) == 0 or np.ptp(mb) == 0:
            rho.append(1.0 if np.array_equal(ma, mb) else 0.0)
        else:
            rho.append(float(spearmanr(ma, mb)[0]))
        ta = set(np.argsort(-np.abs(ma), kind="stable")[:top])
        tb = set(np.argsort(-np.abs(mb), kind="stable")[:top])
        overlap.append(len(ta & tb) / top)
    return {"spearman": float(np.mean(rho)), "topk_overlap": float(np.mean(overlap))}


def explain(models, images, method="integrated_gradients", target=None, steps=50, k=0.1):
    """Saliency maps of several models on the same images, and their agreement with the first.

    Args:
        models: ``{name: keras model}``, the float (reference) model first.
        images: array ``(n, h, w, c)``.
        method: "integrated_gradients" or "grad_cam". Defaults to integrated gradients.
        target: class per image; None uses the reference model's predicted class
            (every model explains the same class).
        steps: integrated-gradients steps. Defaults to 50.
        k: top-k share for `saliency_agreement`. Defaults to 0.1.

    Returns:
        ``{"method", "maps": {name: (n, h, w)}, "scores": {name: agreement with the
        first model}, "targets": [class per image]}``.
    """
    if method not in ("integrated_gradients", "grad_cam"):
        raise DataError(f"Unrecognized method={method!r}. Supported methods are: "
                        "['integrated_gradients', 'grad_cam'].")
    if not models:
        raise DataError("explain needs at least one model.")
    x = _images(images)
    reference = next(iter(models.values()))
    targets = _targets(reference, x, target)
    maps = {}
    for name, model in models.items():
        if method == "grad_cam":
            maps[name] = grad_cam(model, x, targets)
        else:
            maps[name] = attribution_map(integrated_gradients(model, x, targets, steps=steps))
    first = next(iter(maps.values()))
    scores = {name: saliency_agreement(first, m, k) for name, m in maps.items()}
    return {"method": method, "maps": maps, "scores": scores, "targets": targets.tolist()}
