"""tfdeploy.monitor: alerts scored against the truth, a followed file, and alert sinks
(a webhook tested against a real local HTTP receiver that fails on purpose)."""

import http.server
import json
import threading
import time

import pytest

from tfdeploy.errors import DeliveryError, TextDataError
from tfdeploy.monitor import (Follower, JsonlSink, RollingAlert, StreamMonitor, WebhookSink,
                              follow, score_alerts)
from tfdeploy.recipes.sentiment_monitor import read_stream


def _events(pairs):
    return [{"index": i, "event": e} for i, e in pairs]


def test_score_alerts_counts_delay_false_alarms_and_missed_surges():
    truth = _events([(100, "alert"), (200, "clear"), (600, "alert"), (700, "clear")])
    model = _events([(112, "alert"), (205, "clear"),      # surge 1 found 12 headlines late
                     (400, "alert"), (420, "clear")])     # a false alarm; surge 2 missed
    score = score_alerts(model, truth, 1000)
    assert score["surges"] == 2 and score["detected"] == 1 and score["missed_surges"] == 1
    assert score["delays"] == [12] and score["mean_delay"] == 12
    assert score["false_alarms"] == 1 and score["false_alarms_per_1000"] == pytest.approx(1.0)
    # an alert still open at the end of the stream runs to its end
    assert score_alerts(_events([(650, "alert")]), truth, 1000)["detected"] == 1


def test_stream_monitor_scores_the_model_against_labels_with_gaps():
    # a model that misses every third negative headline; labels missing on some lines
    labels = ["positive"] * 60 + ["negative"] * 60 + ["positive"] * 60
    records = [{"time": str(i), "text": f"{i}:{lab}", "label": None if i % 7 == 0 else lab}
               for i, lab in enumerate(labels)]

    def predict(texts):
        out = []
        for t in texts:
            i, lab = t.split(":")
            out.append("positive" if lab == "negative" and int(i) % 3 == 0 else lab)
        return out

    monitor = StreamMonitor(predict, window=20, threshold=0.5, hysteresis=0.2)
    for start in range(0, len(records), 7):
        monitor.feed(records[start:start + 7])
    score = monitor.score()
    assert score["surges"] == 1 and score["detected"] == 1 and score["false_alarms"] == 0
    assert 0 < score["mean_delay"] <= 10      # the model's share rises more slowly
    assert score["labelled_headlines"] == len(records) - len(range(0, len(records), 7))
    assert [e["event"] for e in monitor.model.events] == ["alert", "clear"]


