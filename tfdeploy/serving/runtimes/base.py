"""The runtime interface, and the shared half of the runtimes that run one exported file.

A runtime runs one artifact of a model version (an entry of
`tfdeploy.runtime.artifacts.read_artifacts`) and answers exactly as the version's
SavedModel signature does: same input and output names, same dtypes. Outputs a
``.tflite``/``.onnx`` file lacks (``class_index``, ``class_label``) are computed from
its probabilities with the class labels recorded in the manifest.
"""

import contextlib
import os
import queue
import threading

import numpy as np

from tfdeploy.errors import ArtifactError, EmptyBatchError, InvalidInputError
from tfdeploy.runtime.artifacts import check_file

DEFAULT_SIGNATURE = "serving_default"


def default_threads():
    """The CPU cores this process may run on (its affinity mask, as a container's cpuset
    limits it): what TensorFlow's intra-op pool uses per call, and so the default threads per
    call of every file runtime, so that ``--runtime auto`` compares them on equal terms."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:   # (no affinity call on this platform)
        return os.cpu_count() or 1


class Runtime:
    """One loaded artifact of a model version, callable like its SavedModel's signatures.

    Args:
        version_dir: the version directory (``BASE/NAME/VERSION``).
        artifact: one entry of ``read_artifacts(version_dir)`` this runtime can run.
        num_threads: threads the runtime may use per call; None: `default_threads()`
            (the cores this process may use, as TensorFlow). Defaults to None.

    Attributes:
        name: "tensorflow", "litert", "onnxruntime" or "openvino".
        formats: the artifact formats it runs.
    """

    name = None
    formats = ()

    def __init__(self, version_dir, artifact, num_threads=None):
        if artifact.get("format") not in self.formats:
            raise ArtifactError(
                f"The {self.name} runtime runs {list(self.formats)} artifacts; "
                f"{artifact.get('path') or artifact.get('file')!r} is "
                f"{artifact.get('format')!r}. Pick an artifact whose runtimes include "
                f"{self.name!r}.")
        self.version_dir = version_dir
        self.artifact = artifact
        self.num_threads = int(num_threads) if num_threads else default_threads()

    @property
    def signature_keys(self):
        """The SavedModel signature keys this runtime can run (a frozenset)."""
        raise NotImplementedError

    def call(self, key, feeds):
        """Run signature ``key`` on ``{input_name: ndarray}``; ``{output_name: ndarray}``."""
        raise NotImplementedError

    def close(self):
        """Release the loaded model (the runtime cannot be called afterwards)."""

    def describe(self):
        """``{"runtime", "artifact", "file", "format", "precision", "threads", ...}``."""
        return {"runtime": self.name, "artifact": self.artifact.get("name"),
                "file": self.artifact.get("file"), "format": self.artifact.get("format"),
                "precision": self.artifact.get("precision"), "threads": self.num_threads,
                "signature_keys": sorted(self.signature_keys)}

    def __repr__(self):
        return f"<{type(self).__name__} {self.artifact.get('file')!r}>"


class FileRuntime(Runtime):
    """A runtime for one exported file that runs ``serving_default`` only.

    Subclasses implement ``_open(threads)`` (returns a `tfdeploy.runtime` runner: ``run(x)``
    on the file's own tensor names) and set ``thread_safe``. A thread-safe runner is shared
    by every call. Otherwise calls take runners from a mixed pool: a call that starts while
    no other call is in flight gets the first runner, with ``num_threads`` threads (one
    request alone has every core, as in TensorFlow); a call that starts while others are in
    flight gets a runner of one thread, created when needed, up to ``instances`` of them, so
    concurrent requests use every core, one thread each, rather than queue behind one
    interpreter or oversubscribe the cores (measured in docs/runtimes.md, "Threads and
    concurrent requests"). Only a call alone gets several threads: under a steady stream of
    requests, taking the first runner whenever it was free put its threads beside a
    one-thread runner per core, more threads than cores (MobileNetV2 int8 in ONNX Runtime,
    served at 8 clients: 143 requests/s at 11.6 ms of server CPU each).

    Args:
        instances: one-thread runners kept for overlapping calls when the runner is not
            thread-safe (each holds its own copy of the tensors); 1 keeps the first runner
            only, and overlapping calls wait for it. Defaults to `default_threads()`.
    """

    thread_safe = True

    def __init__(self, version_dir, artifact, num_threads=None, instances=None):
        super().__init__(version_dir, artifact, num_threads)
        for field in ("path", "inputs", "outputs", "signature"):
            if not artifact.get(field):
                raise ArtifactError(
                    f"Artifact entry {artifact.get('file')!r} has no {field!r}; pass an entry "
                    "of tfdeploy.runtime.artifacts.read_artifacts(version_dir).")
        self.path = artifact["path"]
        check_file(artifact)
        signature = artifact["signature"]
        self._key = signature.get("key", DEFAULT_SIGNATURE)
        self._input_dtypes = {k: np.dtype(v["dtype"]) for k, v in signature["inputs"].items()}
        self._outputs = signature["outputs"]   # name -> {"dtype", "shape"}, in signature order
        labels = artifact.get("class_labels")
        self._labels = (np.array([str(c).encode() for c in labels], dtype=object)
                        if labels else None)
        unknown = [n for n in self._outputs
                   if n not in artifact["outputs"] and n not in artifact.get("derived", {})]
        if unknown:
            raise ArtifactError(
                f"Artifact {self.path!r} maps no tensor to the signature's outputs {unknown}; "
                "re-export the version.")
        # per call: (signature input, file tensor, dtype, shape) and the outputs' plan
        self._feeds = [(k, t, self._input_dtypes[k], tuple(signature["inputs"][k]["shape"]))
                       for k, t in artifact["inputs"].items()]
        self._plan = [(n, np.dtype(spec["dtype"]) if n in artifact["outputs"] else None,
                       artifact["outputs"].get(n)) for n, spec in self._outputs.items()]
        self._instances = 1 if self.thread_safe else max(1, int(instances or default_threads()))
        self._pool = queue.SimpleQueue()     # idle one-thread runners
        self._create_lock = threading.Lock()
        self._first = threading.Lock()       # instances=1: held while a call runs on it
        self._in_flight, self._count_lock = 0, threading.Lock()
        self._runners = [self._open(self.num_threads)]

    def zeros(self, batch=1):
        """Zeros of every input's signature shape and dtype, ``batch`` for an unknown
        dimension: a call to time when there is no record to time on."""
        return {name: np.zeros([batch if s == -1 else s for s in shape], dtype)
                for name, _, dtype, shape in self._feeds}

    def _open(self, threads):
        raise NotImplementedError

    @property
    def signature_keys(self):
        return frozenset([self._key])

    def _run(self, x):
        if not self._runners:
            raise ArtifactError(f"The {self.name} runtime of {self.path!r} was closed; load "
                                "the version again.")
        if self.thread_safe:
            return self._runners[0].run(x)
        if self._instances == 1:   # one runner: overlapping calls wait for it
            with self._first:
                return self._runners[0].run(x)
        with self.overlapping() as overlapping:
            if not overlapping:   # alone (no call in flight, so none on the first runner)
                return self._runners[0].run(x)
            try:   # an idle one-thread runner; else a new one (up to `instances`); else wait
                runner = self._pool.get_nowait()
            except queue.Empty:
                runner = None
                with self._create_lock:
                    if len(self._runners) <= self._instances:
                        runner = self._open(1)
                        self._runners.append(runner)
                if runner is None:
                    runner = self._pool.get()
            try:
                return runner.run(x)
            finally:
                self._pool.put(runner)

    @contextlib.contextmanager
    def overlapping(self):
        """Count a call in flight for its duration; yields whether another call was in
        flight when it started (it then runs on one thread). A call that finds none is the
        only one on the first runner: every earlier call left its runner before it was
        uncounted, and every later one finds this one."""
        with self._count_lock:
            others = self._in_flight
            self._in_flight += 1
        try:
            yield others > 0
        finally:
            with self._count_lock:
                self._in_flight -= 1

    def call(self, key, feeds):
        if key != self._key:
            raise ArtifactError(
                f"{os.path.basename(self.path)} ({self.name}) runs signature {self._key!r} "
                f"only, not {key!r}; signatures such as {key!r} need the tensorflow runtime.")
        values = {}
        for name, tensor, dtype, shape in self._feeds:
            if name not in feeds:
                raise InvalidInputError(f"Missing input {name!r}; signature {key!r} takes "
                                        f"{sorted(t[0] for t in self._feeds)}.")
            values[tensor] = self._checked(key, name, feeds[name], dtype, shape)
        result = self._run(values[self._feeds[0][1]] if len(values) == 1 else values)
        out = {}
        for name, dtype, tensor in self._plan:
            if tensor is not None:
                out[name] = np.asarray(result[tensor], dtype=dtype)   # (no copy when it is)
            else:
                out[name] = self._derive(name, out, result)
        return out

    def _checked(self, key, name, value, dtype, shape):
        """``value`` as the signature's dtype (no copy when it is already), refused (naming
        the signature's input, not the file's tensor) when its shape does not fit or it
        holds no samples."""
        try:
            value = np.asarray(value, dtype=dtype)   # the same array when it already is
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"Input {name!r} cannot be read as {dtype.name} ({exc}).") from exc
        if value.ndim != len(shape) or any(s != -1 and s != v for s, v in zip(shape, value.shape)):
            raise InvalidInputError(
                f"Input {name!r} has shape {value.shape}; signature {key!r} takes {shape} "
                "(-1: any size).")
        if value.ndim and value.shape[0] == 0:
            raise EmptyBatchError(
                f"Input {name!r} holds no samples (shape {value.shape}); send at least one.")
        return value

    def _derive(self, name, out, result):
        op, source = self.artifact["derived"][name].split(":", 1)
        value = out[source] if source in out else result[self.artifact["outputs"][source]]
        if op == "argmax":
            return np.argmax(value, axis=-1).astype(np.int64)
        if op == "label":
            if self._labels is None:
                raise ArtifactError(f"Artifact manifest of {self.path!r} derives {name!r} from "
                                    "class labels but records none; re-export the version.")
            return self._labels[np.asarray(value, dtype=np.int64)]
        raise ArtifactError(f"Artifact manifest of {self.path!r} derives {name!r} with an "
                            f"unknown operation {op!r}; re-export with this tfdeploy.")

    def close(self):
        self._runners = []
        self._pool = queue.SimpleQueue()

    def describe(self):
        return {**super().describe(), "path": self.path, "instances": len(self._runners),
                "max_instances": self._instances,
                "instance_threads": [r.num_threads for r in self._runners]}
