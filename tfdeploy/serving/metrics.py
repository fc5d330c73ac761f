"""Request counters and latency histograms, rendered as Prometheus text.

Metric names follow TF Serving's Prometheus exporter, which turns
``/tensorflow/serving/request_count`` into ``:tensorflow:serving:request_count``.
Latencies are in microseconds, as TF Serving reports them.
"""

import bisect
import threading

DEFAULT_PATH = "/monitoring/prometheus/metrics"
LATENCY_BUCKETS_US = (100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
                      250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
RUNTIME_LATENCY = ":tensorflow:serving:runtime_latency"
BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"
_HELP = {
    REQUEST_COUNT: ("counter", "The total number of requests, by model and status code."),
    REQUEST_LATENCY: ("histogram", "Distribution of request latency in microseconds, "
                                   "from receiving a request to sending its reply."),
    RUNTIME_LATENCY: ("histogram", "Distribution of model run latency in microseconds."),
    BATCH_SIZE: ("histogram", "Distribution of the sizes of the batches run by dynamic batching."),
}


def _escape(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs):
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}" if pairs else ""


class Metrics:
    """A thread-safe registry of the server's counters and histograms."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counters = {}    # (name, labels) -> int
        self._histograms = {}  # (name, labels) -> [bucket counts..., sum, count]
        self._buckets = {REQUEST_LATENCY: LATENCY_BUCKETS_US, RUNTIME_LATENCY: LATENCY_BUCKETS_US,
                         BATCH_SIZE: BATCH_BUCKETS}

    def count_request(self, model_name, status):
        key = (REQUEST_COUNT, (("model_name", model_name), ("status", status)))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + 1

    def observe(self, name, value, **labels):
        buckets = self._buckets[name]
        key = (name, tuple(labels.items()))
        with self._lock:
            h = self._histograms.get(key)
            if h is None:
                h = self._histograms[key] = [0] * (len(buckets) + 3)
            h[bisect.bisect_left(buckets, value)] += 1
            h[-2] += value
            h[-1] += 1

    def request_done(self, model_name, api, entrypoint, status, seconds):
        """Record one finished request (``status`` is a canonical code name)."""
        self.count_request(model_name or "", status)
        self.observe(REQUEST_LATENCY, seconds * 1e6, model_name=model_name or "", API=api,
                     entrypoint=entrypoint)

    def render(self):
        """Return the Prometheus text exposition (version 0.0.4)."""
        with self._lock:
            counters = dict(self._counters)
            histograms = {k: list(v) for k, v in self._histograms.items()}
        lines, names = [], sorted({k[0] for k in counters} | {k[0] for k in histograms})
        for name in names:
            kind, help_text = _HELP[name]
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for (n, labels), value in sorted(counters.items()):
                if n == name:
                    lines.append(f"{name}{_labels(labels)} {value}")
            for (n, labels), h in sorted(histograms.items()):
                if n != name:
                    continue
                cumulative = 0
                for bound, c in zip(list(self._buckets[name]) + ["+Inf"], h[:-2]):
                    cumulative += c
                    lines.append(f"{name}_bucket{_labels(labels + (('le', bound),))} {cumulative}")
                lines.append(f"{name}_sum{_labels(labels)} {float(h[-2])!r}")
                lines.append(f"{name}_count{_labels(labels)} {h[-1]}")
        return "\n".join(lines) + "\n"