def test_read_stream_keeps_labels_when_one_line_has_none(tmp_path):
    path = tmp_path / "stream.jsonl"
    rows = [{"time": "t0", "text": "a", "label": "negative"}, {"time": "t1", "text": "b"},
            {"time": "t2", "text": "c", "label": "positive"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r["label"] for r in read_stream(str(path))] == ["negative", None, "positive"]
    csv_path = tmp_path / "stream.csv"
    csv_path.write_text("time,text,label\nt0,a,negative\nt1,b,\nt2,c,positive\n")
    assert [r["label"] for r in read_stream(str(csv_path))] == ["negative", None, "positive"]


def test_rolling_alert_hysteresis_does_not_flap():
    alert = RollingAlert(window=10, threshold=0.5, hysteresis=0.2)
    # half negative, then a share hovering at 0.4-0.6, then calm: one alert, one clear
    hover = "n p n p p n p n n p".split() * 3
    labels = ["negative" if c == "n" else "positive" for c in "n p".split() * 5 + hover] + \
        ["positive"] * 10
    for i, label in enumerate(labels):
        alert.update(str(i), label)
    assert [(e["event"], e["index"]) for e in alert.events] == [("alert", 9), ("clear", 45)]
    without = RollingAlert(window=10, threshold=0.5, hysteresis=0.0)
    for i, label in enumerate(labels):
        without.update(str(i), label)
    assert len(without.events) > 2          # hysteresis off: it flaps


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_follower_reads_lines_as_they_are_appended(tmp_path, kind):
    path = tmp_path / f"news.{kind}"
    follower = Follower(str(path))
    assert follower.poll() == []                       # not there yet
    if kind == "jsonl":
        lines = [json.dumps({"time": str(i), "text": f"h{i}", "label": "neutral"})
                 for i in range(5)]
    else:
        path.write_text("time,text,label\n")
        lines = [f'{i},"h{i}, quoted",neutral' for i in range(5)]
    with open(path, "a") as f:
        f.write(lines[0] + "\n" + lines[1][:7])        # the second line is half written
    got = follower.poll()
    assert [r["time"] for r in got] == ["0"]
    with open(path, "a") as f:
        f.write(lines[1][7:] + "\n" + "\n".join(lines[2:]) + "\n")
    got = follower.poll()
    assert [r["time"] for r in got] == ["1", "2", "3", "4"]
    assert got[0]["label"] == "neutral" and got[0]["text"].startswith("h1")
    path.write_text("" if kind == "jsonl" else "time,text\n")   # truncated: start over
    assert follower.poll() == []


def test_follower_rejects_bad_lines_with_the_line_number(tmp_path):
    path = tmp_path / "news.jsonl"
    path.write_text('{"time": "0", "text": "ok"}\n{"time": "1"}\n')
    with pytest.raises(TextDataError, match="line 2"):
        Follower(str(path)).poll()
    with pytest.raises(TextDataError, match="Supported files"):
        Follower(str(tmp_path / "news.txt"))


def test_follow_tails_a_growing_file_until_idle(tmp_path):
    path = tmp_path / "live.jsonl"
    path.write_text("")
    labels = ["positive"] * 10 + ["negative"] * 10 + ["positive"] * 10

    def writer():
        for i, label in enumerate(labels):
            with open(path, "a") as f:
                f.write(json.dumps({"time": str(i), "text": label, "label": label}) + "\n")
            time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    monitor = StreamMonitor(lambda texts: texts, window=6, threshold=0.5, hysteresis=0.2)
    seen = follow(str(path), monitor, batch=4, poll_interval=0.02, idle_exit=1.0)
    thread.join()
    assert seen == len(labels) == monitor.count
    assert [e["event"] for e in monitor.model.events] == ["alert", "clear"]
    assert monitor.score()["detected"] == 1 and monitor.score()["mean_delay"] == 0


class _Receiver(http.server.BaseHTTPRequestHandler):
    """Fails the first ``fail`` POSTs with 503 and drops the connection of one more."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server = self.server
        server.calls += 1
        if server.calls <= server.fail:
            self.send_response(503)
            self.end_headers()
            return
        if server.calls == server.fail + 1 and server.drop:
            self.connection.close()                       # no answer at all
            return
        server.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.calls, server.fail, server.drop, server.received = 0, 0, False, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def _alerts(n):
    return [{"id": f"{i}-{'alert' if i % 2 == 0 else 'clear'}", "index": i} for i in range(n)]


def test_webhook_retries_and_loses_no_alert(receiver):
    receiver.fail, receiver.drop = 3, True
    sink = WebhookSink(f"http://127.0.0.1:{receiver.server_port}/hook", retries=5, backoff=0.01)
    sink.emit(_alerts(4)[0])            # 3 x 503 and one dropped connection, then 200
    assert [e["id"] for e in receiver.received] == ["0-alert"] and not sink.pending
    for event in _alerts(4)[1:]:
        sink.emit(event)
    sink.close()
    assert [e["id"] for e in receiver.received] == [e["id"] for e in _alerts(4)]
    assert sink.attempts == 4 + 3 + 1 and not sink.pending


def test_webhook_queues_while_the_receiver_is_down_and_delivers_in_order(receiver):
    receiver.fail = 6                   # longer than one event's retries
    sink = WebhookSink(f"http://127.0.0.1:{receiver.server_port}/hook", retries=2,
                       backoff=0.01, close_timeout=5)
    sink.emit(_alerts(1)[0])            # 3 tries, all 503: queued
    assert len(sink.pending) == 1 and receiver.received == []
    for event in _alerts(3)[1:]:
        sink.emit(event)
    sink.close()
    assert [e["id"] for e in receiver.received] == [e["id"] for e in _alerts(3)]


def test_webhook_that_never_answers_raises_delivery_error(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                           # nothing listens there
    sink = WebhookSink(f"http://127.0.0.1:{port}/", retries=1, backoff=0.01,
                       close_timeout=0.2)
    sink.emit({"id": "0-alert"})
    with pytest.raises(DeliveryError, match="1 alert"):
        sink.close()
    assert [e["id"] for e in sink.pending] == ["0-alert"]
    with pytest.raises(ValueError, match="http"):
        WebhookSink("ftp://x")


def test_jsonl_sink_appends_each_event(tmp_path):
    sink = JsonlSink(str(tmp_path / "out" / "alerts.jsonl"))
    for event in _alerts(3):
        sink.emit(event)
    lines = (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [e["id"] for e in _alerts(3)]
