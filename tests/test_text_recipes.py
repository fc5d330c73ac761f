"""The three text recipes end to end with tiny settings (real training, export, server)."""

import json
import os

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.recipes import answer_retrieval, recommender, sentiment_monitor
from tfdeploy.recipes.sentiment_monitor import RollingAlert

TINY = ["--epochs", "3", "--lr", "0.01", "--fine-tune-epochs", "1", "--sequence-length", "12",
        "--embed-dim", "16", "--quiet"]


def _run(module, tmp_path, *extra, logs=None):
    out = tmp_path / "out.json"
    code = module.main(["--output", str(tmp_path / "models"),
                        "--logs", str(tmp_path / "logs") if logs is None else logs,
                        "--json", str(out), *TINY, *extra])
    assert code == 0
    result = json.loads(out.read_text())
    # every path in the JSON is relative to the JSON file's directory
    for key in ("saved_model", "report"):
        assert result[key] is None or not os.path.isabs(result[key]), result[key]
    for row in result["rows"]:
        assert not any(os.path.isabs(p) for p in [row.get("path") or ""] + row.get("paths", []))
    return result


def _tensorboard_event_files(logs):
    return [f for _, _, files in os.walk(logs) for f in files if "tfevents" in f]


def test_sentiment_monitor_end_to_end(tmp_path):
    """Train, serve, follow a stream file through the served model; alerts reach the webhook,
    the JSONL sink and the JSON, and are scored against the true labels' alerts."""
    import http.server
    import threading

    data = td.data.write_sentiment_corpus(str(tmp_path / "data"), n=300)
    received = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        calls = 0

        def do_POST(self):
            Receiver.calls += 1
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if Receiver.calls == 1:          # the first delivery fails: it must be retried
                self.send_response(503)
            else:
                received.append(body)
                self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stream = os.path.join(data, "stream.jsonl")
    live = tmp_path / "live.jsonl"
    live.write_text("")

    def grow():                              # the file keeps growing while it is followed
        lines = open(stream).read().splitlines()
        for i in range(0, len(lines), 50):
            with open(live, "a") as f:
                f.write("\n".join(lines[i:i + 50]) + "\n")
            threading.Event().wait(0.2)

    writer = threading.Thread(target=grow)
    writer.start()
    try:
        result = _run(sentiment_monitor, tmp_path, "--data", data, "--distill-epochs", "2",
                      "--window", "30", "--follow", str(live), "--idle-exit", "3",
                      "--poll-interval", "0.05", "--webhook",
                      f"http://127.0.0.1:{server.server_port}/hook",
                      "--alert-jsonl", str(tmp_path / "alerts.jsonl"))
    finally:
        writer.join()
        server.shutdown()
    rows = {r["variant"]: r for r in result["rows"]}
    served = rows["served (REST)"]
    assert served["accuracy"] == pytest.approx(rows["cnn distilled+pruned"]["accuracy"], abs=0.01)
    assert served["accuracy"] > 1 / 3 + 0.15          # three classes: chance is 1/3
    assert rows["TF-IDF + logreg"]["format"] == "baseline"
    assert result["served"]["grpc_agrees_with_rest"] is True
    assert rows["transformer pruned"]["sparsity"] > 0.5
    assert result["embedding_dtypes"]["cnn pruned+int8"] == {
        "text_cnn/token_embedding/embedding_lookup": "int8"}
    assert any("block0_attention" in u for u in result["qat_coverage"]["unsupported_with_weights"])
    # the served model's alerts, measured against the alerts of the true labels
    n = len(open(stream).read().splitlines())
    score = result["alert_score"]
    assert result["headlines"] == score["headlines"] == n
    assert score["surges"] == 3 and score["missed_surges"] == 0   # the stream has 3 surges
    assert abs(score["mean_delay"]) <= 30       # within one window of the true alert
    # a 3-epoch model: a few false alarms, never as many as true surges
    assert score["false_alarms"] <= score["surges"] - 1
    assert score["false_alarms_per_1000"] == pytest.approx(1000 * score["false_alarms"] / n)
    events = [e["id"] for e in result["alerts"]]
    assert events and result["alerts"][0]["event"] == "alert"
    assert [e["id"] for e in received] == events          # none lost, in order
    assert [json.loads(line)["id"] for line in
            (tmp_path / "alerts.jsonl").read_text().splitlines()] == events
    run_dir = os.path.dirname(tmp_path / result["report"])
    details = open(os.path.join(run_dir, "details.md")).read()
    assert "What tfmot QAT cannot quantize" in details and "MultiHeadAttention" in details
    assert "Alerts scored against the true labels" in details
    assert os.path.exists(os.path.join(run_dir, "report.html"))
    assert os.path.exists(os.path.join(run_dir, "figures", "negative_share.png"))
    assert _tensorboard_event_files(tmp_path / "logs" / "monitor")

    # monitor only: follow the same stream through a running server, nothing trained
    from tfdeploy.recipes import _harness

    with _harness.serving("sentiment", os.path.dirname(tmp_path / result["saved_model"])) as srv:
        out = tmp_path / "follow.json"
        code = sentiment_monitor.main([
            "--server", f"127.0.0.1:{srv.rest_port}", "--follow", str(live), "--idle-exit",
            "0.5", "--window", "30", "--json", str(out), "--logs", str(tmp_path / "logs2")])
    assert code == 0
    follow = json.loads(out.read_text())
    assert "rows" not in follow and follow["alert_score"] == score


