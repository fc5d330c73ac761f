"""MobileNet architecture names, without TensorFlow: a recipe's ``--help`` and argument
checks use them before any model is built (``tfdeploy.models`` re-exports them)."""

from tfdeploy.errors import ModelTypeError

ARCHITECTURES = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")
_ALIASES = {"v1": "mobilenet_v1", "v2": "mobilenet_v2", "v3_small": "mobilenet_v3_small",
            "v3_large": "mobilenet_v3_large", "mobilenet": "mobilenet_v1"}


def architecture(name):
    """Normalise an architecture name (``"v2"``, ``"mobilenet_v2"``, ...) or raise."""
    key = str(name).lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in ARCHITECTURES:
        raise ModelTypeError(
            f"Unrecognized arch={name!r}. Supported architectures are: {list(ARCHITECTURES)}.")
    return key
