"""SavedModel export in TF Serving's layout: ``BASE/NAME/VERSION/``."""

import os

from tfdeploy._keras import check_model, tf
from tfdeploy.export._atomic import atomic_directory
from tfdeploy.errors import ExportError

INPUT_NAME = "images"


def versions(base_path):
    """Return the sorted integer version directories under ``base_path``."""
    if not os.path.isdir(base_path):
        return []
    return sorted(int(d) for d in os.listdir(base_path)
                  if d.isdigit() and os.path.isdir(os.path.join(base_path, d)))


def _is_classifier(model):
    shape = model.outputs[0].shape if len(model.outputs) == 1 else None
    return shape is not None and shape.rank == 2 and (shape[-1] or 0) >= 2


class _ServingModule(tf.Module):
    def __init__(self, model, class_names):
        super().__init__(name="tfdeploy_serving")
        self.model = model
        self.class_names = list(class_names) if class_names else None
        specs = [tf.TensorSpec([None, *t.shape[1:]], tf.float32,
                               name=INPUT_NAME if len(model.inputs) == 1 else n)
                 for t, n in zip(model.inputs, model.input_names)]
        classifier = _is_classifier(model)
        labels = tf.constant(self.class_names) if self.class_names else None
        if labels is not None and classifier and len(self.class_names) != model.outputs[0].shape[-1]:
            raise ExportError(
                f"class_names has {len(self.class_names)} entries but the model outputs "
                f"{model.outputs[0].shape[-1]} classes; pass one name per class.")

        def serve(*inputs):
            outputs = self.model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
            if not classifier:
                outs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
                names = self.model.output_names
                return {n: tf.cast(o, tf.float32) for n, o in zip(names, outs)}
            probs = tf.cast(outputs, tf.float32)
            index = tf.argmax(probs, axis=-1)
            result = {"probabilities": probs, "class_index": index}
            if labels is not None:
                result["class_label"] = tf.gather(labels, index)
            return result

        self.serve = tf.function(serve, input_signature=specs)


def saved_model(model, base_path, version=None, class_names=None, overwrite=False):
    """Export a Keras model as a SavedModel ready for TF Serving.

    Writes ``base_path/VERSION/`` (the next free integer version by default)
    atomically: the SavedModel is written to ``base_path/temp-...`` and renamed
    into place, so TF Serving never sees a half-written version. The
    ``serving_default`` signature takes float32 ``images`` (raw pixels for
    tfdeploy-built models) and returns ``probabilities``, ``class_index`` and,
    when ``class_names`` are given, ``class_label``. Non-classifier models
    return their outputs under the Keras output names.

    Args:
        model: a Keras 2 model (stripped, or quantization-aware).
        base_path: the model's base path, e.g. ``saved_models/digits``.
        version: integer version; None picks the next free one. Defaults to None.
        class_names: label per class index, baked into the signature.
        overwrite: replace an existing version. Defaults to False.

    Returns:
        The path of the version directory written.

    Raises:
        ModelTypeError: not a Keras 2 model.
        ExportError: the version exists (without ``overwrite``) or writing failed.

    Example:
        >>> saved_model(model, "saved_models/digits", class_names=train_ds.class_names)
        'saved_models/digits/1'
    """
    check_model(model)
    if version is None:
        existing = versions(base_path)
        version = existing[-1] + 1 if existing else 1
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ExportError(f"version must be a non-negative integer, received {version!r}.")
    final = os.path.join(base_path, str(version))
    if os.path.exists(final) and not overwrite:
        raise ExportError(
            f"Version directory {final!r} already exists; pass overwrite=True to replace it "
            "or version=None for the next free version.")
    module = _ServingModule(model, class_names)
    try:
        with atomic_directory(final, overwrite=overwrite) as tmp:
            tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
    except (OSError, ValueError, TypeError) as exc:
        raise ExportError(f"Writing SavedModel to {final!r} failed: {exc}") from exc
    return final
