"""The Keras-2 core: tfdeploy selects tf_keras and rejects Keras 3 models clearly."""

import subprocess
import sys

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.errors import KerasVersionError, ModelTypeError


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_tf_keras_is_keras_2():
    assert td.keras.__version__.startswith("2.")
    assert td.tf.keras.__name__.startswith("tf_keras")


def test_import_after_tensorflow_still_selects_keras_2():
    # One fresh interpreter per module (the first import decides), started together.
    procs = {module: subprocess.Popen(
        [sys.executable, "-c",
         f"import tensorflow as tf\nimport tfdeploy.{module}\nprint(tf.keras.__name__)"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for module in ("compress", "models", "data", "export", "pipeline")}
    for module, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert out.strip().splitlines()[-1].startswith("tf_keras"), module


def test_inference_only_imports_leave_keras_3_alone():
    """runtime, serving and the client need no Keras: a Keras 3 process stays Keras 3."""
    proc = _run("import os\nos.environ.pop('TF_USE_LEGACY_KERAS', None)\n"
                "import keras\nimport tensorflow as tf\n"
                "import tfdeploy, tfdeploy.runtime, tfdeploy.serving, tfdeploy.client\n"
                "import tfdeploy.verify, tfdeploy.cli\n"
                "import sys\n"
                "assert 'tf_keras' not in sys.modules, 'tf_keras imported'\n"
                "assert not any('model_optimization' in m for m in sys.modules), 'tfmot imported'\n"
                "assert 'TF_USE_LEGACY_KERAS' not in os.environ\n"
                "print(tf.keras.__name__, keras.__version__)")
    assert proc.returncode == 0, proc.stderr
    name, version = proc.stdout.strip().splitlines()[-1].split()
    assert not name.startswith("tf_keras") and version.startswith("3."), proc.stdout


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


def test_keras_tuner_uses_keras_2_after_keras_3_was_imported_first():
    """TF imported by Keras 3 maps `tensorflow.keras` to Keras 3's shim; the swap covers it."""
    proc = _run("import os\nos.environ.pop('TF_USE_LEGACY_KERAS', None)\nimport keras\n"
                "from tfdeploy._keras import keras as k2, keras_tuner\n"
                "keras_tuner()\nfrom keras_tuner.src.backend import keras as kt_keras\n"
                "assert kt_keras.Model is k2.Model\nimport sys\n"
                "assert sys.modules['keras'].__version__.startswith('3.')\nprint('ok')")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "ok"
