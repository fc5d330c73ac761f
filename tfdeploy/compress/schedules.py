"""Pruning schedules expressed in epochs or steps, resolved to tfmot schedules.

tfmot's own schedules default to ``frequency=100``: a fit of fewer than 100
steps never prunes at all. These value objects derive the frequency from the
length of the pruning window (about ten pruning events) and snap the end step
onto a pruning turn, so the final sparsity is really reached.
"""

import math
import numbers

from tfdeploy._keras import tfmot
from tfdeploy.errors import CompressionError

UNITS = ("epoch", "step")
_EVENTS = 10


def _check_sparsity(name, value):
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise CompressionError(
            f"{name} must be a fraction in [0, 1), received {value!r}. "
            "For 80% of the weights set to zero pass 0.8.")
    return float(value)


class _Schedule:
    """Common part of the schedules: a window ``[begin, end]`` in ``unit``s."""

    def __init__(self, begin=0, end=None, unit="epoch", frequency=None):
        if unit not in UNITS:
            raise CompressionError(
                f"Unrecognized unit={unit!r}. Supported units are: {list(UNITS)}.")
        if begin < 0 or (end is not None and end <= begin):
            raise CompressionError(
                f"The pruning window must satisfy 0 <= begin < end, received begin={begin!r}, "
                f"end={end!r}.")
        if frequency is not None and int(frequency) < 1:
            raise CompressionError(f"frequency must be a positive number of steps, received "
                                   f"{frequency!r}.")
        self.begin, self.end, self.unit, self.frequency = begin, end, unit, frequency

    def _steps(self, steps_per_epoch, total_steps):
        """Return ``(begin_step, end_step, frequency)`` in optimizer steps."""
        if self.unit == "epoch" and not steps_per_epoch:
            raise CompressionError(
                "This schedule is expressed in epochs; pass steps_per_epoch (an int, or the "
                "training tf.data.Dataset) so it can be turned into optimizer steps.")
        scale = steps_per_epoch if self.unit == "epoch" else 1
        begin = int(round(self.begin * scale))
        if self.end is not None:
            end = int(round(self.end * scale))
        elif total_steps:
            end = begin + max(1, int(0.75 * (total_steps - begin)))
        else:
            end = None
        if total_steps and end is not None:
            end = min(end, total_steps - 1)
        if end is not None and end <= begin:
            raise CompressionError(
                f"The pruning window [{begin}, {end}] steps is empty; train for more steps or "
                "move `begin` earlier.")
        if self.frequency is not None:
            freq = int(self.frequency)
        elif end is not None:
            freq = max(1, min(100, (end - begin) // _EVENTS))
        else:
            freq = 10
        if end is not None:
            end = begin + ((end - begin) // freq) * freq
        return begin, end, freq

    def get_config(self):
        return dict(vars(self))

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()


class ConstantSparsity(_Schedule):
    """Prune to ``target_sparsity`` at ``begin`` and keep it there until ``end``.

    Args:
        target_sparsity: fraction of weights set to zero, in [0, 1).
        begin: start of pruning, in ``unit``s. Defaults to 0.
        end: last pruning update, in ``unit``s; None keeps pruning to the end of
            training. Defaults to None.
        unit: "epoch" or "step". Defaults to "epoch".
        frequency: steps between mask updates; None derives it from the window.
    """

    def __init__(self, target_sparsity, begin=0, end=None, unit="epoch", frequency=None):
        super().__init__(begin, end, unit, frequency)
        self.target_sparsity = _check_sparsity("target_sparsity", target_sparsity)

    @property
    def final_sparsity(self):
        return self.target_sparsity

    def to_tfmot(self, steps_per_epoch=None, total_steps=None):
        """Return the equivalent ``tfmot.sparsity.keras.ConstantSparsity``."""
        begin, end, freq = self._steps(steps_per_epoch, total_steps)
        return tfmot().sparsity.keras.ConstantSparsity(
            self.target_sparsity, begin_step=begin, end_step=-1 if end is None else end,
            frequency=freq)


class PolynomialDecay(_Schedule):
    """Raise sparsity from ``initial_sparsity`` to ``final_sparsity`` along a polynomial.

    Args:
        final_sparsity: sparsity reached at ``end``, in [0, 1).
        initial_sparsity: sparsity at ``begin``. Defaults to 0.0.
        begin: start of pruning, in ``unit``s. Defaults to 0.
        end: where ``final_sparsity`` is reached, in ``unit``s; None means 75% of
            the way through training (the rest recovers accuracy). Defaults to None.
        unit: "epoch" or "step". Defaults to "epoch".
        power: exponent of the polynomial. Defaults to 3.
        frequency: steps between mask updates; None derives it from the window.
    """

    def __init__(self, final_sparsity, initial_sparsity=0.0, begin=0, end=None, unit="epoch",
                 power=3, frequency=None):
        super().__init__(begin, end, unit, frequency)
        self.final_sparsity = _check_sparsity("final_sparsity", final_sparsity)
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        if self.initial_sparsity > self.final_sparsity:
            raise CompressionError(
                f"initial_sparsity ({initial_sparsity}) must not exceed final_sparsity "
                f"({final_sparsity}).")
        self.power = power

    def to_tfmot(self, steps_per_epoch=None, total_steps=None):
        """Return the equivalent ``tfmot.sparsity.keras.PolynomialDecay``."""
        begin, end, freq = self._steps(steps_per_epoch, total_steps)
        if end is None:
            raise CompressionError(
                "PolynomialDecay needs an end: pass `end`, or `epochs` and `steps_per_epoch` "
                "to prune() so the end can be derived.")
        return tfmot().sparsity.keras.PolynomialDecay(
            self.initial_sparsity, self.final_sparsity, begin_step=begin, end_step=end,
            power=self.power, frequency=freq)


SCHEDULES = {"constant": ConstantSparsity, "polynomial_decay": PolynomialDecay}


def get_schedule(schedule, target_sparsity):
    """Turn a schedule name or object into a schedule object."""
    if isinstance(schedule, _Schedule):
        return schedule
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise CompressionError(
                f"Unrecognized schedule={schedule!r}. Supported schedules are: "
                f"{sorted(SCHEDULES)} (or a ConstantSparsity/PolynomialDecay instance).")
        return SCHEDULES[schedule](_check_sparsity("target_sparsity", target_sparsity))
    raise CompressionError(
        f"schedule must be a name or a ConstantSparsity/PolynomialDecay, received "
        f"{type(schedule).__name__}.")


def whole_number(value, what, minimum=0):
    """``value`` as an int when it is a whole number >= ``minimum``, else CompressionError.

    ``2`` and ``2.0`` pass; ``2.5``, ``True`` and ``"2"`` are refused (a count of epochs
    or steps is never silently rounded).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
            not isinstance(value, numbers.Integral) and not float(value).is_integer()):
        hint = int(value) if isinstance(value, float) and math.isfinite(value) else minimum
        raise CompressionError(
            f"{what} must be a whole number (>= {minimum}), received {value!r}. Round it "
            f"yourself, e.g. {what}={max(hint, minimum)}.")
    if int(value) < minimum:
        raise CompressionError(f"{what} must be at least {minimum}, received {value!r}.")
    return int(value)


def steps_of(steps_per_epoch):
    """Accept a whole number or a finite ``tf.data.Dataset`` and return steps per epoch."""
    if steps_per_epoch is None:
        return None
    if isinstance(steps_per_epoch, numbers.Real):
        return whole_number(steps_per_epoch, "steps_per_epoch", 1)
    cardinality = getattr(steps_per_epoch, "cardinality", None)
    if cardinality is not None:
        n = int(cardinality())
        if n > 0:
            return n
        raise CompressionError(
            "Could not infer steps_per_epoch from the dataset (unknown or infinite "
            "cardinality); pass steps_per_epoch as an int.")
    raise CompressionError(
        f"steps_per_epoch must be an int or a tf.data.Dataset, received "
        f"{type(steps_per_epoch).__name__}.")
