"""Plan memory before running out of it: parameters, activations, optimizer state.

``memory_usage = (bits_per_param × n_params) / memory_available`` is the
start; activations for a batch and, for training, gradients, optimizer slots
and the activations kept for the backward pass are added on top.

    est = estimate(model, batch_size=64, optimizer="adam")
    est.check(budget="2GiB", mode="training")   # raises MemoryBudgetError with the numbers
"""

import dataclasses
import re

import numpy as np

from tfdeploy._walk import is_graph_network, is_model, leaf_layers, nodes, producer
from tfdeploy.errors import DataError, MemoryBudgetError  # noqa: F401  (re-exported)

#: Optimizer state: float slots per trainable parameter.
OPTIMIZER_SLOTS = {"sgd": 0, "momentum": 1, "adagrad": 1, "rmsprop": 1, "adadelta": 2,
                   "adam": 2, "adamw": 2, "adamax": 2, "nadam": 2, "ftrl": 2, "lion": 1}
MODES = ("inference", "training")
_UNITS = {"": 1, "b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}


def parse_bytes(value):
    """Bytes from an int or a string such as "512MB", "2 GiB", "1.5e9"."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return int(value)
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMgGtT]?i?[bB]?)\s*", str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise DataError(f"Cannot read a memory size from {value!r}; use bytes or e.g. '512MB', "
                        "'2GiB'.")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def available_memory():
    """This machine's available RAM in bytes (``MemAvailable`` from /proc/meminfo)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _mib(n):
    return f"{n / 2 ** 20:,.1f} MiB"


@dataclasses.dataclass
class MemoryEstimate:
    """Planned memory of one model at one batch size (all sizes in bytes)."""

    batch_size: int
    params_by_dtype: dict  # dtype -> {"count": int, "bytes": int}
    param_bytes: int
    trainable_bytes: int
    activation_bytes: int  # peak live activations for one inference batch
    stored_activation_bytes: int  # every layer output, kept for the backward pass
    gradient_bytes: int
    optimizer: str
    optimizer_bytes: int
    #: layers whose activations could not be sized (``{name: why}``); the estimate leaves
    #: them out, so it is a lower bound when this is not empty.
    uncounted_layers: dict = dataclasses.field(default_factory=dict)

    @property
    def n_params(self):
        return sum(v["count"] for v in self.params_by_dtype.values())

    @property
    def inference_bytes(self):
        return self.param_bytes + self.activation_bytes

    @property
    def training_bytes(self):
        return (self.param_bytes + self.gradient_bytes + self.optimizer_bytes
                + self.stored_activation_bytes)

    def total(self, mode="inference"):
        if mode not in MODES:
            raise DataError(f"Unrecognized mode={mode!r}. Supported modes are: {list(MODES)}.")
        return self.inference_bytes if mode == "inference" else self.training_bytes

    def usage(self, budget=None, mode="inference"):
        """Share of ``budget`` (bytes or "2GiB"; default: available RAM) the plan uses."""
        budget = available_memory() if budget is None else parse_bytes(budget)
        return self.total(mode) / budget

    def check(self, budget=None, mode="inference"):
        """Raise `MemoryBudgetError` (with the numbers) unless the plan fits ``budget``.

        Returns:
            The share of the budget used.
        """
        limit = available_memory() if budget is None else parse_bytes(budget)
        need = self.total(mode)
        if need > limit:
            parts = [f"parameters {_mib(self.param_bytes)}"]
            if mode == "inference":
                parts.append(f"activations {_mib(self.activation_bytes)} "
                             f"(batch {self.batch_size})")
            else:
                parts += [f"gradients {_mib(self.gradient_bytes)}",
                          f"{self.optimizer} state {_mib(self.optimizer_bytes)}",
                          f"stored activations {_mib(self.stored_activation_bytes)} "
                          f"(batch {self.batch_size})"]
            raise MemoryBudgetError(
                f"{mode.capitalize()} needs {_mib(need)} but the budget is {_mib(limit)} "
                f"({need / limit:.0%} of it): " + ", ".join(parts) + ". Lower the batch size, "
                "prune or quantize the model, or give it more memory." + (
                    f" Not counted (unknown sizes): {sorted(self.uncounted_layers)}."
                    if self.uncounted_layers else ""))
        return need / limit

    def as_dict(self):
        out = dataclasses.asdict(self)
        out.update(n_params=self.n_params, inference_bytes=self.inference_bytes,
                   training_bytes=self.training_bytes)
        return out


def _shapes(shape):
    """A layer's output shape(s) as a list of tuples."""
    if isinstance(shape, tuple) and (not shape or not isinstance(shape[0], (tuple, list))):
        return [shape]
    if isinstance(shape, dict):
        return [tuple(s) for s in shape.values()]
    return [tuple(s) for s in shape]


def _tensor_bytes(shape, batch, itemsize):
    dims = [batch if d is None else int(d) for d in shape]
    return int(np.prod(dims)) * itemsize if dims else itemsize


def _flat(value):
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flat(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _flat(v)]
    return [value]


class _Sizer:
    """Bytes of a symbolic tensor at a batch size; names layers whose sizes are unknown."""

    def __init__(self, batch):
        self.batch, self.uncounted = batch, {}

    def __call__(self, tensor, layer):
        shape = getattr(tensor, "shape", None)
        dims = list(shape) if shape is not None and getattr(shape, "rank", 0) is not None \
            else None
        if dims is None or any(d is None for d in dims[1:]):
            self.uncounted.setdefault(
                layer.name, f"output shape {None if dims is None else tuple(dims)} has unknown "
                "dimensions besides the batch")
            return 0
        dtype = getattr(getattr(tensor, "dtype", None), "name", None) or "float32"
        try:
            itemsize = np.dtype(dtype).itemsize
        except TypeError:
            itemsize = 4
        return _tensor_bytes(dims, self.batch, itemsize)


def _graph_activations(model, sizer):
    """(peak live bytes, sum of all outputs) of a functional/Sequential graph.

    Liveness over the graph: a tensor stays live from the node that makes it to
    the last node that reads it (a skip connection keeps its source alive across
    the block, until the ``Add``/``Concatenate`` that joins it) or to the end when
    it is a model output. A nested model is a node whose own peak is added to the
    tensors live around it.
    """
    order = list(nodes(model))
    last_use = {}
    for step, node in enumerate(order):
        for t in _flat(node.keras_inputs):
            last_use[id(t)] = step
    for t in _flat(model.outputs):
        last_use[id(t)] = len(order)
    live = {}
    for t in _flat(model.inputs):
        live[id(t)] = sizer(t, producer(t, model))
    peak, stored = sum(live.values()), 0
    for step, node in enumerate(order):
        outs = {id(t): sizer(t, node.layer) for t in _flat(node.outputs)}
        inner = 0
        if is_model(node.layer) and is_graph_network(node.layer):
            inner, _ = _graph_activations(node.layer, sizer)
        mine = {id(t) for t in _flat(node.keras_inputs)} | set(outs)
        around = sum(v for k, v in live.items() if k not in mine)
        here = sum(live.get(k, 0) for k in mine) + sum(outs.values())
        peak = max(peak, around + max(here, inner))
        stored += sum(outs.values())
        live.update(outs)
        for k in [k for k in live if last_use.get(k, -1) <= step]:
            del live[k]
    return peak, stored


def _layers_activations(model, batch):
    """(peak live bytes, sum of all outputs, {uncounted layer: why})."""
    sizer = _Sizer(batch)
    if is_graph_network(model):
        peak, stored = _graph_activations(model, sizer)
        return peak, stored, sizer.uncounted
    peak = stored = 0  # a subclassed model: no graph to follow, layers in order
    for layer in leaf_layers(model):
        try:
            outputs = _flat(layer.output)
            inputs = _flat(layer.input)
        except (AttributeError, RuntimeError) as exc:
            sizer.uncounted[layer.name] = f"no symbolic input/output ({exc})".strip()
            continue
        out = sum(sizer(t, layer) for t in outputs)
        peak = max(peak, sum(sizer(t, layer) for t in inputs) + out)
        stored += out
    return peak, stored, sizer.uncounted


def _optimizer_name(optimizer):
    if optimizer is None:
        return "sgd", 0
    if isinstance(optimizer, str):
        name = optimizer.lower()
    else:
        name = type(optimizer).__name__.lower()
        if name == "sgd" and float(getattr(optimizer, "momentum", 0) or 0) > 0:
            name = "momentum"
    if name not in OPTIMIZER_SLOTS:
        raise DataError(f"Unknown optimizer {optimizer!r}; known: {sorted(OPTIMIZER_SLOTS)}.")
    return name, OPTIMIZER_SLOTS[name]


def estimate(model, batch_size=1, optimizer="adam"):
    """Estimate a Keras model's memory at ``batch_size``.

    Args:
        model: a built Keras model.
        batch_size: samples per batch. Defaults to 1.
        optimizer: name ("adam", "sgd", "momentum", "rmsprop", "adagrad", ...)
            or optimizer instance, for training state. Defaults to "adam".

    Returns:
        A `MemoryEstimate`.
    """
    if int(batch_size) < 1:
        raise DataError(f"batch_size must be positive, received {batch_size!r}.")
    by_dtype, trainable = {}, 0
    seen = set()
    for weight in model.weights:
        if id(weight) in seen:
            continue
        seen.add(id(weight))
        dtype = weight.dtype.name if hasattr(weight.dtype, "name") else str(weight.dtype)
        count = int(np.prod(weight.shape)) if len(weight.shape) else 1
        nbytes = count * np.dtype(dtype).itemsize
        entry = by_dtype.setdefault(dtype, {"count": 0, "bytes": 0})
        entry["count"] += count
        entry["bytes"] += nbytes
    for weight in model.trainable_weights:
        trainable += int(np.prod(weight.shape)) * np.dtype(weight.dtype.name).itemsize
    peak, stored, uncounted = _layers_activations(model, int(batch_size))
    name, slots = _optimizer_name(optimizer)
    return MemoryEstimate(
        batch_size=int(batch_size), params_by_dtype=by_dtype,
        param_bytes=sum(v["bytes"] for v in by_dtype.values()), trainable_bytes=trainable,
        activation_bytes=peak, stored_activation_bytes=stored, gradient_bytes=trainable,
        optimizer=name, optimizer_bytes=slots * trainable, uncounted_layers=uncounted)


def check_memory(model, budget=None, batch_size=1, mode="inference", optimizer="adam"):
    """Estimate and check in one call; returns the `MemoryEstimate` when it fits.

    Raises:
        MemoryBudgetError: with the breakdown when it does not fit.
    """
    est = estimate(model, batch_size=batch_size, optimizer=optimizer)
    est.check(budget, mode=mode)
    return est
