"""Monitoring a stream of predictions: rolling alerts, their score against the truth, a tail of
a growing file, and the sinks alerts go to (log, JSONL file, webhook).

Pure Python and the standard library: no TensorFlow, so a monitor can run beside any
server. `tfdeploy run sentiment_monitor` uses it to watch the served model's
predictions on a headline stream (replayed, or followed live with ``--follow FILE``).
"""

from tfdeploy.monitor.alerts import RollingAlert, score_alerts
from tfdeploy.monitor.follow import Follower
from tfdeploy.monitor.sinks import JsonlSink, LogSink, WebhookSink
from tfdeploy.monitor.stream import StreamMonitor, follow

__all__ = ["RollingAlert", "score_alerts", "Follower", "LogSink", "JsonlSink", "WebhookSink",
           "StreamMonitor", "follow"]
