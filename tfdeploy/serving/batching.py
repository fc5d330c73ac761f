"""Server-side dynamic batching of concurrent requests (TF Serving's BatchingParameters).

Requests for the same signature with the same per-example input shapes are
queued (one queue per shape, dropped once empty; ``max_enqueued_batches`` bounds
the batches queued across all shapes together); a batch thread runs a batch once
it holds ``max_batch_size`` examples or its oldest request has waited
``batch_timeout_micros``. A request whose deadline passes while it waits leaves
its batch. The batch is padded
up to the next of ``allowed_batch_sizes`` (repeating its first example, as TF
Serving does), run once, and each request gets its own slice of the outputs.
"""

import collections
import os
import threading
import time

import numpy as np

from tfdeploy.serving.status import ServingError, invalid

DEFAULTS = {"max_batch_size": 1000, "batch_timeout_micros": 0, "max_enqueued_batches": 10,
            "num_batch_threads": os.cpu_count() or 1}


def options_from_proto(params):
    """Turn a ``BatchingParameters`` message into validated keyword options."""
    opts = dict(DEFAULTS)
    for name in DEFAULTS:
        if params.HasField(name):
            opts[name] = int(getattr(params, name).value)
    opts["allowed_batch_sizes"] = [int(s) for s in params.allowed_batch_sizes]
    # pad_variable_length_inputs parses (TF Serving files carry it) but has nothing to do:
    # requests whose per-example shapes differ are batched in separate queues.
    return validate_options(**opts)


def validate_options(max_batch_size=1000, batch_timeout_micros=0, max_enqueued_batches=10,
                     num_batch_threads=None, allowed_batch_sizes=()):
    """Check batching options as TF Serving does; return them as a dict."""
    num_batch_threads = num_batch_threads or DEFAULTS["num_batch_threads"]
    for name, value in (("max_batch_size", max_batch_size),
                        ("num_batch_threads", num_batch_threads),
                        ("max_enqueued_batches", max_enqueued_batches)):
        if value < 1:
            raise ValueError(f"Batching parameter {name} must be >= 1, received {value}.")
    if batch_timeout_micros < 0:
        raise ValueError(f"batch_timeout_micros must be >= 0, received {batch_timeout_micros}.")
    allowed = list(allowed_batch_sizes)
    if allowed:
        if any(b <= a for a, b in zip(allowed, allowed[1:])) or allowed[0] < 1:
            raise ValueError(f"allowed_batch_sizes entries must be positive and increasing, "
                             f"received {allowed}.")
        if allowed[-1] != max_batch_size:
            raise ValueError(
                f"The last entry in allowed_batch_sizes must match max_batch_size; last "
                f"entry was {allowed[-1]}; expected {max_batch_size}.")
    return {"max_batch_size": max_batch_size, "batch_timeout_micros": batch_timeout_micros,
            "max_enqueued_batches": max_enqueued_batches, "num_batch_threads": num_batch_threads,
            "allowed_batch_sizes": allowed}


class _Task:
    __slots__ = ("feeds", "size", "done", "result", "error", "batch")

    def __init__(self, feeds, size):
        self.feeds, self.size = feeds, size
        self.done = threading.Event()
        self.result = self.error = self.batch = None


class _Batch:
    __slots__ = ("key", "qkey", "tasks", "size", "created", "closed", "started")

    def __init__(self, key, qkey):
        self.key, self.qkey, self.tasks, self.size = key, qkey, [], 0
        self.created = time.monotonic()
        self.closed = self.started = False


