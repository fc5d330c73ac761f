"""A rolling-share alert with hysteresis, and the score of one alert series against another."""

import collections


class RollingAlert:
    """Rolling share of negative predictions; events when it crosses the threshold.

    The alert rises when the window is full and the share reaches ``threshold``,
    and clears only when the share falls below ``threshold - hysteresis`` (so a
    share hovering at the threshold does not flap).

    Args:
        window: predictions in the window.
        threshold: share at which an alert is raised (once the window is full).
        hysteresis: the alert clears when the share falls below
            ``threshold - hysteresis``. Defaults to 0.1.
        negative: the label counted as negative. Defaults to "negative".

    Raises:
        ValueError: a window below 1, a threshold outside (0, 1], or a
            hysteresis outside [0, threshold).
    """

    def __init__(self, window=40, threshold=0.5, hysteresis=0.1, negative="negative"):
        if int(window) < 1 or not 0 < float(threshold) <= 1 or not 0 <= hysteresis < threshold:
            raise ValueError(f"window must be >= 1, threshold in (0, 1] and hysteresis in "
                             f"[0, threshold); received {window!r}, {threshold!r}, "
                             f"{hysteresis!r}.")
        self.window, self.threshold, self.negative = int(window), float(threshold), negative
        self.hysteresis = float(hysteresis)
        self.clear_below = self.threshold - self.hysteresis
        self.recent = collections.deque(maxlen=self.window)
        self.count = 0
        self.active = False
        self.events = []

    def update(self, time_, label, index=None):
        """Add one prediction; returns the rolling share (an event is appended on a crossing).

        ``index`` is the headline's position in the stream, recorded in events
        (defaults to the number of updates so far); pass it when some headlines
        are skipped (the truth monitor skips unlabelled ones).
        """
        self.recent.append(label == self.negative)
        index = self.count if index is None else int(index)
        self.count += 1
        share = sum(self.recent) / len(self.recent)
        full = len(self.recent) == self.window
        event = None
        if full and not self.active and share >= self.threshold:
            self.active, event = True, "alert"
        elif self.active and share < self.clear_below:
            self.active, event = False, "clear"
        if event:
            self.events.append({"time": time_, "index": index, "event": event,
                                "negative_share": share})
        return share


def _intervals(events, length):
    """``[(start, end)]`` headline indices of each alert (end exclusive; open ones run to the
    end of the stream)."""
    out, start = [], None
    for e in sorted(events, key=lambda e: e["index"]):
        if e["event"] == "alert" and start is None:
            start = e["index"]
        elif e["event"] == "clear" and start is not None:
            out.append((start, e["index"]))
            start = None
    if start is not None:
        out.append((start, max(int(length), start + 1)))
    return out


def score_alerts(events, true_events, length):
    """Score an alert series (the model's) against the alerts of the true labels.

    A true surge is one alert-to-clear interval of ``true_events``. It is
    *detected* when a model alert interval overlaps it; the *delay* is the
    model alert's first headline minus the true alert's (negative: the model
    fired earlier). A model alert overlapping no true surge is a *false alarm*.

    Args:
        events: the model's events (``{"index", "event"}``, as `RollingAlert` writes).
        true_events: the events of a `RollingAlert` fed the true labels.
        length: headlines in the stream (for the rate and for open alerts).

    Returns:
        A dict: ``surges``, ``detected``, ``missed_surges``, ``delays`` (headlines, per
        detected surge), ``mean_delay`` (None when none detected), ``alerts``,
        ``false_alarms`` and ``false_alarms_per_1000`` (per 1,000 headlines).
    """
    model, truth = _intervals(events, length), _intervals(true_events, length)
    delays, used = [], set()
    for start, end in truth:
        hits = [i for i, (s, e) in enumerate(model) if s < end and e > start]
        if hits:
            delays.append(model[hits[0]][0] - start)
            used.update(hits)
    false_alarms = len(model) - len(used)
    return {"surges": len(truth), "detected": len(delays),
            "missed_surges": len(truth) - len(delays), "delays": delays,
            "mean_delay": sum(delays) / len(delays) if delays else None,
            "alerts": len(model), "false_alarms": false_alarms,
            "false_alarms_per_1000": 1000.0 * false_alarms / max(int(length), 1)}
