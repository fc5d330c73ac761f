"""Keras callbacks that drive compression inside an ordinary ``model.fit``."""

import copy

from tfdeploy._keras import build_fit_state, keras, tf, tfmot
from tfdeploy._tfmot import global_batch_ranges
from tfdeploy.compress.distribute import _strategies, check_training
from tfdeploy.compress.sparsity import model_sparsity, sparsity_by_layer, zero_counts
from tfdeploy.compress.wrappers import is_pruning_wrapped, is_quantization_aware


class _ConfigCallback(keras.callbacks.Callback):
    """A callback that keeps only its constructor arguments.

    ``copy.deepcopy`` (which keras-tuner applies to every callback for every
    trial) returns a fresh instance with the same arguments and no model or
    file handles attached.
    """

    def __init__(self, **config):
        super().__init__()
        self._config = dict(config)

    def get_config(self):
        return dict(self._config)

    def __deepcopy__(self, memo):
        return type(self)(**copy.deepcopy(self._config, memo))


class PruningStep(_ConfigCallback):
    """Advance the pruning step of every pruning wrapper, once per batch.

    The same work as tfmot's ``UpdatePruningStep`` (required while training a
    pruned model), keyed on the optimizer's step so a second ``fit`` continues
    the schedule instead of restarting it.
    """

    def __init__(self):
        super().__init__()
        self._impl = None

    def on_train_begin(self, logs=None):
        self._impl = tfmot().sparsity.keras.UpdatePruningStep()
        self._impl.set_model(self.model)
        self._impl.on_train_begin(logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._impl.on_train_batch_begin(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._impl.on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        self._impl = None


class SparsityMonitor(_ConfigCallback):
    """Publish overall and per-layer sparsity into ``logs`` and TensorBoard.

    At each epoch end it sets ``logs["sparsity"]`` and
    ``logs["sparsity/<layer>"]`` (so the stock ``TensorBoard``/``CSVLogger``
    record them), and, when ``log_dir`` is given, writes the same scalars under
    ``log_dir/sparsity`` itself, independent of callback order.

    Args:
        log_dir: TensorBoard log directory, or None. Defaults to None.
    """

    def __init__(self, log_dir=None):
        super().__init__(log_dir=log_dir)
        self._writer = None

    def on_train_begin(self, logs=None):
        log_dir = self._config["log_dir"]
        if log_dir:
            self._writer = tf.summary.create_file_writer(f"{log_dir}/sparsity")

    def on_epoch_end(self, epoch, logs=None):
        counts = zero_counts(self.model)
        per_layer = sparsity_by_layer(self.model, counts)
        overall = model_sparsity(self.model, counts=counts)
        if logs is not None:
            logs["sparsity"] = overall
            for name, value in per_layer.items():
                logs[f"sparsity/{name}"] = value
        if self._writer is not None:
            with self._writer.as_default(step=epoch):
                tf.summary.scalar("sparsity/overall", overall)
                for name, value in per_layer.items():
                    tf.summary.scalar(f"sparsity/{name}", value)
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


_MIRRORED = (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)


class TraceOnce(_ConfigCallback):
    """Make ``fit`` trace its train step once instead of twice.

    Keras creates the optimizer's slots and the metrics' variables inside the
    first trace of its train step, and a ``tf.function`` whose first trace
    creates variables is traced a second time, so every ``fit`` of a freshly
    compiled model paid for two traces (seconds each for a MobileNet).
    At the first step this creates them beforehand, from the element spec of the
    iterator ``fit`` hands its train function
    (`tfdeploy._keras.build_fit_state`), then hands over to Keras's own
    function: the same variables, the same training, one trace. Under
    ``MirroredStrategy`` and ``MultiWorkerMirroredStrategy`` too (it creates them
    in the strategy's scope, from one replica's element spec, as mirrored
    variables in the order Keras would); under any other strategy it does nothing
    (Keras builds them as usual).
    """

    def on_train_begin(self, logs=None):
        model = self.model
        train = model.train_function
        if train is None or not all(
                s is None or isinstance(s, _MIRRORED) for s in _strategies(model)
                + [tf.distribute.get_strategy() if tf.distribute.has_strategy() else None]):
            return

        def first_step(iterator):
            model.train_function = train
            build_fit_state(model, iterator)
            return train(iterator)

        model.train_function = first_step


class GlobalBatchLogs(_ConfigCallback):
    """Make the per-batch ``logs`` of a fit under `MultiWorkerMirroredStrategy` report the
    global batch's loss and metrics, as the epoch's do.

    tf_keras's ``distribute_reduction_method="auto"`` sums a training step's outputs over
    the workers, but each worker's loss and metric values are already the global
    batch's (Keras reduces them across replicas): with two workers, the per-batch loss
    in ``logs`` (the progress bar, ``TensorBoard(update_freq="batch")``, any callback)
    is twice one process's, while the epoch's and ``evaluate``'s are right. This sets
    the model's ``distribute_reduction_method`` to ``"first"`` (Keras's choice on TPUs)
    when it is ``"auto"``, in ``on_train_begin``, before the first step is traced.
    The training math does not change: only what the step reports.
    """

    def on_train_begin(self, logs=None):
        if self.model.distribute_reduction_method == "auto":
            self.model.distribute_reduction_method = "first"


def callbacks(model, log_dir=None, backup_dir=None):
    """Return the callbacks a model wrapped by tfdeploy needs inside ``model.fit``.

    For a pruning-wrapped model: `PruningStep` and `SparsityMonitor`. For QAT or
    plain models: `SparsityMonitor` (sparsity is still worth watching when
    fine-tuning a pruned model with QAT). Add your own callbacks (TensorBoard,
    EarlyStopping, ...) after these. `TraceOnce` (last) saves ``fit`` its second
    trace of the train step. Under `MultiWorkerMirroredStrategy`,
    `GlobalBatchLogs` comes first. For a QAT model under a ``tf.distribute``
    strategy (also one not made by `quantize`, e.g. loaded), it makes tfmot's
    fake-quants take their ranges from the whole global batch
    (`tfdeploy._tfmot.global_batch_ranges`, as `quantize` does) before
    the first training step is traced.

    With ``backup_dir``, a Keras ``BackupAndRestore`` comes first: a fit that
    is killed resumes from the last finished epoch when the same script runs
    again, with every variable of the wrappers restored (pruning step and
    masks, QAT ranges, cluster indices) besides the weights and the optimizer,
    so the pruning schedule continues where it stopped. The backup is deleted
    when the fit completes.

    Args:
        model: the model you are about to fit.
        log_dir: TensorBoard directory for the sparsity scalars. Defaults to None.
        backup_dir: directory for the resumable training state, or None.
            Defaults to None.

    Returns:
        A list of Keras callbacks.

    Raises:
        DistributionError: see `tfdeploy.compress.distribute.check_training`
            (a setup that would fail in its first step, detected before training).
    """
    check_training(model)
    out = []
    if any(isinstance(s, tf.distribute.MultiWorkerMirroredStrategy) for s in _strategies(model)):
        out.append(GlobalBatchLogs())
    if backup_dir:
        out.append(keras.callbacks.BackupAndRestore(backup_dir))
    if is_pruning_wrapped(model):
        out.append(PruningStep())
    if is_quantization_aware(model) and any(s is not None for s in _strategies(model)):
        global_batch_ranges()
    out.append(SparsityMonitor(log_dir=log_dir))
    out.append(TraceOnce())
    return out
