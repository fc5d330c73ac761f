"""The search space: compression choices as keras-tuner hyperparameters, and the plan they mean.

Every choice is a ``hp.Choice`` (or ``hp.Fixed`` when the user pins it), so
Bayesian optimisation, Hyperband and random search all work on it. Settings
that only matter for one branch live in conditional scopes (the sparsity
target only exists for unstructured pruning; the export quantization only
without QAT, which always exports int8), so no two trials differ only in a
setting that has no effect.

Mixed precision: ``space={"layer_precision": {"conv1": ["int8", "float"], "dense": ["int8",
"int16x8", "float"]}}`` adds one ``precision/<layer>`` choice per named layer under QAT;
a trial's choices become the QAT stage's ``precision_map`` (its float layers stay
unannotated) and the trial exports ``quantization="auto"``, which builds that map (layers
left out stay int8). Empty by default: the default search is unchanged.
"""

from tfdeploy.errors import TuneError
from tfdeploy.export.mixed_precision import PRECISIONS

DEFAULT_SPACE = {
    "slim_ratio": [0.0, 0.25, 0.5, 0.625, 0.75],
    "sparsity_kind": ["none", "unstructured", "n_m"],
    "sparsity": [0.5, 0.7, 0.8, 0.9],
    "schedule": ["polynomial_decay", "constant"],
    "clusters": [0, 8, 16, 32],
    "qat": [True, False],
    "qat_layers": ["all", "skip_first_last"],
    "quantization": ["int8", "float16", "dynamic"],
    "learning_rate": [2e-4, 5e-4, 1e-3],
    "epochs": [1, 2],
}
# Known-good recipes a search tries first (``search(initial_points=...)``): the family of
# bench_compression.py's best hand-written plan (slim half the channels, prune half the
# weights, 16 clusters, QAT) and the quickstart's fixed recipe (80 % pruning, then QAT).
# A key left out takes the space's first value; a recipe the user's space cannot express is
# skipped.
INITIAL_POINTS = (
    {"slim_ratio": 0.5, "sparsity_kind": "unstructured", "sparsity": 0.5,
     "schedule": "polynomial_decay", "clusters": 16, "qat": True, "qat_layers": "all",
     "learning_rate": 5e-4, "epochs": 2},
    {"slim_ratio": 0.0, "sparsity_kind": "unstructured", "sparsity": 0.8,
     "schedule": "polynomial_decay", "clusters": 0, "qat": True, "qat_layers": "all",
     "learning_rate": 5e-4, "epochs": 2},
)
SPARSITY_KINDS = ("none", "unstructured", "n_m")
QUANTIZATIONS = ("int8", "float16", "dynamic")
LAYER_PRECISIONS = PRECISIONS  # what export.tflite(..., quantization="auto") builds
QAT_LAYERS = ("all", "skip_first_last")
SCHEDULES = ("polynomial_decay", "constant")


def resolve_space(space=None):
    """Merge the user's ``space`` into `DEFAULT_SPACE` and check every value.

    Args:
        space: ``{name: [values]}`` (a choice) or ``{name: value}`` (fixed) for
            any key of `DEFAULT_SPACE`. Defaults to None (the default space).

    Returns:
        ``{name: [values]}``.

    Raises:
        TuneError: an unknown key, an empty list or a value out of range.
    """
    merged = {k: list(v) for k, v in DEFAULT_SPACE.items()}
    space = dict(space or {})
    merged["layer_precision"] = _layer_precision(space.pop("layer_precision", {}))
    for key, value in space.items():
        if key not in DEFAULT_SPACE:
            raise TuneError(f"Unknown search-space key {key!r}. Known keys are: "
                            f"{sorted(DEFAULT_SPACE)}.")
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not values:
            raise TuneError(f"space[{key!r}] is empty; give at least one value.")
        merged[key] = values
    _check(merged)
    return merged


def _layer_precision(value):
    """``{layer: [precisions]}`` checked (see the module doc)."""
    if not isinstance(value, dict):
        raise TuneError("space['layer_precision'] must be {layer name: [precisions]}, e.g. "
                        f"{{'conv1': ['int8', 'float']}}; received {value!r}.")
    out = {}
    for layer, options in value.items():
        options = list(options) if isinstance(options, (list, tuple)) else [options]
        bad = [o for o in options if o not in LAYER_PRECISIONS]
        if not options or bad:
            raise TuneError(f"space['layer_precision'][{layer!r}] has {bad or 'no values'}; "
                            f"allowed values are {list(LAYER_PRECISIONS)}.")
        out[str(layer)] = options
    return out


def _check(space):
    allowed = {"sparsity_kind": SPARSITY_KINDS, "quantization": QUANTIZATIONS,
               "qat_layers": QAT_LAYERS, "schedule": SCHEDULES, "qat": (True, False)}
    for key, options in allowed.items():
        bad = [v for v in space[key] if v not in options]
        if bad:
            raise TuneError(f"space[{key!r}] has {bad}; allowed values are {list(options)}.")
    checks = {"slim_ratio": lambda v: 0.0 <= v < 1.0, "sparsity": lambda v: 0.0 < v < 1.0,
              "clusters": lambda v: v == 0 or (isinstance(v, int) and v >= 2),
              "learning_rate": lambda v: v > 0, "epochs": lambda v: isinstance(v, int) and v >= 1}
    for key, ok in checks.items():
        bad = [v for v in space[key] if not isinstance(v, (int, float)) or not ok(v)]
        if bad:
            raise TuneError(f"space[{key!r}] has invalid value(s) {bad} (slim_ratio in [0, 1), "
                            "sparsity in (0, 1), clusters 0 or >= 2, learning_rate > 0, "
                            "epochs >= 1).")


