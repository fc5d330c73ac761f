"""Helpers shared by the export/verify/bench commands (not a command: leading underscore)."""

import os


def image_split(directory, split):
    """``directory/split`` when it exists (a train/test tree), else ``directory``."""
    candidate = os.path.join(directory, split)
    return candidate if os.path.isdir(candidate) else directory


def dataset_for(directory, input_shape, split="test"):
    """An image dataset shaped for a model input ``(H, W, C)``."""
    from tfdeploy.data import image_dataset

    height, width, channels = input_shape
    return image_dataset(image_split(directory, split), image_size=(height, width),
                         color_mode="grayscale" if channels == 1 else "rgb")


def input_shape_of(runner_or_model):
    """``(H, W, C)`` of the first input of a runner or Keras model."""
    if hasattr(runner_or_model, "layers"):
        return tuple(int(d) for d in runner_or_model.inputs[0].shape[1:])
    _, shape, _ = runner_or_model.inputs[0]
    return tuple(int(d) for d in shape[1:])
