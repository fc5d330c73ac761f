"""Helper process for tests/test_resume.py (not a test module).

    python tests/resume_fit.py WORK

runs three phases, each in its own process:

    kill          uninterrupted pruning and QAT fits, then a pruning fit with a backup that
                  SIGKILLs itself in epoch 3
    kill_cluster  an uninterrupted clustering fit, then one SIGKILLed in epoch 2
    resume        both killed fits resume from their backups; then a QAT fit interrupted in
                  epoch 2, resumed

The two "kill" phases run side by side in children forked after the imports (`forked`: one
interpreter's imports, not three); this process waits for them, writes how they ended and
what their backups hold (``killed.json``), then runs "resume" itself.

Ops are deterministic and the data is not shuffled, so a resumed run and an uninterrupted
one see the same batches and must end with the same weights, masks and pruning step. That
alone would also hold for a run that ignored its backup and started over, so every fit
records its state (`Recorder`): where it starts (the first epoch it runs, and the step,
masks, QAT ranges and cluster centroids then) and, in the interrupted fits, the state at the
end of each finished epoch (``*_saved.json``, what the backup holds). The test compares them.
"""

import json
import os
import signal
import sys

import numpy as np

import forked
import tfdeploy as td
from tfdeploy._keras import keras, tf, tfmot

EPOCHS, QAT_EPOCHS, CLUSTER_EPOCHS = 4, 2, 3
WORK = ds = C = None  # set in each process by `setup` (nothing runs TensorFlow before a fork)


def setup(work):
    global WORK, ds, C
    WORK, C = work, td.compress
    rng = np.random.RandomState(0)
    x = rng.rand(192, 16, 16, 1).astype("float32") * 255
    y = rng.randint(0, 10, 192)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)


class Interrupt(keras.callbacks.Callback):
    """SIGKILL this process (or raise) at ``batch`` of ``epoch``."""

    def __init__(self, epoch, batch, kill):
        super().__init__()
        self.at, self.kill, self.epoch = (epoch, batch), kill, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise KeyboardInterrupt("interrupted for the test")


def state(model):
    """The training state a backup must bring back, read from the model's variables."""
    def named(*ends, starts=None):
        out = {}
        for v in model.variables:
            short = v.name.split("/")[-1].split(":")[0]
            if short.endswith(ends) or (starts and short.startswith(starts)):
                out[v.name] = np.asarray(v.numpy()).ravel().tolist()
        return out

    return {"iterations": int(model.optimizer.iterations.numpy()),
            "pruning_steps": sorted({int(layer.pruning_step.numpy()) for layer in model.layers
                                     if hasattr(layer, "pruning_step")}),
            "masks": {k: [int(x) for x in v] for k, v in named("mask").items()},
            "ranges": named("_min", "_max"), "centroids": named(starts="cluster_centroids")}


class Recorder(keras.callbacks.Callback):
    """Records the state at the first epoch the fit runs (``start``, after any restore), and
    writes the state at the end of every epoch to ``saved`` (a JSON file) when given."""

    def __init__(self, saved=None):
        super().__init__()
        self.saved, self.start = saved, None

    def on_epoch_begin(self, epoch, logs=None):
        if self.start is None:
            self.start = dict(state(self.model), epoch=epoch)

    def on_epoch_end(self, epoch, logs=None):
        if self.saved:
            dump(self.saved, dict(state(self.model), epoch=epoch + 1))


def prune_fit(backup=None, interrupt=None, saved=None):
    keras.utils.set_random_seed(0)
    model = C.prune(td.models.build_cnn((16, 16, 1), 10, width=0.125), 0.75, epochs=EPOCHS,
                    steps_per_epoch=ds)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    recorder = Recorder(saved)
    cbs = C.callbacks(model, backup_dir=backup) + [recorder] + ([interrupt] if interrupt else [])
    model.fit(ds, epochs=EPOCHS, verbose=0, callbacks=cbs)
    steps = sorted({int(layer.pruning_step.numpy()) for layer in model.layers
                    if hasattr(layer, "pruning_step")})
    masks = [m.numpy() for layer in model.layers for _, m, _ in getattr(layer, "pruning_vars", [])]
    stripped = C.strip(model)
    return stripped, {"start": recorder.start, "pruning_steps": steps,
                      "iterations": int(model.optimizer.iterations),
                      "sparsity": C.sparsity_by_layer(stripped),
                      "masks": [m.astype(int).ravel().tolist() for m in masks],
                      "weights": [w.ravel().tolist() for w in stripped.get_weights()]}


