"""SavedModel export in TF Serving's layout: ``BASE/NAME/VERSION/``.

One version directory holds:

- ``saved_model.pb`` + ``variables/`` with the signatures
  ``serving_default`` (float ``images`` → ``probabilities``, ``class_index``,
  ``class_label``), ``serving_bytes`` (encoded JPEG/PNG strings
  ``image_bytes`` → the same outputs), and ``classify`` (serialized
  ``tf.Example`` → ``classes``, ``scores``; method ``tensorflow/serving/classify``)
  for classifiers, or ``regress`` for single-output regressors;
- ``assets/labels.txt``: the label vocabulary, read by a lookup table in the graph;
- ``assets.extra/tf_serving_warmup_requests``: a TFRecord of ``PredictionLog``
  protos that TF Serving replays before it marks the version available;
- ``assets.extra/model_card.json``: source, compression history, metrics;
- with ``artifacts=[...]``: the same model as ``.tflite``/``.onnx`` files
  (``model_float32.tflite``, ``model_int8.tflite``, ``model_float32.onnx``, ...) and
  ``assets.extra/artifacts.json``, the manifest `tfdeploy.runtime.artifacts` reads
  (each file's runtimes, precision, tensor names for the signature's inputs and
  outputs, and the class labels), so every serving runtime answers like
  ``serving_default``.
"""

import os
import shutil
import tempfile

from tfdeploy.model_io import check_model
from tfdeploy._keras import tf
from tfdeploy._atomic import atomic_directory, clean_stale, temp_dir_name
from tfdeploy.export._image_guard import DEFAULT_MAX_IMAGE_PIXELS, image_size_check
from tfdeploy.export import _artifacts, _warmup, model_card as _card
from tfdeploy.errors import ExportError
from tfdeploy.runtime.versions import list_versions, version_dirs

INPUT_NAME = "images"
BYTES_INPUT_NAME = "image_bytes"
LABELS_FILE = "labels.txt"
BYTES_SIGNATURE = "serving_bytes"
CLASSIFY_SIGNATURE = "classify"
REGRESS_SIGNATURE = "regress"
_CLASSIFY_METHOD = "tensorflow/serving/classify"
_REGRESS_METHOD = "tensorflow/serving/regress"


def versions(base_path):
    """Return the sorted version numbers under ``base_path`` (names as TF Serving reads them)."""
    return list_versions(base_path)


def _is_classifier(model):
    shape = model.outputs[0].shape if len(model.outputs) == 1 else None
    return shape is not None and shape.rank == 2 and (shape[-1] or 0) >= 2


def _is_regressor(model):
    if len(model.outputs) != 1:
        return False
    shape = model.outputs[0].shape
    return shape.rank == 1 or (shape.rank == 2 and shape[-1] == 1)


def _image_input(model):
    """Return ``(height, width, channels)`` when the model takes one image, else None."""
    if len(model.inputs) != 1:
        return None
    shape = model.inputs[0].shape
    if shape.rank != 4 or None in shape[1:] or shape[-1] not in (1, 3):
        return None
    return tuple(int(d) for d in shape[1:])


