"""Request counters and latency histograms, exposed through ``prometheus_client``.

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
RUNTIME_SELECTED = ":tfdeploy:serving:runtime_selected"
RUNTIME_CANDIDATE_P50 = ":tfdeploy:serving:runtime_candidate_p50_microseconds"
RUNTIME_CANDIDATE_CONCURRENT = ":tfdeploy:serving:runtime_candidate_concurrent_calls_per_second"
_HELP = {
    RUNTIME_SELECTED: ("gauge", "1 for the runtime, artifact and threads per call serving a "
                                "model version's serving_default (--runtime)."),
    RUNTIME_CANDIDATE_P50: ("gauge", "Median batch-1 call time measured at load for each "
                                     "runtime, artifact and thread count --runtime considered "
                                     "(passed: verified against the SavedModel)."),
    RUNTIME_CANDIDATE_CONCURRENT: ("gauge", "Batch-1 calls/s under concurrent calls measured "
                                            "at load for the candidates --runtime auto found "
                                            "tied alone (the most calls/s serves)."),
    REQUEST_COUNT: ("counter", "The total number of requests, by model and status code."),
    REQUEST_LATENCY: ("histogram", "Distribution of request latency in microseconds, "
                                   "from receiving a request to sending its reply."),
    RUNTIME_LATENCY: ("histogram", "Distribution of model run latency in microseconds."),
    BATCH_SIZE: ("histogram", "Distribution of the sizes of the batches run by dynamic batching."),
}


class Metrics:
    """A thread-safe registry of the server's counters and histograms."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counters = {}    # (name, labels) -> int
        self._histograms = {}  # (name, labels) -> [bucket counts..., sum, count]
        self._gauges = {}      # (name, labels) -> float
        self._registry = None
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

    def set_gauge(self, name, value, **labels):
        with self._lock:
            self._gauges[(name, tuple(labels.items()))] = float(value)

    def clear_gauges(self, **match):
        """Drop the gauges whose labels include ``match`` (e.g. an unloaded version's)."""
        match = {k: str(v) for k, v in match.items()}
        with self._lock:
            self._gauges = {k: v for k, v in self._gauges.items()
                            if not match.items() <= {a: str(b) for a, b in k[1]}.items()}

    def request_done(self, model_name, api, entrypoint, status, seconds):
        """Record one finished request (``status`` is a canonical code name)."""
        self.count_request(model_name or "", status)
        self.observe(REQUEST_LATENCY, seconds * 1e6, model_name=model_name or "", API=api,
                     entrypoint=entrypoint)

    def collect(self):
        """Metric families for ``prometheus_client`` (a custom collector on a private registry).

        Counters keep TF Serving's sample names (no ``_total`` suffix), so dashboards built
        on TF Serving keep working; prometheus_client types such a family "untyped".
        """
        from prometheus_client.core import HistogramMetricFamily
        from prometheus_client.metrics_core import Metric

        with self._lock:
            counters = dict(self._counters)
            histograms = {k: list(v) for k, v in self._histograms.items()}
            gauges = dict(self._gauges)
        for name in sorted({k[0] for k in gauges}):
            family = Metric(name, _HELP[name][1], "gauge")
            for (n, labels), value in sorted(gauges.items()):
                if n == name:
                    family.add_sample(name, dict(labels), value)
            yield family
        for name in sorted({k[0] for k in counters} | {k[0] for k in histograms}):
            kind, help_text = _HELP[name]
            if kind == "counter":
                family = Metric(name, help_text, "unknown")
                for (n, labels), value in sorted(counters.items()):
                    if n == name:
                        family.add_sample(name, dict(labels), value)
                yield family
                continue
            names = None
            family = None
            for (n, labels), h in sorted(histograms.items()):
                if n != name:
                    continue
                if family is None:
                    names = [k for k, _ in labels]
                    family = HistogramMetricFamily(name, help_text, labels=names)
                cumulative, buckets = 0, []
                for bound, c in zip(list(self._buckets[name]) + ["+Inf"], h[:-2]):
                    cumulative += c
                    buckets.append((str(bound), cumulative))
                family.add_metric([v for _, v in labels], buckets, float(h[-2]))
            if family is not None:
                yield family

    def render(self):
        """Return the Prometheus text exposition (``prometheus_client.generate_latest``)."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = self._registry
        if registry is None:
            registry = self._registry = CollectorRegistry(auto_describe=False)
            registry.register(self)
        return generate_latest(registry).decode("utf-8")
