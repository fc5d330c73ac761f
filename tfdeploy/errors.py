"""Exception types raised by tfdeploy.

Every class subclasses a built-in exception, so callers can catch either the
specific tfdeploy type or the built-in (``except ValueError``).
"""


class TfdeployError(Exception):
    """Base class of every error tfdeploy raises on purpose."""


class KerasVersionError(TfdeployError, ImportError):
    """Keras 3 was found where Keras 2 (``tf_keras``) is required."""


class ModelTypeError(TfdeployError, TypeError, ValueError):
    """The object passed is not a model of the expected kind."""


class DataError(TfdeployError, ValueError):
    """A data directory or dataset is missing, empty or malformed."""


class EmptyBatchError(DataError):
    """A batch with no samples was given where at least one is needed."""


class TextDataError(DataError):
    """Text data that cannot be read: missing columns, empty files, bad encodings, bad labels."""


class InvalidInputError(TfdeployError, ValueError):
    """An input does not fit the signature it was sent to (name, dtype or shape)."""


class CompressionError(TfdeployError, ValueError):
    """A compression setting is invalid or cannot be applied to this model."""


class ExportError(TfdeployError, RuntimeError):
    """An artifact could not be written."""


class ArtifactError(TfdeployError, ValueError):
    """An artifact on disk is missing, corrupt or of an unknown format."""


class VerificationError(TfdeployError, AssertionError):
    """An exported artifact disagrees with its reference beyond tolerance.

    ``failures`` holds one entry per failing check.
    """

    def __init__(self, message, failures=None):
        super().__init__(message)
        self.failures = list(failures or [])


class MissingDependencyError(TfdeployError, ImportError):
    """An optional dependency is not installed."""


class MemoryBudgetError(TfdeployError, MemoryError):
    """The planned memory does not fit the stated budget (the message gives the numbers)."""


class TuneError(TfdeployError, ValueError):
    """A search setting is invalid (objective, budget, space, tuner, distributed role)."""


class DistributionError(CompressionError):
    """A compression technique cannot run under the active ``tf.distribute`` strategy."""


class UnsupportedLayerError(ModelTypeError):
    """A layer cannot be bridged between Keras 3 and Keras 2 (``layer``/``class_name`` say
    which)."""

    def __init__(self, message, layer=None, class_name=None):
        super().__init__(message)
        self.layer = layer
        self.class_name = class_name


class RecipeNotFoundError(TfdeployError, LookupError):
    """No recipe of that name exists in ``tfdeploy.recipes``."""


class WeightsUnavailableError(TfdeployError, FileNotFoundError):
    """Pretrained weights could not be found locally nor downloaded (the message names the file)."""


class QuantizationFallbackWarning(UserWarning):
    """Some layers stay float during QAT (tfmot has no config for them); the report names them."""


class SlimWarning(UserWarning):
    """`slim` left BatchNormalization statistics stale (no ``calibration_data`` to re-estimate)."""


class DeliveryError(TfdeployError, ConnectionError):
    """Alerts could not be delivered to a sink (a webhook) within its retries; the message
    names the sink and how many events are still pending."""