class _ServingModule(tf.Module):
    def __init__(self, model, class_names, labels_path=None, image_bytes=True, track_model=False,
                 max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS, jit_compile=False):
        super().__init__(name="tfdeploy_serving")
        if track_model:
            self.model = model
        else:
            # Track the weights only: a compiled model would drag its optimizer state (Adam's
            # two slots per weight) into variables/, tripling the artifact for nothing.
            self.model_variables = list(model.variables)
        self.class_names = list(class_names) if class_names else None
        specs = [tf.TensorSpec([None, *t.shape[1:]], t.dtype,
                               name=INPUT_NAME if len(model.inputs) == 1 else n)
                 for t, n in zip(model.inputs, model.input_names)]
        classifier = _is_classifier(model)
        self.classifier = classifier
        self.regressor = _is_regressor(model)
        if self.class_names and classifier and len(self.class_names) != model.outputs[0].shape[-1]:
            raise ExportError(
                f"class_names has {len(self.class_names)} entries but the model outputs "
                f"{model.outputs[0].shape[-1]} classes; pass one name per class.")
        self.table = None
        if self.class_names and classifier:
            # The vocabulary is an asset (copied to assets/labels.txt) read by a lookup table.
            self.labels_asset = tf.saved_model.Asset(labels_path)
            initializer = tf.lookup.TextFileInitializer(
                self.labels_asset, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                tf.string, tf.lookup.TextFileIndex.WHOLE_LINE)
            self.table = tf.lookup.StaticHashTable(initializer, default_value="")

        # XLA compiles the network only: lookups and parsing around it are not XLA ops.
        forward = tf.function(lambda x: model(x, training=False), jit_compile=True) \
            if jit_compile else (lambda x: model(x, training=False))

        def outputs_of(*inputs):
            outputs = forward(list(inputs) if len(inputs) > 1 else inputs[0])
            if not classifier:
                outs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
                names = model.output_names
                return {n: tf.cast(o, tf.float32) for n, o in zip(names, outs)}
            probs = tf.cast(outputs, tf.float32)
            index = tf.argmax(probs, axis=-1)
            result = {"probabilities": probs, "class_index": index}
            if self.table is not None:
                result["class_label"] = self.table.lookup(index)
            return result

        self.serve = tf.function(outputs_of, input_signature=specs)

        image = _image_input(model)
        if image_bytes and image is not None:
            height, width, channels = image

            def decode(data):
                with tf.control_dependencies([image_size_check(data, max_image_pixels)]):
                    img = tf.io.decode_image(data, channels=channels, expand_animations=False)
                img = tf.image.resize(tf.cast(img, tf.float32), (height, width),
                                      method="bilinear")
                img = tf.clip_by_value(img, 0.0, 255.0)
                img.set_shape((height, width, channels))
                return img

            def serve_bytes(image_bytes):
                images = tf.map_fn(decode, image_bytes,
                                   fn_output_signature=tf.TensorSpec((height, width, channels),
                                                                     tf.float32))
                return outputs_of(images)

            self.serve_bytes = tf.function(
                serve_bytes,
                input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT_NAME)])

        if (len(model.inputs) == 1 and None not in model.inputs[0].shape[1:]
                and model.inputs[0].dtype == tf.float32 and (classifier or self.regressor)):
            feature_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
            features = {INPUT_NAME: tf.io.FixedLenFeature(feature_shape, tf.float32)}
            num_classes = int(model.outputs[0].shape[-1])
            names = self.class_names or [str(i) for i in range(num_classes)]
            self.class_vocab = tf.constant(names) if classifier else None

            def parse(inputs):
                return tf.io.parse_example(inputs, features)[INPUT_NAME]

            if classifier:
                def classify(inputs):
                    scores = outputs_of(parse(inputs))["probabilities"]
                    classes = tf.tile(self.class_vocab[None, :], [tf.shape(scores)[0], 1])
                    return {"classes": classes, "scores": scores}

                self.classify = tf.function(
                    classify, input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
            else:
                def regress(inputs):
                    out = model(parse(inputs), training=False)
                    return {"outputs": tf.reshape(tf.cast(out, tf.float32), [-1])}

                self.regress = tf.function(
                    regress, input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])

    def signature_functions(self):
        """``{signature key: tf.function}`` for `tf.saved_model.save`."""
        found = {"serving_default": self.serve}
        for key, attr in ((BYTES_SIGNATURE, "serve_bytes"), (CLASSIFY_SIGNATURE, "classify"),
                          (REGRESS_SIGNATURE, "regress")):
            if hasattr(self, attr):
                found[key] = getattr(self, attr)
        return found


