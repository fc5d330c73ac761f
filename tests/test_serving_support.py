"""Small SavedModels for the serving tests, built in-process, plus repository unit tests.

``half_plus_two`` is a TF1-style graph (tf.compat.v1 + SavedModelBuilder) with
predict, classify and regress signatures; ``tf2_half_plus_two`` is the same
function saved from a tf.Module. Both take a ``scale`` so versions differ.
"""

import os

import numpy as np
import pytest

from tfdeploy.serving.repository import ModelConfig, list_versions


def build_half_plus_two(path, scale=0.5):
    """TF1 SavedModel at ``path``: y = scale * x + 2 with predict/classify/regress signatures."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None], name="x")
        a = v1.Variable(scale, name="a")
        y = tf.add(a * x, 2.0, name="y")
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        parsed = v1.io.parse_example(serialized, {"x": v1.io.FixedLenFeature([1], tf.float32)})
        ex_y = tf.add(a * parsed["x"], 2.0, name="ex_y")                       # [batch, 1]
        classes = tf.fill(tf.shape(ex_y), "y")                                  # [batch, 1]
        c = v1.placeholder(tf.complex64, [None], name="c")
        n = v1.placeholder(tf.int32, [], name="n")
        loop = tf.while_loop(lambda i, s: i < n, lambda i, s: (i + 1, s + 1.0),
                             [tf.constant(0), tf.constant(0.0)])[1]
        info = v1.saved_model.utils.build_tensor_info
        sig = v1.saved_model.signature_def_utils.build_signature_def
        predict = sig({"x": info(x)}, {"y": info(y)}, "tensorflow/serving/predict")
        signatures = {
            "serving_default": predict,
            "predict": predict,
            "tensorflow/serving/classify": sig(
                {"inputs": info(serialized)}, {"classes": info(classes), "scores": info(ex_y)},
                "tensorflow/serving/classify"),
            "classify_scores_only": sig({"inputs": info(serialized)}, {"scores": info(ex_y)},
                                        "tensorflow/serving/classify"),
            "tensorflow/serving/regress": sig({"inputs": info(serialized)}, {"outputs": info(ex_y)},
                                              "tensorflow/serving/regress"),
            "complex": sig({"c": info(c)}, {"r": info(tf.math.real(c))},
                           "tensorflow/serving/predict"),
            "slow": sig({"n": info(n)}, {"s": info(loop)}, "tensorflow/serving/predict"),
        }
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=signatures)
            builder.save()
    return path


def build_tf2_model(path, scale=0.5):
    """TF2 SavedModel (tf.Module): single, multi-input/-output and bytes signatures."""
    import tensorflow as tf

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.a = tf.Variable(scale)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def half(self, x):
            return {"y": self.a * x + 2.0}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="a"),
                                      tf.TensorSpec([None, 2], tf.int64, name="b")])
        def multi(self, a, b):
            return {"sum": a + tf.cast(tf.reduce_sum(b, axis=1), tf.float32),
                    "b_twice": b * 2}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="data_bytes")])
        def echo(self, data_bytes):
            return {"echo_bytes": data_bytes, "length": tf.strings.length(data_bytes),
                    "upper": tf.strings.upper(data_bytes)}

    m = M()
    tf.saved_model.save(m, path, signatures={"serving_default": m.half, "multi": m.multi,
                                             "echo": m.echo})
    return path


def build_hold_model(path):
    """TF2 SavedModel: ``serving_default`` y = 0.5 x + 2, and ``hold``, which writes
    ``DIR/started`` and then runs until ``DIR/release`` exists (a request held in flight
    for exactly as long as the test wants, whatever the machine's load)."""
    import tensorflow as tf

    class Hold(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def half(self, x):
            return {"y": 0.5 * x + 2.0}

        @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="dir")])
        def hold(self, directory):
            started = tf.io.write_file(directory + "/started", "1")
            with tf.control_dependencies([started]):
                spins = tf.identity(0)
            while tf.size(tf.io.matching_files(directory + "/release")) == 0:
                spins += 1
            return {"spins": spins}

    m = Hold()
    tf.saved_model.save(m, path, signatures={"serving_default": m.half, "hold": m.hold})


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_digits_classifier(base_path, version=1, artifacts=None,
                            representative_data=None, train_data=None, epochs=3):
    """A tiny image classifier exported by tfdeploy (with warmup and bytes signature).

    Untrained unless ``train_data`` (a dataset of ``(images, labels)``) is given; then a
    slightly larger one is fit for ``epochs``, so its answers differ between images.
    ``artifacts`` and ``representative_data`` go to `tfdeploy.export.saved_model` (files
    beside the SavedModel).
    """
    import tfdeploy as td

    keras = td.keras
    td.tf.random.set_seed(0)
    features = [keras.layers.Conv2D(4, 3, activation="relu"),
                keras.layers.GlobalAveragePooling2D()] if train_data is None else [
        keras.layers.Conv2D(8, 3, strides=2, activation="relu"),   # enough to learn digits
        keras.layers.MaxPooling2D(), keras.layers.Flatten()]
    model = keras.Sequential([
        keras.Input((32, 32, 1)),
        keras.layers.Rescaling(1.0 / 255),
        *features,
        keras.layers.Dense(10, activation="softmax"),
    ])
    if train_data is not None:
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
        model.fit(train_data, epochs=epochs, verbose=0)
    images = digit_images(4)
    td.export.saved_model(model, base_path, version=version,
                          class_names=[f"digit_{i}" for i in range(10)], warmup_data=images,
                          artifacts=artifacts, representative_data=representative_data)
    return model


