"""Knowledge distillation: train a small student to match a large teacher's softened outputs."""

from tfdeploy.model_io import check_model
from tfdeploy import _tfmot
from tfdeploy._keras import keras, tf
from tfdeploy.compress.graph import copy_model
from tfdeploy.compress.history import history, record
from tfdeploy.errors import CompressionError


def _output_layer(model):
    """The layer that computes ``model``'s (first) output, looking through wrappers.

    tfmot's QAT, pruning and clustering wrap the head (``.layer``), a nested model ends in
    its own last layer; the activation then sits on the innermost layer.
    """
    names = getattr(model, "output_names", None) or []
    try:
        layer = model.get_layer(names[0]) if names else model.layers[-1]
    except ValueError:  # an output not named after its layer
        layer = model.layers[-1]
    while True:
        if isinstance(layer, keras.Model) and layer.layers:
            layer = _output_layer(layer)
        elif isinstance(getattr(layer, "layer", None), keras.layers.Layer):
            layer = layer.layer
        else:
            return layer


def _ends_in_softmax(model):
    layer = _output_layer(model)
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    activation = _tfmot.quantize_activation_inner(activation) or activation
    return getattr(activation, "__name__", "") == "softmax"


def _log_probs(y, from_logits):
    return tf.nn.log_softmax(y) if from_logits else tf.math.log(tf.clip_by_value(y, 1e-7, 1.0))


class Distiller(keras.Model):
    """A model that trains ``student`` against labels and ``teacher``'s soft targets.

    ``loss = alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(teacher_T || student_T)``
    where ``_T`` means the softmax at temperature ``T``. Models ending in
    softmax are handled (their log-probabilities serve as logits). The teacher
    only runs in inference mode and is never updated. Calling the distiller
    runs the student, so ``evaluate``/``predict`` report the student.

    Args:
        student: the Keras model to train (this object is trained in place;
            `distill` passes a copy).
        teacher: the trained Keras model to imitate.
        temperature: softening temperature T > 0. Defaults to 3.0.
        alpha: weight of the hard-label loss, in [0, 1]. Defaults to 0.1.
    """

    def __init__(self, student, teacher, temperature=3.0, alpha=0.1, **kwargs):
        super().__init__(**kwargs)
        if not temperature > 0:
            raise CompressionError(f"temperature must be > 0, received {temperature!r}.")
        if not 0.0 <= alpha <= 1.0:
            raise CompressionError(f"alpha must be in [0, 1], received {alpha!r}.")
        self.student, self.teacher = student, teacher
        self.temperature, self.alpha = float(temperature), float(alpha)
        self._student_logits = not _ends_in_softmax(student)
        self._teacher_logits = not _ends_in_softmax(teacher)
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")

    @property
    def metrics(self):
        return [self.student_loss_tracker, self.distillation_loss_tracker] + \
            list(super().metrics)

    def call(self, x, training=False):
        return self.student(x, training=training)

    def _distill_losses(self, x, y, training):
        teacher_out = self.teacher(x, training=False)
        student_out = self.student(x, training=training)
        hard = keras.losses.sparse_categorical_crossentropy(
            y, student_out, from_logits=self._student_logits)
        t = self.temperature
        soft_teacher = tf.nn.softmax(_log_probs(teacher_out, self._teacher_logits) / t)
        log_student = tf.nn.log_softmax(_log_probs(student_out, self._student_logits) / t)
        soft = tf.reduce_sum(
            soft_teacher * (tf.math.log(tf.clip_by_value(soft_teacher, 1e-7, 1.0)) - log_student),
            axis=-1) * (t * t)
        hard, soft = tf.reduce_mean(hard), tf.reduce_mean(soft)
        return student_out, hard, soft, self.alpha * hard + (1.0 - self.alpha) * soft

    def train_step(self, data):
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            student_out, hard, soft, loss = self._distill_losses(x, y, True)
            loss = loss + tf.add_n(self.student.losses) if self.student.losses else loss
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return self._update(y, student_out, hard, soft)

    def test_step(self, data):
        x, y = data[0], data[1]
        student_out, hard, soft, _ = self._distill_losses(x, y, False)
        return self._update(y, student_out, hard, soft)

    def _update(self, y, student_out, hard, soft):
        self.student_loss_tracker.update_state(hard)
        self.distillation_loss_tracker.update_state(soft)
        self.compiled_metrics.update_state(y, student_out)
        out = {m.name: m.result() for m in self.metrics}
        out["loss"] = self.alpha * out["student_loss"] + \
            (1.0 - self.alpha) * out["distillation_loss"]
        return out


def distill(teacher, student, temperature=3.0, alpha=0.1):
    """Return a `Distiller` that trains a copy of ``student`` to imitate ``teacher``.

    Compile it with an optimizer and metrics (no loss: the distiller has its
    own), ``fit`` it like any model with any callbacks, then take
    ``distiller.student``: a plain Keras model you can prune, slim, quantize
    and export. Neither input model is changed.

    Args:
        teacher: a trained Keras 2 model.
        student: a Keras 2 model with the same input and number of classes
            (untrained or pre-trained).
        temperature: softening temperature. Defaults to 3.0.
        alpha: weight of the hard-label loss. Defaults to 0.1.

    Returns:
        A `Distiller`.

    Raises:
        CompressionError: input/output shapes differ, or bad temperature/alpha.

    Example:
        >>> d = distill(teacher, build_cnn(width=0.125))
        >>> d.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
        >>> d.fit(train_ds, epochs=5); student = d.student
    """
    teacher = check_model(teacher, "teacher")
    student = check_model(student, "student")
    if tuple(teacher.input_shape[1:]) != tuple(student.input_shape[1:]):
        raise CompressionError(
            f"teacher input {teacher.input_shape} and student input {student.input_shape} differ; "
            "the student must take the same inputs.")
    if teacher.output_shape[-1] != student.output_shape[-1]:
        raise CompressionError(
            f"teacher predicts {teacher.output_shape[-1]} classes but the student "
            f"{student.output_shape[-1]}; build the student with the same number of classes.")
    trainee = copy_model(student)
    # the student's layers are its own: it names the teacher's techniques, not inherits them
    record(trainee, "distilled", [], {},
           detail=f"from {teacher.name!r} at T={float(temperature):g}",
           params={"teacher": teacher.name, "teacher_params": int(teacher.count_params()),
                   "teacher_techniques": [e["technique"] for e in history(teacher)],
                   "student_params": int(trainee.count_params()),
                   "temperature": float(temperature), "alpha": float(alpha)})
    return Distiller(trainee, teacher, temperature, alpha, name="distiller")
