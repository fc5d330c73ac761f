"""Models: the classic CNN (and, later, MobileNet-family transfer builders)."""

from tfdeploy.models.cnn import build_cnn

__all__ = ["build_cnn"]
