"""The one JSON writer: indented, atomic, and at ease with numpy values.

Used for command and recipe ``--json`` output, tuner records and model cards::

    write_json("results.json", {"accuracy": np.float32(0.98), "sizes": np.arange(3)})
"""

import json
import os

from tfdeploy._atomic import atomic_file


def plain(value):
    """JSON stand-in for what ``json`` cannot write: numpy scalars and arrays become numbers
    and lists, a class its name, anything else its ``str``."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, type):
        return value.__name__
    return str(value)


def write_json(path, payload, indent=2):
    """Write ``payload`` to ``path`` as indented JSON with a final newline, atomically.

    The parent directory is created; a reader never sees a half-written file.

    Args:
        path: the file to write.
        payload: anything ``json`` writes; numpy values and other objects go
            through `plain`.
        indent: spaces per level. Defaults to 2.

    Returns:
        ``path``.
    """
    path = os.fspath(path)
    with atomic_file(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=indent, default=plain)
            f.write("\n")
    return path