def _set_method_names(export_dir, methods):
    """Rewrite SignatureDef method names (TF2's saver always writes ``.../predict``)."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb_path = os.path.join(export_dir, "saved_model.pb")
    proto = saved_model_pb2.SavedModel()
    with open(pb_path, "rb") as f:
        proto.ParseFromString(f.read())
    for meta_graph in proto.meta_graphs:
        for key, method in methods.items():
            if key in meta_graph.signature_def:
                meta_graph.signature_def[key].method_name = method
    with open(pb_path, "wb") as f:
        f.write(proto.SerializeToString())


def saved_model(model, base_path, version=None, class_names=None, overwrite=False,
                warmup_data=None, num_warmup=4, model_card=None, image_bytes=True,
                max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS, jit_compile=False, artifacts=None,
                representative_data=None, verification_data=None):
    """Export a Keras model as a SavedModel ready for TF Serving.

    Writes ``base_path/VERSION/`` (the next free integer version by default)
    atomically: everything is written to ``base_path/temp-...`` and renamed
    into place, so TF Serving never sees a half-written version and a crash
    leaves no version directory. Signatures: ``serving_default`` takes float32
    ``images`` (raw pixels for tfdeploy-built models) and returns
    ``probabilities``, ``class_index`` and, when ``class_names`` are given,
    ``class_label`` (looked up in the ``assets/labels.txt`` vocabulary);
    ``serving_bytes`` takes ``image_bytes``, a batch of encoded JPEG/PNG strings
    (REST clients send ``{"b64": ...}``), decoded and resized in the graph;
    ``classify`` (classifiers) or ``regress`` (one scalar output) take
    serialized ``tf.Example`` protos with a float feature ``images``.
    Non-classifier models return their outputs under the Keras output names.

    Args:
        model: a Keras 2 model (stripped, or quantization-aware).
        base_path: the model's base path, e.g. ``saved_models/digits``.
        version: integer version; None picks the next free one. Defaults to None.
        class_names: label per class index, written as the vocabulary asset.
        overwrite: replace an existing version. Defaults to False.
        warmup_data: real inputs (numpy array or ``tf.data.Dataset`` of
            ``(images, labels)``) for ``assets.extra/tf_serving_warmup_requests``;
            None writes no warmup file. Defaults to None.
        num_warmup: warmup samples taken from ``warmup_data``. Defaults to 4.
        model_card: dict merged into ``assets.extra/model_card.json`` (e.g.
            ``{"source": ..., "metrics": {...}, "compression": [...]}``).
        image_bytes: add the ``serving_bytes`` signature for image models.
            Defaults to True.
        max_image_pixels: ``serving_bytes`` refuses (InvalidArgument, HTTP 400) an image
            whose header declares more pixels, before decoding it. Defaults to 4096 * 4096.
        jit_compile: compile the network inside every signature with XLA
            (``tf.function(jit_compile=True)``; label lookup and image decoding
            stay outside). Loaders that run XLA (TensorFlow, TF Serving built
            with XLA) then run the fused kernels. Defaults to False.
        artifacts: other files of the same model to write into the version
            directory, with the manifest ``assets.extra/artifacts.json``: names from
            "tflite_float32", "tflite_float16", "tflite_int8", "onnx" (float) and
            "onnx_int8" (static Q/DQ), or a dict ``{name: model}`` whose model
            (None: ``model``) is the source of that file, e.g. the QAT twin for
            "tflite_int8". Needs a one-input, one-output model. Defaults to None.
        representative_data: calibration inputs for the int8 artifacts (the
            training dataset is right). Defaults to None.
        verification_data: inputs (array or dataset of ``(images, labels)``; a
            validation split, never the test split) of which up to 256 records are
            written with the artifacts as their verification set
            (``assets.extra/verification_inputs.npz``, listed and SHA-256-checked in
            the manifest): ``--runtime auto`` checks every artifact on them against
            the SavedModel. None uses ``representative_data``. Defaults to None.

    Returns:
        The path of the version directory written.

    Raises:
        ModelTypeError: not a Keras 2 model.
        ExportError: the version exists (without ``overwrite``), bad class
            names, or writing failed.

    Example:
        >>> saved_model(model, "saved_models/digits", class_names=train_ds.class_names,
        ...             warmup_data=train_ds)
        'saved_models/digits/1'
    """
    model = check_model(model)
    try:
        existing = version_dirs(base_path)
    except OSError:
        existing = {}
    if version is None:
        version = max(max(existing) + 1, 1) if existing else 1
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ExportError(f"version must be a non-negative integer, received {version!r}.")
    # a version already on disk is replaced under its own spelling (e.g. "007")
    final = existing.get(version, os.path.join(base_path, str(version)))
    if os.path.exists(final) and not overwrite:
        raise ExportError(
            f"Version directory {final!r} already exists; pass overwrite=True to replace it "
            "or version=None for the next free version.")
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        bad = [c for c in class_names if not c or "\n" in c or "\r" in c]
        if bad:
            raise ExportError(
                f"class_names must be non-empty single-line strings, received {bad!r}.")
    warmup = None
    if warmup_data is not None:
        if len(model.inputs) != 1:
            raise ExportError(
                f"warmup_data needs a single-input model; {model.name!r} has "
                f"{len(model.inputs)} inputs. Pass warmup_data=None.")
        warmup = _warmup.samples(warmup_data, num_warmup)
        _check_warmup_shape(model, warmup)
    chosen = _artifacts.normalize(artifacts, representative_data)
    _artifacts.check_single_io(model, chosen)
    if verification_data is not None:
        if not chosen:
            raise ExportError(
                "verification_data is the verification set of the artifacts, but no artifacts "
                "were asked; pass artifacts=[...] too, or verification_data=None. Nothing was "
                "written.")
        _check_warmup_shape(model, _warmup.samples(verification_data, 1), "verification_data")
    parent = os.path.abspath(base_path)
    os.makedirs(parent, exist_ok=True)
    clean_stale(parent)
    clean_stale(tempfile.gettempdir())  # labels directories earlier versions left there
    # The labels source lives beside the version being written (never in $TMPDIR) under a
    # temporary name with our pid: removed below, or by the next export if we are killed.
    scratch = temp_dir_name(parent, os.path.basename(final), ".labels")
    os.makedirs(scratch)
    try:
        labels_path = os.path.join(scratch, LABELS_FILE)
        if class_names:
            with open(labels_path, "w") as f:
                f.write("\n".join(class_names) + "\n")
        module = _ServingModule(model, class_names, labels_path, image_bytes=image_bytes,
                                max_image_pixels=max_image_pixels, jit_compile=jit_compile)
        try:
            with atomic_directory(final, overwrite=overwrite) as tmp:
                try:
                    tf.saved_model.save(module, tmp, signatures=module.signature_functions())
                except (ValueError, AssertionError) as exc:
                    if "untracked" not in str(exc):
                        raise
                    # a layer owns a resource besides variables (e.g. a lookup table):
                    # save the whole Keras object graph instead
                    shutil.rmtree(tmp, ignore_errors=True)
                    module = _ServingModule(model, class_names, labels_path,
                                            image_bytes=image_bytes, track_model=True,
                                            max_image_pixels=max_image_pixels,
                                            jit_compile=jit_compile)
                    tf.saved_model.save(module, tmp, signatures=module.signature_functions())
                methods = {CLASSIFY_SIGNATURE: _CLASSIFY_METHOD,
                           REGRESS_SIGNATURE: _REGRESS_METHOD}
                _set_method_names(tmp, methods)
                extra = os.path.join(tmp, "assets.extra")
                os.makedirs(extra, exist_ok=True)
                if warmup is not None:
                    _warmup.write(os.path.join(extra, _warmup.WARMUP_FILE), warmup,
                                  model_name=os.path.basename(os.path.normpath(base_path)),
                                  bytes_signature=hasattr(module, "serve_bytes"))
                _card.write(os.path.join(extra, _card.CARD_FILE), model,
                            _card.saved_model_fields(module, version, class_names,
                                                     warmup is not None), model_card)
                if chosen:
                    _artifacts.write(tmp, model, chosen, _artifacts.signature_of(module),
                                     class_names if module.table is not None else None,
                                     representative_data, verification_data=verification_data)
        except (OSError, ValueError, TypeError) as exc:
            raise ExportError(f"Writing SavedModel to {final!r} failed: {exc}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


def _check_warmup_shape(model, warmup, what="warmup_data"):
    """Refuse warmup samples the serving signature cannot take, before anything is written."""
    expected = model.inputs[0].shape[1:]
    got = tuple(warmup.shape[1:])
    if len(got) != len(expected) or any(e is not None and e != g for e, g in zip(expected, got)):
        raise ExportError(
            f"{what} samples have shape {got}, but model {model.name!r} takes inputs of "
            f"shape {tuple(expected)} (None: any size); a version whose {what} do not fit "
            "fails to load or to verify its artifacts. Pass inputs shaped like the model's "
            f"(e.g. the training dataset) or {what}=None. Nothing was written.")


def signature_names(model):
    """The signature keys `saved_model` writes for ``model`` (without exporting it)."""
    model = check_model(model)
    names = ["serving_default"]
    if _image_input(model) is not None:
        names.append(BYTES_SIGNATURE)
    if (len(model.inputs) == 1 and None not in model.inputs[0].shape[1:]
            and model.inputs[0].dtype == tf.float32):
        if _is_classifier(model):
            names.append(CLASSIFY_SIGNATURE)
        elif _is_regressor(model):
            names.append(REGRESS_SIGNATURE)
    return names


__all__ = ["saved_model", "versions", "signature_names", "INPUT_NAME", "BYTES_INPUT_NAME"]