def resolve_points(points, space):
    """Check the ``initial_points`` a search starts from against ``space``.

    Args:
        points: None (the known recipes of `INITIAL_POINTS` the space can
            express) or a list of ``{name: value}`` dicts (keys of `DEFAULT_SPACE`;
            a key left out takes the space's first value).
        space: the resolved space (`resolve_space`).

    Returns:
        The list of points to try first, in order.

    Raises:
        TuneError: a user's point has an unknown key or a value outside ``space``.
    """
    if points is None:
        return [dict(p) for p in INITIAL_POINTS
                if all(v in space[k] for k, v in p.items())]
    if isinstance(points, dict) or not all(isinstance(p, dict) for p in points):
        raise TuneError("initial_points must be a list of {name: value} dicts, received "
                        f"{points!r}.")
    for point in points:
        unknown = sorted(set(point) - set(DEFAULT_SPACE))
        if unknown:
            raise TuneError(f"initial point {point} has unknown key(s) {unknown}. Known keys "
                            f"are: {sorted(DEFAULT_SPACE)}.")
        outside = {k: v for k, v in point.items() if v not in space[k]}
        if outside:
            raise TuneError(f"initial point {point} has value(s) {outside} outside the search "
                            "space; add them to `space` or change the point.")
    return [dict(p) for p in points]


def _choice(hp, name, values):
    if len(values) == 1:
        return hp.Fixed(name, values[0])
    return hp.Choice(name, values)


def declare(hp, space, hyperband=False):
    """Declare the hyperparameters of ``space`` (from `resolve_space`) on ``hp``.

    Under Hyperband the fine-tuning epochs come from the oracle
    (``tuner/epochs``), so ``epochs`` is not declared.
    """
    _choice(hp, "slim_ratio", space["slim_ratio"])
    kind = _choice(hp, "sparsity_kind", space["sparsity_kind"])
    if "unstructured" in space["sparsity_kind"]:
        with hp.conditional_scope("sparsity_kind", ["unstructured"]):
            _choice(hp, "sparsity", space["sparsity"])
            _choice(hp, "schedule", space["schedule"])
    _choice(hp, "clusters", space["clusters"])
    qat = _choice(hp, "qat", space["qat"])
    if True in space["qat"]:
        with hp.conditional_scope("qat", [True]):
            _choice(hp, "qat_layers", space["qat_layers"])
            for layer, options in space.get("layer_precision", {}).items():
                _choice(hp, f"precision/{layer}", options)
    if False in space["qat"]:
        with hp.conditional_scope("qat", [False]):
            _choice(hp, "quantization", space["quantization"])
    _choice(hp, "learning_rate", space["learning_rate"])
    if not hyperband:
        _choice(hp, "epochs", space["epochs"])
    return kind, qat


def technique(values):
    """A short name of the plan a trial's values describe, e.g. "slim+prune+cluster+qat"."""
    parts = []
    if values.get("slim_ratio"):
        parts.append("slim")
    kind = values.get("sparsity_kind", "none")
    if kind == "unstructured":
        parts.append("prune")
    elif kind == "n_m":
        parts.append("2:4")
    if values.get("clusters"):
        parts.append("cluster")
    parts.append("qat" if values.get("qat") else values.get("quantization", "int8"))
    if values.get("qat") and set(_precision_map(values).values()) - {"int8"}:
        parts.append("mixed")
    return "+".join(parts)


def _precision_map(values):
    return {k.split("/", 1)[1]: v for k, v in values.items()
            if k.startswith("precision/") and v is not None}


def plan(values):
    """Turn a trial's values into ``(stages, quantization)`` for `apply_plan` and the exporter.

    Args:
        values: the trial's hyperparameter values (``trial.hyperparameters.values``).

    Returns:
        A list of `tfdeploy.compress.Stage` and the TFLite quantization name.
    """
    from tfdeploy.compress import Select, Stage

    epochs = int(values.get("tuner/epochs") or values.get("epochs") or 1)
    rate = float(values["learning_rate"])
    stages = []
    if values.get("slim_ratio"):
        stages.append(Stage("slim", ratio=float(values["slim_ratio"]), epochs=epochs,
                            learning_rate=rate))
    kind = values.get("sparsity_kind", "none")
    if kind == "unstructured":
        stages.append(Stage("prune", target_sparsity=float(values["sparsity"]),
                            schedule=values["schedule"], epochs=epochs, learning_rate=rate))
    elif kind == "n_m":
        stages.append(Stage("n_m", n=2, m=4, epochs=epochs, learning_rate=rate))
    if values.get("clusters"):
        stages.append(Stage("cluster", n_clusters=int(values["clusters"]), epochs=epochs,
                            learning_rate=rate))
    if values.get("qat"):
        chosen = _precision_map(values)
        if chosen:  # QAT follows the map; the export builds it
            stages.append(Stage("quantize", precision_map=chosen, epochs=epochs,
                                learning_rate=rate / 2))
            return stages, "auto"
        layers = None if values.get("qat_layers", "all") == "all" else Select(
            skip_first=True, skip_last=True)
        stages.append(Stage("quantize", layers=layers, epochs=epochs, learning_rate=rate / 2))
        return stages, "int8"
    return stages, values.get("quantization", "int8")
