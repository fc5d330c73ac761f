"""Choose which layers a compression wrapper touches, and say why the others were left out.

Every wrapper (`prune`, `prune_n_m`, `quantize`, `cluster`) takes ``layers=``:
None (every eligible layer), names or glob patterns, layer classes, a callable
``layer -> bool``, or a `Select` for regexes and the "skip first/last layer"
shortcuts. The result is always two things: the chosen names, and a dict
``{name: why it was left out}`` that ends up in `tfdeploy.compress.report`.
"""

import fnmatch
import re

from tfdeploy._keras import keras
from tfdeploy.errors import CompressionError


class Select:
    """A layer selection by name, glob, regex or type, with skip-first/last shortcuts.

    A layer is chosen when it matches any of ``names``/``regex``/``types`` (or
    when all three are None: every eligible layer), is not excluded, and is not
    the first/last eligible layer when ``skip_first``/``skip_last`` is set
    (the usual way to keep the sensitive input conv and classifier dense float
    and dense).

    Args:
        names: layer names or glob patterns ("conv*"). Defaults to None.
        regex: a regular expression matched against the whole layer name.
            Defaults to None.
        types: a layer class or tuple of classes. Defaults to None.
        exclude: names or glob patterns never to choose. Defaults to None.
        skip_first: leave out the first eligible layer. Defaults to False.
        skip_last: leave out the last eligible layer. Defaults to False.

    Example:
        >>> prune(model, 0.8, layers=Select(regex=r"conv\\d", skip_first=True))
    """

    def __init__(self, names=None, regex=None, types=None, exclude=None, skip_first=False,
                 skip_last=False):
        self.names = [names] if isinstance(names, str) else list(names or [])
        self.regex = regex
        if regex is not None:
            try:
                self._pattern = re.compile(regex)
            except re.error as exc:
                raise CompressionError(f"Invalid regex={regex!r}: {exc}.") from exc
        if types is not None and not isinstance(types, tuple):
            types = (types,)
        if types is not None and not all(isinstance(t, type) for t in types):
            raise CompressionError(f"types must be layer classes, received {types!r}.")
        self.types = types
        self.exclude = [exclude] if isinstance(exclude, str) else list(exclude or [])
        self.skip_first, self.skip_last = bool(skip_first), bool(skip_last)

    @property
    def matches_all(self):
        return not self.names and self.regex is None and self.types is None

    def matches(self, layer):
        if any(fnmatch.fnmatchcase(layer.name, p) for p in self.exclude):
            return False
        if self.matches_all:
            return True
        return (any(fnmatch.fnmatchcase(layer.name, p) for p in self.names)
                or (self.regex is not None and self._pattern.fullmatch(layer.name) is not None)
                or (self.types is not None and isinstance(layer, self.types)))

    def __repr__(self):
        args = {k: v for k, v in vars(self).items() if not k.startswith("_") and v}
        return f"Select({', '.join(f'{k}={v!r}' for k, v in args.items())})"


def _as_select(layers):
    if layers is None:
        return Select(), False
    if isinstance(layers, Select):
        return layers, not layers.matches_all
    if callable(layers) and not isinstance(layers, type):
        return layers, True
    items = layers if isinstance(layers, (list, tuple, set)) else [layers]
    names = [i for i in items if isinstance(i, str)]
    types = tuple(i for i in items if isinstance(i, type))
    other = [i for i in items if not isinstance(i, (str, type))]
    if other:
        raise CompressionError(
            f"layers must hold layer names, glob patterns or layer classes (or be a Select or a "
            f"callable), received {other!r}.")
    return Select(names=names, types=types or None), True


def weighted_layers(model):
    """The model's layers that own weights, in order (input layers left out)."""
    return [layer for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer) and layer.weights]


def resolve(model, layers, why_not, technique):
    """Apply a selection to ``model.layers``.

    Args:
        model: a flat Keras model.
        layers: anything `Select` accepts (see the module docstring).
        why_not: ``layer -> None`` when the technique can handle the layer, else
            a short reason ("Rescaling has no weights").
        technique: the word used in error messages ("pruning", "QAT", ...).

    Returns:
        ``(chosen_names, skipped)`` where ``skipped`` maps every other layer
        (input layers aside) to why it was left out.

    Raises:
        CompressionError: a name/pattern matches nothing, a layer chosen
            explicitly cannot take the technique, or nothing is chosen.
    """
    select, explicit = _as_select(layers)
    all_names = [layer.name for layer in model.layers]
    if isinstance(select, Select):
        for pattern in select.names:
            if not fnmatch.filter(all_names, pattern):
                raise CompressionError(
                    f"No layer matches {pattern!r}. Layers in this model: {all_names}.")
        if select.regex is not None and not any(select._pattern.fullmatch(n) for n in all_names):
            raise CompressionError(
                f"No layer matches regex {select.regex!r}. Layers in this model: {all_names}.")
    match = select.matches if isinstance(select, Select) else select
    candidates = [layer for layer in model.layers
                  if not isinstance(layer, keras.layers.InputLayer)]
    eligible = [layer for layer in candidates if why_not(layer) is None]
    chosen, skipped, refused = [], {}, []
    first = eligible[0].name if eligible else None
    last = eligible[-1].name if eligible else None
    for layer in candidates:
        reason = why_not(layer)
        if not match(layer):
            skipped[layer.name] = reason or "not selected"
        elif reason is not None:
            skipped[layer.name] = reason
            if explicit and layer.weights:
                refused.append(f"{layer.name} ({reason})")
        elif isinstance(select, Select) and select.skip_first and layer.name == first:
            skipped[layer.name] = "first layer skipped (skip_first=True)"
        elif isinstance(select, Select) and select.skip_last and layer.name == last:
            skipped[layer.name] = "last layer skipped (skip_last=True)"
        else:
            chosen.append(layer.name)
    if refused:
        raise CompressionError(
            f"Layer(s) selected for {technique} cannot take it: {refused}. Select other layers.")
    if not chosen:
        raise CompressionError(
            f"No layer of model {model.name!r} was selected for {technique}. Reasons: {skipped}.")
    return chosen, skipped