def choice_digits(tmp_path_factory, train_ds):
    """``ROOT`` with ``ROOT/digits``: a trained digits classifier with float and int8
    ``.tflite`` files and an ``.onnx`` file beside its SavedModel, what ``auto`` chooses among
    (LiteRT, ONNX Runtime and OpenVINO candidates). Built once per test run and shared by the
    xdist workers (`conftest.build_once`): read-only, copy to change."""
    from conftest import build_once

    return build_once(tmp_path_factory, "choice_digits", lambda root: build_digits_classifier(
        str(root / "digits"), train_data=train_ds,
        artifacts=["tflite_float32", "tflite_int8", "onnx"], representative_data=train_ds))


def digit_images(n, seed=0):
    """``n`` random 32x32x1 images with integer pixel values, as float32."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 32, 32, 1)).astype(np.float32)


def raw_exchange(port, raw, timeout=20):
    """Send ``raw`` bytes in one write, half-close, and read until the server closes."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def rest_outcome(text, dtypes):
    """What the REST handler makes of a predict body, without HTTP: ``(format, {name:
    (dtype, shape, bytes)})``, or the error's ``(code, message)``."""
    from tfdeploy.serving import rest_json
    from tfdeploy.serving.rest import RestApi
    from tfdeploy.serving.status import ServingError
    try:
        fmt, tensors = rest_json.parse_predict(RestApi._parse_body(text.encode()), dtypes)
        return fmt, {k: (v.dtype, v.shape, v.tobytes()) for k, v in tensors.items()}
    except ServingError as exc:
        return exc.code, exc.message


def rest_call(port, method, path, body=None, raw=None, headers=None, timeout=60):
    """One HTTP request on a fresh connection; returns ``(status, parsed JSON or text)``."""
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        text = resp.read().decode()
        if resp.getheader("Content-Type", "").startswith("application/json"):
            return resp.status, json.loads(text)
        return resp.status, text
    finally:
        conn.close()


@pytest.fixture(scope="session")
def model_root(tmp_path_factory):
    """Base paths: half (TF1 graph), tf2 (tf.Module), digits (tfdeploy export). Built once per
    test run (shared by the xdist workers: `conftest.build_once`); read-only, copy to change."""
    from conftest import build_once

    def build(root):
        build_half_plus_two(str(root / "half" / "1"))
        build_tf2_model(str(root / "tf2" / "1"))
        build_digits_classifier(str(root / "digits"))
        (root / "monitoring.config").write_text(
            'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n')

    return build_once(tmp_path_factory, "serving_models", build)