def qat_fit(pruned, backup=None, interrupt=None, saved=None):
    keras.utils.set_random_seed(0)
    model = C.quantize(pruned, preserve="sparsity")
    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    recorder = Recorder(saved)
    cbs = C.callbacks(model, backup_dir=backup) + [recorder] + ([interrupt] if interrupt else [])
    model.fit(ds, epochs=QAT_EPOCHS, verbose=0, callbacks=cbs)
    ranges = {v.name: float(v.numpy()) for v in model.variables
              if v.name.split("/")[-1].split(":")[0].endswith(("_min", "_max"))
              and v.shape.rank == 0}
    return {"start": recorder.start, "ranges": ranges, "sparsity": C.sparsity_by_layer(model),
            "iterations": int(model.optimizer.iterations)}


def cluster_fit(backup=None, interrupt=None, saved=None):
    keras.utils.set_random_seed(0)
    model = C.cluster(td.models.build_cnn((16, 16, 1), 10, width=0.125), 8)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    recorder = Recorder(saved)
    cbs = C.callbacks(model, backup_dir=backup) + [recorder] + ([interrupt] if interrupt else [])
    model.fit(ds, epochs=CLUSTER_EPOCHS, verbose=0, callbacks=cbs)
    stripped = C.strip(model)
    kernels = [w for w in stripped.get_weights() if w.ndim > 1]
    return {"start": recorder.start, "iterations": int(model.optimizer.iterations),
            "unique": [int(np.unique(k).size) for k in kernels],
            "weights": [w.ravel().tolist() for w in stripped.get_weights()]}


def dump(name, payload):
    with open(os.path.join(WORK, name), "w") as f:
        json.dump(payload, f)


def kill():
    pruned, reference = prune_fit()
    dump("reference_prune.json", reference)
    dump("reference_qat.json", qat_fit(pruned))
    prune_fit(os.path.join(WORK, "prune_backup"), Interrupt(2, 3, kill=True), "prune_saved.json")
    raise SystemExit("not killed")


def kill_cluster():
    dump("reference_cluster.json", cluster_fit())
    cluster_fit(os.path.join(WORK, "cluster_backup"), Interrupt(1, 3, kill=True),
                "cluster_saved.json")
    raise SystemExit("not killed")


def resume():
    pruned, resumed = prune_fit(os.path.join(WORK, "prune_backup"))
    dump("resumed_prune.json", resumed)
    dump("resumed_cluster.json", cluster_fit(os.path.join(WORK, "cluster_backup")))
    backup = os.path.join(WORK, "qat_backup")
    try:
        qat_fit(pruned, backup, Interrupt(1, 2, kill=False), "qat_saved.json")
    except KeyboardInterrupt:
        pass
    dump("resumed_qat.json", qat_fit(pruned, backup))


def main(work):
    tf.config.experimental.enable_op_determinism()
    tfmot()
    killers = {"kill": kill, "kill_cluster": kill_cluster}
    pids = {name: forked.start(name, lambda fn=fn: (setup(work), fn()),
                               os.path.join(work, f"{name}.log"))
            for name, fn in killers.items()}
    codes = {name: forked.wait(pid) for name, pid in pids.items()}
    backups = {name: sorted(os.listdir(os.path.join(work, name)))
               if os.path.isdir(os.path.join(work, name)) else []
               for name in ("prune_backup", "cluster_backup")}
    setup(work)
    dump("killed.json", {"codes": codes, "backups": backups})
    if any(code != -signal.SIGKILL for code in codes.values()):
        raise SystemExit(f"a killed phase ended otherwise: {codes} (see its .log)")
    resume()


if __name__ == "__main__":
    main(sys.argv[1])
