"""Physical structured pruning ("slimming"): remove whole filters/units/channels.

Unstructured zeros make a file compress well but do not make dense kernels
faster. `slim` ranks the output channels of Conv2D / Dense layers (and the
DepthwiseConv2D channels that follow them) by weight norm, or by the zeros a
previous magnitude pruning left, drops the weakest ``ratio`` of them and
rebuilds a genuinely smaller dense Keras model: every downstream layer
(BatchNorm, DepthwiseConv2D, pooling, the Dense after a Flatten, ...) is
sliced to match. Tensors joined by ``Add``/``Multiply``/... share one channel
mask (MobileNetV2/V3 inverted-residual ``Add``s, V3's squeeze-excite
``Multiply``); scalar element-wise TensorFlow ops (V3's hard-swish) pass
channels through. Layers whose channels feed a model output keep them all.
"""

import warnings

import numpy as np

from tfdeploy.model_io import check_model
from tfdeploy._keras import keras
from tfdeploy._walk import leaf_layers, nodes
from tfdeploy.compress.calibrate import recalibrate_batchnorm
from tfdeploy.compress.graph import flatten, rebuild
from tfdeploy.compress.history import record
from tfdeploy.compress.selection import resolve
from tfdeploy.compress.distribute import check_scope
from tfdeploy.compress.strip import strip
from tfdeploy.compress.wrappers import is_pruning_wrapped, is_quantization_aware
from tfdeploy.errors import CompressionError, SlimWarning

CRITERIA = ("l1", "l2", "mask")
L = keras.layers
_PRODUCERS = (L.Conv2D, L.Dense)
_PASS = (L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.Dropout, L.SpatialDropout2D,
         L.GaussianNoise, L.GaussianDropout, L.MaxPooling2D, L.AveragePooling2D,
         L.GlobalAveragePooling2D, L.GlobalMaxPooling2D, L.ZeroPadding2D, L.Cropping2D,
         L.UpSampling2D, L.ActivityRegularization, L.MaxPooling1D, L.AveragePooling1D,
         L.GlobalAveragePooling1D, L.GlobalMaxPooling1D)
_MERGE = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)


class _Spaces:
    """Union-find over channel spaces (the last axis of a tensor)."""

    def __init__(self):
        self.parent = []

    def new(self):
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, s):
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a, b):
        self.parent[self.find(a)] = self.find(b)


def _producer_kind(layer):
    if type(layer) is L.Conv2D or (isinstance(layer, L.Conv2D) and not isinstance(
            layer, (L.Conv2DTranspose, L.SeparableConv2D, L.DepthwiseConv2D))):
        return "conv" if getattr(layer, "groups", 1) == 1 else None
    if isinstance(layer, L.Dense):
        return "dense"
    return None


def _why_not(layer):
    if _producer_kind(layer) is None:
        return f"{type(layer).__name__} has no filters/units to remove"
    return None


#: TensorFlow ops (``TFOpLambda`` layers, e.g. MobileNetV3's hard-sigmoid ``relu6(x + 3) / 6``)
#: that act on each channel alike when every other argument is a scalar.
_ELEMENTWISE_OPS = ("__operators__.add", "math.add", "math.subtract", "__operators__.sub",
                    "math.multiply", "math.truediv", "math.divide", "nn.relu", "nn.relu6",
                    "math.sigmoid", "nn.silu", "nn.swish", "math.tanh", "nn.elu")


def _is_scalar_elementwise(layer, node):
    if type(layer).__name__ != "TFOpLambda" or len(node.keras_inputs) != 1:
        return False
    if getattr(layer, "symbol", None) not in _ELEMENTWISE_OPS:
        return False
    tensors = {id(t) for t in node.keras_inputs}
    others = [a for a in list(node.call_args) + list(node.call_kwargs.values())
              if id(a) not in tensors and a is not None and not isinstance(a, str)]
    return all(isinstance(a, (int, float)) or (hasattr(a, "shape") and np.ndim(a) == 0)
               for a in others)


def _is_rescaling_scalar(layer):
    return isinstance(layer, L.Rescaling) and np.ndim(layer.scale) == 0 and \
        np.ndim(layer.offset) == 0