class Batcher:
    """Dynamic batching in front of ``call(signature_key, feeds) -> outputs``.

    Args:
        call: runs one signature on numpy feeds and returns ``{name: ndarray}``.
        on_batch: optional ``f(batch_size)`` called for every batch run (metrics).
        **options: see ``validate_options``.
    """

    def __init__(self, call, on_batch=None, **options):
        self.options = validate_options(**options)
        self._call, self._on_batch = call, on_batch
        self._cond = threading.Condition()
        self._queues = collections.OrderedDict()  # queue key -> deque of _Batch (never empty)
        self._enqueued = 0                         # batches queued across all queues
        self._stopped = False
        self._threads = [threading.Thread(target=self._work, daemon=True,
                                          name=f"tfdeploy-batch-{i}")
                         for i in range(self.options["num_batch_threads"])]
        for t in self._threads:
            t.start()

    def run(self, key, feeds, deadline=None):
        """Queue one request and block until its slice of a batch comes back.

        ``deadline`` (a ``time.monotonic()`` value): past it the request is taken out of
        its queued batch and DEADLINE_EXCEEDED is raised, freeing the caller at once.
        """
        sizes = {int(np.shape(v)[0]) if np.ndim(v) else None for v in feeds.values()}
        if len(sizes) != 1 or None in sizes:
            raise invalid("Batching session Run() input tensors must have equal 0th-dimension "
                          "size and at least rank 1")
        size = sizes.pop()
        limit = self.options["max_batch_size"]
        if size > limit:
            raise invalid(f"Task size {size} is larger than maximum input batch size {limit}")
        if size == 0:
            return self._call(key, feeds)
        task = _Task(feeds, size)
        qkey = (key,) + tuple((n, v.dtype.str, v.shape[1:]) for n, v in sorted(feeds.items()))
        with self._cond:
            if self._stopped:
                raise ServingError("UNAVAILABLE", "The batch scheduler is shutting down")
            queue = self._queues.get(qkey)
            if queue is None or queue[-1].closed or queue[-1].size + size > limit:
                if queue is not None and not queue[-1].closed:
                    queue[-1].closed = True
                if self._enqueued >= self.options["max_enqueued_batches"]:
                    raise ServingError(
                        "UNAVAILABLE",
                        "The batch scheduling queue to which this task was submitted is full")
                if queue is None:
                    queue = self._queues[qkey] = collections.deque()
                queue.append(_Batch(key, qkey))
                self._enqueued += 1
            batch = queue[-1]
            batch.tasks.append(task)
            task.batch = batch
            batch.size += size
            if batch.size >= limit:
                batch.closed = True
            self._cond.notify()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not task.done.wait(timeout):
            self._cancel(task)
        if task.error is not None:
            raise task.error
        return task.result

    def _cancel(self, task):
        """Take a timed-out task out of its batch if the batch has not started."""
        with self._cond:
            if task.done.is_set():
                return
            batch = task.batch
            if not batch.started:
                batch.tasks.remove(task)
                batch.size -= task.size
                if not batch.tasks:
                    queue = self._queues.get(batch.qkey)
                    if queue is not None and batch in queue:
                        queue.remove(batch)
                        self._enqueued -= 1
                        if not queue:
                            del self._queues[batch.qkey]
            task.error = ServingError("DEADLINE_EXCEEDED",
                                      "Deadline Exceeded: the request's deadline passed while "
                                      "it waited for its batch")

    def stop(self):
        """Fail queued requests with UNAVAILABLE and end the batch threads."""
        with self._cond:
            self._stopped = True
            for queue in self._queues.values():
                for batch in queue:
                    for task in batch.tasks:
                        task.error = ServingError("UNAVAILABLE", "The model was unloaded")
                        task.done.set()
            self._queues.clear()
            self._enqueued = 0
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=5)

    # -- batch threads ----------------------------------------------------------------------
    def _next_batch(self):
        timeout = self.options["batch_timeout_micros"] / 1e6
        with self._cond:
            while not self._stopped:
                now, best, wait = time.monotonic(), None, None
                for queue in self._queues.values():
                    if not queue:
                        continue
                    head = queue[0]
                    due = head.created + timeout
                    if head.closed or due <= now:
                        if best is None or head.created < best[0].created:
                            best = (head, queue)
                    else:
                        wait = due - now if wait is None else min(wait, due - now)
                if best is not None:
                    batch, queue = best
                    queue.popleft()
                    self._enqueued -= 1
                    if not queue:
                        del self._queues[batch.qkey]   # shapes seen once do not stay forever
                    batch.started = True
                    return batch
                self._cond.wait(wait)
            return None

    def _work(self):
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._process(batch)

    def _process(self, batch):
        tasks = [t for t in batch.tasks if t.error is None]
        if not tasks:
            return
        batch.size = sum(t.size for t in tasks)
        try:
            names = list(tasks[0].feeds)
            feeds = {n: np.concatenate([t.feeds[n] for t in tasks], axis=0) for n in names}
            padded = batch.size
            for allowed in self.options["allowed_batch_sizes"]:
                if allowed >= batch.size:
                    padded = allowed
                    break
            if padded > batch.size:
                extra = padded - batch.size
                feeds = {n: np.concatenate([v, np.repeat(v[:1], extra, axis=0)], axis=0)
                         for n, v in feeds.items()}
            if self._on_batch is not None:
                self._on_batch(padded)
            outputs = self._call(batch.key, feeds)
            for name, value in outputs.items():
                if np.ndim(value) == 0 or np.shape(value)[0] != padded:
                    raise ServingError(
                        "INTERNAL", f"Batched output tensor '{name}' has shape "
                                    f"{list(np.shape(value))}; its 0th dimension must equal the "
                                    f"batch size {padded}. Disable batching for this model.")
            start = 0
            for task in tasks:
                task.result = {n: v[start:start + task.size] for n, v in outputs.items()}
                start += task.size
        except ServingError as exc:
            for task in tasks:
                task.error = exc
        except Exception as exc:  # a batch must never leave its callers waiting
            for task in tasks:
                task.error = ServingError("INTERNAL", f"Batch failed: {exc}")
        finally:
            for task in tasks:
                task.done.set()
