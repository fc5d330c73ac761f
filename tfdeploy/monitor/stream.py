"""Feed a stream of records through a predictor: the model's alerts go to sinks, the true
labels' alerts are kept to score them."""

import time

from tfdeploy.monitor.alerts import RollingAlert, score_alerts
from tfdeploy.monitor.follow import Follower


class StreamMonitor:
    """Predict each record's label, keep rolling alerts, send the model's alert events on.

    Args:
        predict: ``predict(list of texts) -> list of labels`` (e.g. a REST call).
        window: the `RollingAlert` window, shared by the model's monitor and the
            one fed the true labels. Defaults to 40.
        threshold: the `RollingAlert` threshold (shared likewise). Defaults to 0.5.
        hysteresis: the `RollingAlert` hysteresis (shared likewise). Defaults to 0.1.
        negative: the label counted by both monitors. Defaults to "negative".
        sinks: objects with ``emit(event)`` and ``close()``
            (`LogSink`, `JsonlSink`, `WebhookSink`). Defaults to ().
        on_step: optional ``on_step(index, share, true_share)`` per record
            (``true_share`` None for an unlabelled record), e.g. for TensorBoard.

    Each record is a dict with ``time`` and ``text`` and, optionally, ``label``.
    Records with a label also feed the truth monitor (at their own stream
    index), so a stream labelled in parts is scored on what is labelled.
    """

    def __init__(self, predict, window=40, threshold=0.5, hysteresis=0.1,
                 negative="negative", sinks=(), on_step=None):
        self.predict = predict
        self.model = RollingAlert(window, threshold, hysteresis, negative)
        self.truth = RollingAlert(window, threshold, hysteresis, negative)
        self.sinks, self.on_step = list(sinks), on_step
        self.settings = {"window": int(window), "threshold": float(threshold),
                         "hysteresis": float(hysteresis)}
        self.count, self.labelled = 0, 0
        self.predicted, self.shares, self.true_shares, self.times = [], [], [], []

    def feed(self, records):
        """Predict and monitor ``records`` (one batch); returns the model events raised."""
        records = list(records)
        if not records:
            return []
        labels = list(self.predict([str(r["text"]) for r in records]))
        raised = []
        for record, label in zip(records, labels):
            index = self.count
            self.count += 1
            before = len(self.model.events)
            share = self.model.update(record["time"], label, index=index)
            true_share = None
            if record.get("label") is not None:
                self.labelled += 1
                true_share = self.truth.update(record["time"], record["label"], index=index)
            self.predicted.append(label)
            self.shares.append(share)
            self.true_shares.append(true_share)
            self.times.append(str(record["time"]))
            for j in range(before, len(self.model.events)):
                event = {"id": f"{index}-{self.model.events[j]['event']}",
                         **self.model.events[j], **self.settings}
                self.model.events[j] = event
                raised.append(event)
                for sink in self.sinks:
                    sink.emit(event)
            if self.on_step is not None:
                self.on_step(index, share, true_share)
        return raised

    def score(self):
        """`score_alerts` of the model's alerts against the true labels' (None: no labels)."""
        if not self.labelled:
            return None
        out = score_alerts(self.model.events, self.truth.events, self.count)
        out["labelled_headlines"] = self.labelled
        out["headlines"] = self.count
        return out

    def close(self):
        """Close every sink (a webhook re-sends what is pending; its error is raised last)."""
        error = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # close the others first
                error = error or exc
        if error is not None:
            raise error


def follow(path, monitor, batch=10, poll_interval=0.5, idle_exit=None, from_start=True,
           stop=None):
    """Tail ``path`` (a growing JSONL or CSV file) into ``monitor`` until stopped.

    Args:
        path: the file (`Follower` reads it).
        monitor: a `StreamMonitor`.
        batch: records per predict call. Defaults to 10.
        poll_interval: seconds between polls when nothing is new. Defaults to 0.5.
        idle_exit: stop after this many seconds without a new record (None:
            run until ``stop`` or Ctrl-C). Defaults to None.
        from_start: also monitor what the file already holds. Defaults to True.
        stop: optional ``threading.Event``; set it to stop.

    Returns:
        The number of records monitored.
    """
    follower = Follower(path, from_start=from_start)
    last, seen = time.monotonic(), 0
    try:
        while stop is None or not stop.is_set():
            records = follower.poll()
            if records:
                for i in range(0, len(records), int(batch)):
                    monitor.feed(records[i:i + int(batch)])
                seen += len(records)
                last = time.monotonic()
                continue
            if idle_exit is not None and time.monotonic() - last >= float(idle_exit):
                break
            time.sleep(float(poll_interval))
    except KeyboardInterrupt:
        pass
    return seen
