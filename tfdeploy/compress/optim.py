"""Optimizers and learning-rate schedules for fine-tuning after each compression stage.

Fine-tuning a compressed model wants a lower rate than training from scratch:
`optimizer` defaults to a tenth of the usual rate, and `WarmupCosine` ramps up
gently (so freshly pruned or quantized weights are not thrown around) and then
decays to a small floor.
"""

import math

from tfdeploy._keras import keras, tf
from tfdeploy.errors import CompressionError

OPTIMIZERS = ("adam", "adamw", "sgd", "adagrad", "rmsprop", "nadam", "adamax", "adadelta", "ftrl")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
TRAIN_RATE = {"sgd": 1e-2, "adagrad": 1e-2, "adadelta": 1.0}
FINE_TUNE_FACTOR = 0.1


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then cosine decay.

    Args:
        peak: the rate reached after warm-up.
        total_steps: the step where decay ends (at ``peak * floor``).
        warmup_steps: steps of linear warm-up. Defaults to 10% of total_steps.
        floor: final rate as a fraction of ``peak``. Defaults to 0.05.
    """

    def __init__(self, peak, total_steps, warmup_steps=None, floor=0.05):
        super().__init__()
        if not peak > 0 or int(total_steps) < 1:
            raise CompressionError(
                f"WarmupCosine needs peak > 0 and total_steps >= 1, received peak={peak!r}, "
                f"total_steps={total_steps!r}.")
        self.peak, self.total_steps = float(peak), int(total_steps)
        self.warmup_steps = int(warmup_steps if warmup_steps is not None
                                else max(1, self.total_steps // 10))
        if not 0 <= self.warmup_steps < self.total_steps:
            raise CompressionError(
                f"warmup_steps must be in [0, total_steps), received {warmup_steps!r}.")
        self.floor = float(floor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = tf.cast(max(self.warmup_steps, 1), tf.float32)
        warmup = self.peak * tf.minimum(1.0, (step + 1.0) / warm)
        span = float(max(self.total_steps - self.warmup_steps, 1))
        progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
        cosine = self.peak * (self.floor + (1 - self.floor) * 0.5 * (
            1 + tf.cos(math.pi * progress)))
        return tf.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "floor": self.floor}


def fine_tune_rate(name="adam", factor=FINE_TUNE_FACTOR):
    """The default fine-tuning rate for an optimizer: ``factor`` x its usual training rate."""
    return TRAIN_RATE.get(name, 1e-3) * factor


def schedule(kind, rate, total_steps=None, warmup_steps=None):
    """Return a learning rate (float) or schedule for ``kind`` in `SCHEDULES`."""
    if kind in (None, "constant"):
        return float(rate)
    if kind not in SCHEDULES:
        raise CompressionError(
            f"Unrecognized schedule={kind!r}. Supported schedules are: {list(SCHEDULES)} (or a "
            "keras LearningRateSchedule).")
    if not total_steps:
        raise CompressionError(f"schedule={kind!r} needs the number of training steps.")
    if kind == "cosine":
        return keras.optimizers.schedules.CosineDecay(float(rate), int(total_steps), alpha=0.05)
    return WarmupCosine(rate, total_steps, warmup_steps)


def optimizer(name="adam", learning_rate=None, lr_schedule="constant", total_steps=None):
    """Build a fresh Keras 2 optimizer for a training or fine-tuning stage.

    Args:
        name: an optimizer name in `OPTIMIZERS`, or a ``keras.optimizers.Optimizer``
            instance (a fresh copy of its configuration is returned, so one
            object can configure several stages). Defaults to "adam".
        learning_rate: the (peak) rate; None means `fine_tune_rate` (a tenth of
            the optimizer's usual training rate, e.g. 1e-4 for Adam). Defaults to None.
        lr_schedule: "constant", "cosine", "warmup_cosine" or a
            ``LearningRateSchedule``. Defaults to "constant".
        total_steps: training steps, needed by "cosine"/"warmup_cosine".

    Returns:
        A new ``keras.optimizers.Optimizer``.

    Raises:
        CompressionError: unknown name or schedule, or a non-positive rate.

    Example:
        >>> opt = optimizer("sgd", lr_schedule="warmup_cosine", total_steps=300)
    """
    if isinstance(name, keras.optimizers.Optimizer):
        config = name.get_config()
        if learning_rate is not None or lr_schedule != "constant":
            rate = learning_rate if learning_rate is not None else float(
                keras.backend.get_value(name.learning_rate)) \
                if not callable(name.learning_rate) else None
            if rate is None:
                raise CompressionError("Pass learning_rate when re-scheduling an optimizer "
                                       "whose rate is already a schedule.")
            config["learning_rate"] = _rate(rate, lr_schedule, total_steps)
        return type(name).from_config(config)
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise CompressionError(
            f"Unrecognized optimizer={name!r}. Supported optimizers are: {list(OPTIMIZERS)} (or a "
            "tf_keras optimizer instance).")
    name = name.lower()
    rate = fine_tune_rate(name) if learning_rate is None else learning_rate
    return keras.optimizers.get({"class_name": name,
                                 "config": {"learning_rate": _rate(rate, lr_schedule,
                                                                   total_steps)}})


def _rate(rate, lr_schedule, total_steps):
    if isinstance(lr_schedule, keras.optimizers.schedules.LearningRateSchedule):
        return lr_schedule
    if not isinstance(rate, (int, float)) or not rate > 0:
        raise CompressionError(f"learning_rate must be a positive number, received {rate!r}.")
    return schedule(lr_schedule, rate, total_steps)