def _analyse(model):
    """Pass 1: channel space of every tensor, producers per space, unsupported consumers."""
    spaces = _Spaces()
    info = {}  # id(tensor) -> ("space", s) | ("flat", s, positions)
    frozen, producers, bad, layer_io = set(), {}, [], {}
    for t in model.inputs:
        s = spaces.new()
        frozen.add(s)
        info[id(t)] = ("space", s)
    for node in nodes(model):
        layer = node.layer
        if layer.name in layer_io:
            raise CompressionError(
                f"Layer {layer.name!r} is called more than once (a shared layer); slim cannot "
                "give each call its own channels. Use a model without shared layers.")
        ins = [info[id(t)] for t in node.keras_inputs]
        outs = node.outputs if isinstance(node.outputs, (list, tuple)) else [node.outputs]
        kind = _producer_kind(layer)
        if kind is not None:
            s = spaces.new()
            producers.setdefault(s, []).append(layer)
            out = ("space", s)
        elif isinstance(layer, _PASS) or _is_rescaling_scalar(layer) or isinstance(
                layer, (L.BatchNormalization, L.DepthwiseConv2D)) or \
                _is_scalar_elementwise(layer, node):
            out = ins[0]
            if isinstance(layer, L.BatchNormalization) and layer.axis not in (
                    [-1], [len(node.keras_inputs[0].shape) - 1]):
                bad.append((ins[0], layer, "BatchNormalization over a non-channel axis"))
            if isinstance(layer, L.DepthwiseConv2D) and layer.depth_multiplier != 1:
                bad.append((ins[0], layer, "DepthwiseConv2D with depth_multiplier != 1"))
                out = ("space", spaces.new())
                frozen.add(out[1])
        elif isinstance(layer, _MERGE):
            heads = [i for i in ins if i[0] == "space"]
            if len(heads) != len(ins):
                bad.append((ins[0], layer, "merging flattened tensors"))
            for other in heads[1:]:
                spaces.union(other[1], heads[0][1])
            out = heads[0] if heads else ("space", spaces.new())
        elif isinstance(layer, L.Flatten):
            shape = node.keras_inputs[0].shape
            positions = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
            out = ("flat", ins[0][1], positions) if ins[0][0] == "space" else ins[0]
        else:
            for i in ins:
                bad.append((i, layer, f"{type(layer).__name__} is not supported by slim"))
            out = ("space", spaces.new())
            frozen.add(out[1])
        layer_io[layer.name] = (ins[0] if ins else None, out)
        for t in outs:
            info[id(t)] = out
    for t in model.outputs:
        frozen.add(info[id(t)][1])
    return spaces, frozen, producers, bad, layer_io


def _channel_scores(layer, criterion):
    """One score per output channel of a Conv2D/Dense (higher is kept)."""
    kernel = layer.get_weights()[0]
    flat = kernel.reshape(-1, kernel.shape[-1])
    if criterion == "l2":
        score = np.sqrt(np.sum(flat ** 2, axis=0))
    else:
        score = np.sum(np.abs(flat), axis=0)
    if criterion == "mask":
        score = np.count_nonzero(flat, axis=0) + score / (score.max() + 1e-12)
    mean = float(np.mean(score))
    return score / mean if mean > 0 else score


def _flat_index(keep, channels, positions):
    keep = np.asarray(keep)
    return (np.arange(positions)[:, None] * channels + keep[None, :]).reshape(-1)


def _kept(n, ratio, divisor):
    """Channels kept of ``n``: ``n - round(n * ratio)``, then (``divisor``) the nearest
    multiple of it, at least one multiple, never more than ``n``."""
    keep = max(1, n - int(round(n * float(ratio))))
    if divisor and n > divisor:
        keep = min(n, max(divisor, int(round(keep / divisor)) * divisor))
    return keep