def test_rolling_alert_raises_once_and_clears_with_hysteresis():
    alert = RollingAlert(window=4, threshold=0.5, hysteresis=0.25)
    labels = ["positive"] * 4 + ["negative"] * 3 + ["positive", "negative", "positive"] + \
        ["positive"] * 3
    for i, label in enumerate(labels):
        alert.update(str(i), label)
    assert [(e["event"], e["time"]) for e in alert.events] == [("alert", "5"), ("clear", "12")]
    with pytest.raises(ValueError, match="threshold"):
        RollingAlert(window=4, threshold=0.0)


def test_answer_retrieval_end_to_end(tmp_path):
    result = _run(answer_retrieval, tmp_path, "--encoder", "cnn", "--epochs", "4",
                  "--data", td.data.write_qa_corpus(str(tmp_path / "qa"), paraphrases=6))
    rows = {r["variant"]: r for r in result["rows"]}
    baselines = {r["variant"]: r for r in result["baselines"]}
    assert {"TF-IDF", "BM25"} <= set(baselines)
    # no test question appears verbatim in training; most share no content word with the answer
    questions = [json.loads(line)["question"] for line in
                 open(tmp_path / "qa" / "pairs.jsonl").read().splitlines()]
    assert result["num_test_questions"] + result["duplicates_dropped"] < len(questions)
    assert result["no_overlap_questions"] > result["num_test_questions"] / 2
    for variant in ("encoder", "encoder pruned+int8"):
        for baseline in baselines.values():     # the model beats every untrained baseline
            for metric in ("recall@1", "recall@k", "mrr", "recall@1_no_overlap"):
                assert rows[variant][metric] > baseline[metric] + 0.1, (variant, baseline,
                                                                        metric)
    for baseline in ("TF-IDF", "BM25"):
        assert rows["served (REST)"]["recall@1"] > baselines[baseline]["recall@1"] + 0.1
    assert result["served"]["recall@1"] == pytest.approx(rows["encoder pruned"]["recall@1"],
                                                         abs=0.02)
    assert os.path.exists(tmp_path / result["saved_model"] / "assets" / "index_embeddings.f32")


def test_recommender_end_to_end(tmp_path, monkeypatch):
    """Also: ``--logs ''`` writes no TensorBoard logs and no report, nowhere (the current
    directory stays empty)."""
    data = td.data.write_recommendation_corpus(str(tmp_path / "rec"), num_users=120,
                                               num_items=80)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    result = _run(recommender, tmp_path, "--data", data, "--epochs", "10", "--embed-dim", "32",
                  "--k", "10", logs="")
    assert os.listdir(cwd) == [] and result["report"] is None
    assert sorted(os.listdir(tmp_path)) == ["cwd", "models", "out.json", "rec"]
    rows = {r["variant"]: r for r in result["rows"]}
    assert result["seen_items_filtered"] and result["num_test_users"] > 100
    for baseline in ("popularity", "topic count"):
        base = rows[baseline]
        for metric in ("hr@k", "ndcg@k", "mrr"):
            assert rows["two towers"][metric] > base[metric] + 0.03, (baseline, metric)
        for variant in ("towers pruned", "towers pruned+int8", "served (REST)"):
            assert rows[variant]["hr@k"] > base["hr@k"] + 0.05, (variant, baseline)
    assert rows["served (REST)"]["hr@k"] == pytest.approx(rows["towers pruned"]["hr@k"],
                                                          abs=0.02)
    int8 = {p: d for p, d in result["embedding_dtypes"].items() if p.endswith("_int8.tflite")}
    assert all(os.path.isfile(tmp_path / p) for p in int8) and len(int8) == 2
    assert sorted(v for d in int8.values() for v in d.values()) == ["int8", "int8"]
    assert rows["towers pruned"]["sparsity"] > 0.5
    assert np.isfinite(result["served"]["rest_p50_ms_one_user"])


def test_recipes_are_listed_with_help():
    from tfdeploy import recipes

    for name in ("sentiment_monitor", "answer_retrieval", "recommender"):
        assert name in recipes.names() and recipes.summary(name)
        with pytest.raises(SystemExit) as exit_:
            recipes.load(name).main(["--help"])
        assert exit_.value.code == 0
