"""Old import paths of names that moved: they keep working for one release, with a warning.

A package whose names moved ends with::

    __getattr__ = moved(__name__, {"load_model": "tfdeploy.model_io"})

so ``from tfdeploy.bridge import load_model`` still gives the very same function, after a
`DeprecationWarning` naming the new path. The new home is imported by name, on first use
of the old path only: an old path never makes the package that lost the name import its
new home (which may import that package: `tfdeploy.model_io` calls `tfdeploy.bridge` to
convert Keras 3 files), so the house's import graph stays free of loops.
"""

import importlib
import warnings

#: the release in which the old paths stop working
REMOVED_IN = "0.2.0"


def moved(module_name, names, stacklevel=2):
    """A module ``__getattr__`` serving ``names`` (``{old name: new module}``) with a warning.

    Args:
        module_name: the module losing the names (its ``__name__``).
        names: ``{name: dotted name of the module that holds it now}``.
        stacklevel: where the warning points; 2 is the caller of the returned
            function (3 when a module's own ``__getattr__`` calls it). Defaults to 2.

    Returns:
        A function for the module's ``__getattr__`` (PEP 562); other names raise
        ``AttributeError`` as usual.
    """
    names = dict(names)

    def __getattr__(name):
        if name not in names:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        target = names[name]
        warnings.warn(
            f"{module_name}.{name} moved to {target}.{name}; import it from there "
            f"(`from {target} import {name}`). The old path is removed in tfdeploy "
            f"{REMOVED_IN}.", DeprecationWarning, stacklevel=stacklevel)
        return getattr(importlib.import_module(target), name)

    __getattr__.moved = names
    return __getattr__