def slim(model, ratio=0.5, criterion="l1", layers=None, calibration_data=None, divisor=None):
    """Remove the weakest ``ratio`` of the channels of each Conv2D/Dense; returns a smaller model.

    The input model is untouched. Fine-tune the result (compile + fit) to
    recover accuracy. Pruning-wrapped models are stripped first; with
    ``criterion="mask"`` the channels with the most zeros (from an earlier
    magnitude pruning) go first.

    Args:
        model: a built Keras 2 Sequential or functional model (nested allowed).
        ratio: fraction of channels removed per layer, in (0, 1). Defaults to 0.5.
        criterion: "l1" or "l2" filter norm, or "mask" (fewest non-zeros).
            Defaults to "l1".
        layers: which Conv2D/Dense layers may lose channels (see `Select`);
            None takes all. A layer whose output reaches a model output, or that
            is joined by ``Add`` to a layer not chosen, keeps all channels.
            Defaults to None.
        calibration_data: inputs (``tf.data.Dataset`` or array, e.g. the training
            set) to re-estimate the moving statistics of every BatchNormalization
            layer of the slimmed model (`recalibrate_batchnorm`). Removing input
            channels changes what each layer sees, and the statistics recorded on
            the full model no longer fit: a 50 % slimmed MobileNetV2 predicted
            the same class for every image, and a fine-tune with BatchNorm in
            inference mode (a transfer base) cannot repair it. Without it, a
            model with BatchNormalization gets a `SlimWarning`. Defaults to None.
        divisor: keep a multiple of this many channels per layer (the nearest
            one, at least one multiple; layers of at most ``divisor`` channels
            keep what ``ratio`` gives). Integer kernels work on blocks of channels:
            XNNPACK's int8 convolutions on x86 pad them to 8, so a layer left
            with 5 or 10 channels computes 8 or 16. None keeps exactly
            ``ratio``. Defaults to None.

    Returns:
        A new, smaller ``keras.Model``. ``model._tfdeploy_slim`` maps each
        slimmed layer to ``(channels_before, channels_after)``.

    Raises:
        CompressionError: ratio outside (0, 1), unknown criterion, a QAT model,
            or a layer between slimmed layers that slim cannot rewrite (named).

    Example:
        >>> small = slim(model, 0.5, calibration_data=x_train)
        >>> small.compile(...); small.fit(train_ds, epochs=2)
    """
    model = check_model(model, graph=True)
    check_scope(model, "slim")
    if divisor is not None and (isinstance(divisor, bool) or not isinstance(divisor, int)
                                or divisor < 1):
        raise CompressionError(
            f"divisor must be a positive integer (e.g. 8) or None, received {divisor!r}.")
    if not isinstance(ratio, (int, float)) or not 0.0 < float(ratio) < 1.0:
        raise CompressionError(
            f"ratio must be a fraction in (0, 1) of the channels to remove, received {ratio!r}. "
            "For half of the filters pass 0.5.")
    if criterion not in CRITERIA:
        raise CompressionError(
            f"Unrecognized criterion={criterion!r}. Supported criteria are: {list(CRITERIA)}.")
    if is_quantization_aware(model):
        raise CompressionError(
            f"Model {model.name!r} is quantization-aware; slim the float model, then apply QAT.")
    source = model
    if is_pruning_wrapped(model):
        model = strip(model)
    work = flatten(model)
    chosen, skipped = resolve(work, layers, _why_not, "slimming")
    spaces, frozen, producers, bad, layer_io = _analyse(work)
    frozen_roots = {spaces.find(s) for s in frozen}
    groups = {}
    for s, prods in producers.items():
        groups.setdefault(spaces.find(s), []).extend(prods)
    keep = {}
    for root, prods in groups.items():
        names = [p.name for p in prods]
        if root in frozen_roots:
            for n in names:
                if n in chosen:
                    skipped[n] = "its channels reach a model output"
            continue
        unchosen = [n for n in names if n not in chosen]
        if unchosen:
            for n in names:
                if n in chosen:
                    skipped[n] = f"shares channels (Add/merge) with unselected {unchosen}"
            continue
        score = sum(_channel_scores(p, criterion) for p in prods)
        n = score.size
        n_keep = _kept(n, ratio, divisor)
        keep[root] = np.sort(np.argsort(-score, kind="stable")[:n_keep])
    for tensor_info, layer, why in bad:
        if spaces.find(tensor_info[1]) in keep:
            raise CompressionError(
                f"slim cannot rewrite layer {layer.name!r} ({type(layer).__name__}): {why}. Its "
                "input channels would be removed. Leave the layers feeding it out with "
                "layers=Select(exclude=[...]), or restructure the model.")

    def keep_of(tensor_info):
        if tensor_info is None:
            return None
        return keep.get(spaces.find(tensor_info[1]))

    pending, sizes = {}, {}

    def replace(layer):
        io = layer_io.get(layer.name)
        if io is None or not layer.weights:
            return None
        (in_info, out_info) = io
        in_keep, out_keep = keep_of(in_info), keep_of(out_info)
        if in_keep is not None and in_info[0] == "flat":
            channels = int(layer.get_weights()[0].shape[0]) // in_info[2]
            in_keep = _flat_index(in_keep, channels, in_info[2])
        if in_keep is None and out_keep is None:
            return None
        weights = layer.get_weights()
        config = layer.get_config()
        kind = _producer_kind(layer)
        if kind is not None:
            kernel = weights[0]
            if in_keep is not None:
                kernel = np.take(kernel, in_keep, axis=-2)
            if out_keep is not None:
                kernel = np.take(kernel, out_keep, axis=-1)
                config["filters" if kind == "conv" else "units"] = int(out_keep.size)
                sizes[layer.name] = (int(weights[0].shape[-1]), int(out_keep.size))
            new_weights = [kernel] + [w if out_keep is None else w[out_keep] for w in weights[1:]]
        elif isinstance(layer, L.DepthwiseConv2D):
            new_weights = [np.take(weights[0], in_keep, axis=2)] + [w[in_keep] for w in weights[1:]]
            sizes[layer.name] = (int(weights[0].shape[2]), int(in_keep.size))
        elif isinstance(layer, L.BatchNormalization):
            new_weights = [w[in_keep] for w in weights]
        else:
            raise CompressionError(
                f"slim cannot resize layer {layer.name!r} ({type(layer).__name__}).")
        new = type(layer).from_config(config)
        pending[layer.name] = (new, new_weights)
        return new

    out = rebuild(work, replace)
    for new, new_weights in pending.values():
        new.set_weights(new_weights)
    slimmed = [n for n in chosen if n in sizes]
    norms = [layer.name for layer in out.layers
             if isinstance(layer, L.BatchNormalization)] if slimmed else []
    recalibrated = []
    if norms and calibration_data is not None:
        recalibrated = recalibrate_batchnorm(out, calibration_data)
    elif norms:
        warnings.warn(SlimWarning(
            f"slim removed channels in front of {len(norms)} BatchNormalization layer(s) (e.g. "
            f"{norms[:3]}) whose moving statistics were recorded on the full model and no "
            "longer fit their inputs (a 50 % slimmed MobileNetV2 predicted one class for every "
            "image). Pass calibration_data=train_images (or a tf.data.Dataset) to re-estimate "
            "them, or call tfdeploy.compress.recalibrate_batchnorm(model, data)."), stacklevel=2)
    object.__setattr__(out, "_tfdeploy_slim", dict(sizes))  # plain dict, not tracked by Keras
    detail = f"{float(ratio):.0%} of channels by {criterion}"
    if norms:
        detail += (f"; BatchNorm statistics re-estimated ({len(recalibrated)} layers)"
                   if recalibrated else "; BatchNorm statistics NOT re-estimated (stale)")
    record(out, "slimmed", slimmed, skipped, source=source, detail=detail,
           params={"ratio": float(ratio), "criterion": criterion, "divisor": divisor,
                   "batchnorm_recalibrated": len(recalibrated),
                   "widths": {name: list(pair) for name, pair in sizes.items()}})
    return out


def channel_widths(model):
    """``{layer: output channels}`` for every Conv2D / Dense / DepthwiseConv2D of ``model``."""
    out = {}
    for layer in leaf_layers(model):
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, L.DepthwiseConv2D):
            out[inner.name] = int(inner.depthwise_kernel.shape[2] * inner.depth_multiplier)
        elif _producer_kind(inner) is not None:
            out[inner.name] = int(inner.kernel.shape[-1])
    return out
