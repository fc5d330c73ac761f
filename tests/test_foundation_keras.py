"""The Keras-2 core: tfdeploy selects tf_keras and rejects Keras 3 models clearly."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import KerasVersionError, ModelTypeError


# Runs in a fresh interpreter: ``prefix`` (its only imports), then one forked child per case,
# all at once. A child starts in exactly the state a fresh ``python -c "<prefix>\n<case>"``
# reaches after ``<prefix>``: the parent ran nothing but the prefix, so each case still makes
# the first import of its own modules (what these tests are about), and pays only for that,
# not for the prefix again. OPENBLAS_NUM_THREADS=1 keeps the parent to one thread when it forks
# (numpy's BLAS pool is the only thread ``import tensorflow`` starts).
_FORKER = textwrap.dedent("""
    import json, os, sys, traceback
    cases, out_dir = json.loads(sys.argv[1]), sys.argv[2]
    exec(compile(sys.argv[3], "<prefix>", "exec"), {"__name__": "__main__"})
    threads = len(os.listdir("/proc/self/task"))
    pids = {}
    for name, code in cases.items():
        pid = os.fork()
        if pid == 0:
            status = 0
            for fd, ext in ((1, "out"), (2, "err")):
                os.dup2(os.open(os.path.join(out_dir, name + "." + ext),
                                os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            try:
                exec(compile(code, "<" + name + ">", "exec"), {"__name__": "__main__"})
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
                status = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
        pids[name] = pid
    codes = {name: os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for name, pid in pids.items()}
    print(json.dumps({"threads": threads, "codes": codes}))
""")


def _run_forked(prefix, cases, tmp_path, timeout=180):
    """``{case: (returncode, stdout, stderr)}`` of ``prefix`` + each case (see ``_FORKER``)."""
    proc = subprocess.run([sys.executable, "-c", _FORKER, json.dumps(cases), str(tmp_path),
                           prefix], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["threads"] == 1, f"the parent had {report['threads']} threads when it forked"
    return {name: (report["codes"][name], (tmp_path / f"{name}.out").read_text(),
                   (tmp_path / f"{name}.err").read_text()) for name in cases}


def test_tf_keras_is_keras_2():
    assert td.keras.__version__.startswith("2.")
    assert td.tf.keras.__name__.startswith("tf_keras")


_MODULES = ("compress", "models", "data", "export", "pipeline")
# tfmot's pruning registry tries ``from keras.src.engine import base_layer`` at import: with
# Keras 3 installed that imported all of Keras 3, then failed. `_tfmot.load` hides ``keras``
# meanwhile: the same registry, Keras 3 still importable afterwards.
_TFMOT_WITHOUT_KERAS_3 = (
    "import sys\nassert 'keras' not in sys.modules\n"
    "from tfdeploy._keras import tfmot\nmodule = tfmot()\n"
    "assert 'keras' not in sys.modules, 'tfmot import pulled in Keras 3'\n"
    "from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry\n"
    "assert prune_registry.base_layer is None\n"
    "import tfdeploy as td\n"
    "model = td.compress.prune(td.models.build_cnn((8, 8, 1), 3, width=0.1), 0.5,\n"
    "                          epochs=1, steps_per_epoch=2)\n"
    "assert td.compress.is_pruning_wrapped(model)\n"
    "import keras\nprint(keras.__version__)")


@pytest.fixture(scope="module")
def tensorflow_first_runs(tmp_path_factory):
    """One interpreter per module, each forked after only ``import tensorflow as tf``, as a
    fresh ``python -c`` would be (see _FORKER): the first import decides."""
    return _run_forked("import tensorflow as tf", {
        module: f"import tensorflow as tf\nimport tfdeploy.{module}\nprint(tf.keras.__name__)"
        for module in _MODULES}, tmp_path_factory.mktemp("tf_first"))


def test_import_after_tensorflow_still_selects_keras_2(tensorflow_first_runs):
    for module in _MODULES:
        code, out, err = tensorflow_first_runs[module]
        assert code == 0, err[-3000:]
        assert out.strip().splitlines()[-1].startswith("tf_keras"), module


def test_tfmot_is_imported_without_keras_3(tmp_path):
    """1.4 s of CPU less in every process that compresses; Keras 3 still imports after.
    (A process that imports TensorFlow before tfdeploy has Keras 3 already: it starts with
    ``import tfdeploy``, as the CLI and the recipes do.)"""
    code, out, err = _run_forked("import tfdeploy", {"tfmot": _TFMOT_WITHOUT_KERAS_3},
                                 tmp_path)["tfmot"]
    assert code == 0, err[-3000:]
    assert out.strip().splitlines()[-1].startswith("3."), out  # Keras 3 imports after


# Both Keras 3 cases start with the same two lines: one interpreter runs them, then forks a
# child per case (see _FORKER).
_KERAS_3_FIRST = "import os\nos.environ.pop('TF_USE_LEGACY_KERAS', None)\nimport keras\n"
_KERAS_3_CASES = {
    "inference_only": (
        _KERAS_3_FIRST + "import tensorflow as tf\n"
        "import tfdeploy, tfdeploy.runtime, tfdeploy.serving, tfdeploy.client\n"
        "import tfdeploy.verify, tfdeploy.cli\n"
        "import sys\n"
        "assert 'tf_keras' not in sys.modules, 'tf_keras imported'\n"
        "assert not any('model_optimization' in m for m in sys.modules), 'tfmot imported'\n"
        "assert 'TF_USE_LEGACY_KERAS' not in os.environ\n"
        "print(tf.keras.__name__, keras.__version__)"),
    "tuner_after_keras_3": (
        _KERAS_3_FIRST + "from tfdeploy._keras import keras as k2, keras_tuner\n"
        "keras_tuner()\nfrom keras_tuner.src.backend import keras as kt_keras\n"
        "assert kt_keras.Model is k2.Model\nimport sys\n"
        "assert sys.modules['keras'].__version__.startswith('3.')\nprint('ok')"),
    # Keras 3 imported first stays what ``keras`` names after tfmot's import
    "tfmot_after_keras_3": (
        _KERAS_3_FIRST + "import sys\nfrom tfdeploy._keras import tfmot\ntfmot()\n"
        "assert sys.modules['keras'] is keras\nprint('ok')"),
}


@pytest.fixture(scope="module")
def keras_3_runs(tmp_path_factory):
    return _run_forked(_KERAS_3_FIRST, _KERAS_3_CASES, tmp_path_factory.mktemp("keras3"))


def test_inference_only_imports_leave_keras_3_alone(keras_3_runs):
    """runtime, serving and the client need no Keras: a Keras 3 process stays Keras 3."""
    code, out, err = keras_3_runs["inference_only"]
    assert code == 0, err[-3000:]
    name, version = out.strip().splitlines()[-1].split()
    assert not name.startswith("tf_keras") and version.startswith("3."), out


def test_keras_3_model_with_an_unbridgeable_layer_is_rejected_naming_it():
    """Keras 3 models are bridged (tests/test_bridge.py); only untranslatable layers fail."""
    import keras  # Keras 3, installed alongside

    class Doubler(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(Doubler(name="twice")(inputs)))
    for fn in (td.compress.prune, td.compress.quantize, td.compress.cluster,
               td.export.saved_model):
        with pytest.raises(ModelTypeError, match="Layer 'twice' .*Doubler.* cannot be bridged"):
            fn(model, "unused") if fn is td.export.saved_model else fn(model)


def test_subclassed_model_is_rejected_with_the_fix():
    class Net(td.keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = td.keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 4), np.float32))
    for fn in (td.compress.prune, td.compress.quantize, td.compress.cluster):
        with pytest.raises(ModelTypeError, match="subclassed model.*functional API"):
            fn(net)


def test_non_model_is_rejected():
    with pytest.raises(ModelTypeError, match="Expected `model` to be a Keras model.*'str'"):
        td.compress.prune("not a model")
    with pytest.raises(ValueError):  # typed errors are also ValueErrors
        td.compress.prune(42)


def test_keras_version_error_is_an_import_error():
    assert issubclass(KerasVersionError, ImportError)


def test_keras_tuner_uses_keras_2():
    from tfdeploy._keras import keras_tuner

    kt = keras_tuner()
    from keras_tuner.src.backend import config, keras as kt_keras

    assert not config.multi_backend()
    assert kt_keras.Model is td.keras.Model
    assert sys.modules["keras"] is not td.keras  # the swap was undone
    assert kt.HyperParameters is not None


def test_keras_tuner_uses_keras_2_after_keras_3_was_imported_first(keras_3_runs):
    """TF imported by Keras 3 maps `tensorflow.keras` to Keras 3's shim; the swap covers it."""
    code, out, err = keras_3_runs["tuner_after_keras_3"]
    assert code == 0, err[-3000:]
    assert out.strip().splitlines()[-1] == "ok"


def test_tfmot_leaves_keras_3_imported_first_in_place(keras_3_runs):
    code, out, err = keras_3_runs["tfmot_after_keras_3"]
    assert code == 0, err[-3000:]
    assert out.strip().splitlines()[-1] == "ok"


def _fit_twice_traced_or_once(optimizer, data, prebuild):
    from tfdeploy._keras import build_fit_state, keras

    keras.utils.set_random_seed(0)
    model = td.models.build_cnn(input_shape=(16, 16, 1), width=0.25)
    model.compile(optimizer, "sparse_categorical_crossentropy", ["accuracy"])
    if prebuild:
        assert build_fit_state(model, data) is model
    args = data if isinstance(data, tuple) else (data,)
    history = model.fit(*args, epochs=2, verbose=0).history
    variables = model.optimizer.variables
    names = [v.name for v in (variables() if callable(variables) else variables)]
    return (model.train_function.experimental_get_tracing_count(), history, names,
            [m.name for m in model.metrics], model.get_weights())


@pytest.mark.parametrize("optimizer", ["adam", "legacy_adam", "loss_scaled_adam"])
def test_build_fit_state_leaves_one_train_step_trace_and_the_same_training(optimizer):
    # Keras creates the optimizer's slots and the metrics' variables inside the first trace of
    # its train step, and a tf.function whose first trace creates variables is traced again:
    # every fit of a fresh model traced its train step twice. Built beforehand, once.
    from tfdeploy._keras import keras, tf

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (96, 16, 16, 1)).astype("float32")
    y = rng.integers(0, 10, 96)
    make = {"adam": keras.optimizers.Adam, "legacy_adam": keras.optimizers.legacy.Adam,
            "loss_scaled_adam": lambda rate: keras.mixed_precision.LossScaleOptimizer(
                keras.optimizers.Adam(rate))}[optimizer]
    for data in (tf.data.Dataset.from_tensor_slices((x, y)).batch(32), (x, y)):
        traces, history, slots, metrics, weights = _fit_twice_traced_or_once(make(1e-3), data,
                                                                             False)
        traces_1, history_1, slots_1, metrics_1, weights_1 = _fit_twice_traced_or_once(
            make(1e-3), data, True)
        assert (traces, traces_1) == (2, 1)
        assert history_1 == history and metrics_1 == metrics == ["loss", "accuracy"]
        assert slots_1 == slots and len(slots) > 1
        assert all(np.array_equal(a, b) for a, b in zip(weights_1, weights))


def test_build_fit_state_leaves_what_it_cannot_build_to_keras():
    from tfdeploy._keras import build_fit_state, keras

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    x, y = np.ones((8, 3), "float32"), np.zeros((8,), "int64")
    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    # a subclassed model's outputs are only known from a call; texts and x-only data carry no
    # label spec: Keras builds the state in the first trace, as it does without the call
    for model, data in ((Sub(), (x, y)), (sequential, (["a", "b"], ["c", "d"])),
                        (sequential, x)):
        model.compile(keras.optimizers.Adam(), keras.losses.SparseCategoricalCrossentropy(
            from_logits=True), ["accuracy"])
        assert build_fit_state(model, data) is model
        assert [v.name for v in model.optimizer.variables] == ["iteration:0"]
        model.fit(x, y, epochs=1, verbose=0)
        assert model.train_function.experimental_get_tracing_count() == 2