@pytest.fixture(scope="session")
def served(model_root):
    """One running server (free ports) serving half, tf2 and digits; yields the ModelServer."""
    from tfdeploy.serving import ModelConfig, create_server

    configs = [ModelConfig("half", str(model_root / "half"), labels={"stable": 1}),
               ModelConfig("tf2", str(model_root / "tf2")),
               ModelConfig("digits", str(model_root / "digits"))]
    server = create_server(configs=configs, port=0, rest_api_port=0,
                           file_system_poll_wait_seconds=0,
                           monitoring_config_file=str(model_root / "monitoring.config"),
                           max_body_bytes=1 << 20)
    server.start()
    yield server
    server.stop()


# -- unit tests of the repository's version logic (no server needed) ------------------------
def test_list_versions_ignores_non_numeric(tmp_path):
    for d in ("1", "10", "2", "temp-3-abc", "latest", "007x"):
        os.makedirs(tmp_path / d)
    (tmp_path / "5").write_text("a file, not a directory")
    assert list_versions(str(tmp_path)) == [1, 2, 10]
    assert list_versions(str(tmp_path / "missing")) == []


def test_version_policies():
    on_disk = [1, 2, 3, 7]
    assert ModelConfig("m", "/b").wanted(on_disk) == {7}
    assert ModelConfig("m", "/b", num_versions=2).wanted(on_disk) == {3, 7}
    assert ModelConfig("m", "/b", policy="all").wanted(on_disk) == {1, 2, 3, 7}
    assert ModelConfig("m", "/b", policy="specific", versions=(2, 9)).wanted(on_disk) == {2}


@pytest.mark.parametrize("name", ["../etc", "a/b", "a:b", "", "..", "x y"])
def test_model_names_cannot_escape(name):
    with pytest.raises(ValueError, match="Invalid model name"):
        ModelConfig(name, "/base")


def test_bad_policy_and_label_rejected():
    with pytest.raises(ValueError, match="Unrecognized version policy 'newest'"):
        ModelConfig("m", "/b", policy="newest")
    with pytest.raises(ValueError, match="Invalid version label '../x'"):
        ModelConfig("m", "/b", labels={"../x": 1})
    with pytest.raises(ValueError, match="specific policy needs at least one version"):
        ModelConfig("m", "/b", policy="specific")


def test_half_plus_two_builds(tmp_path):
    from tfdeploy.serving.servable import Servable

    path = build_half_plus_two(str(tmp_path / "1"))
    s = Servable("h", 1, path)
    _, out = s.run("", {"x": np.array([1.0, 2.0], np.float32)})
    np.testing.assert_allclose(out["y"], [2.5, 3.0])
    regress = s.signature_defs["tensorflow/serving/regress"]
    assert regress.method_name == "tensorflow/serving/regress"


class ServerProcess:
    """``tfdeploy serve`` in its own process with TensorFlow's oneDNN kernels forced on
    (``TF_ENABLE_ONEDNN_OPTS=1``: where a wrong-rank tensor aborts a convolution), so a
    request that could end the process is seen doing it: ``alive()`` after each request.

    ``args``: the serve flags (ports are added). Use as a context manager.
    """

    def __init__(self, args, onednn=True, timeout=180):
        import subprocess
        import sys
        import tempfile
        import time

        self.grpc_port, self.rest_port = free_port(), free_port()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0",
                   TF_ENABLE_ONEDNN_OPTS="1" if onednn else "0")
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfdeploy.cli", "serve", "--port", str(self.grpc_port),
             "--rest_api_port", str(self.rest_port), *args],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.pid = self.proc.pid
        end = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tfdeploy serve exited with {self.proc.returncode}:\n"
                                   f"{self.output()[-3000:]}")
            try:
                if rest_call(self.rest_port, "GET", "/v1/models/_", timeout=5)[0] in (404, 200):
                    break
            except OSError:
                pass
            if time.monotonic() > end:
                self.close()
                raise RuntimeError(f"tfdeploy serve did not answer in {timeout} s:\n"
                                   f"{self.output()[-3000:]}")
            time.sleep(0.05)   # (a refused connect costs microseconds: poll finely)

    def output(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def onednn_on(self):
        """True when TF said its oneDNN custom operations are on in the served process."""
        return "oneDNN custom operations are on" in self.output()

    def rss_mb(self):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except Exception:  # noqa: BLE001
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        os.unlink(self.log.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
