"""Bench and FLOPs: one FLOP count for every format, latency/throughput/memory fields, the CLI."""

import json

import numpy as np
import pytest

import tfdeploy as td
from tfdeploy.cli import main
from tfdeploy.errors import DataError


def _hand_count(width=0.25, size=32, classes=10):
    """2 x MACs of the seed CNN (conv 3x3 same padding, two 2x2 pools), by hand."""
    w = lambda f: max(1, int(round(f * width)))  # noqa: E731
    convs = [(size, 1, w(32)), (size, w(32), w(64)), (size // 2, w(64), w(128)),
             (size // 2, w(128), w(256)), (size // 4, w(256), w(512)),
             (size // 4, w(512), w(256))]
    total = sum(2 * s * s * cout * 9 * cin for s, cin, cout in convs)
    flat = (size // 4) ** 2 * w(256)
    return total + 2 * flat * w(256) + 2 * w(256) * classes


@pytest.fixture(scope="module")
def artifacts(trained_model, train_ds, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return {
        "saved_model": td.export.saved_model(trained_model, str(root / "sm"), image_bytes=False),
        "tflite": td.export.tflite(trained_model, str(root / "f32.tflite")),
        "tflite_int8": td.export.tflite(trained_model, str(root / "int8.tflite"),
                                        quantization="int8", representative_data=train_ds,
                                        num_calibration=32),
        "onnx": td.export.onnx(trained_model, str(root / "m.onnx")),
    }


def test_flops_agree_across_every_format(trained_model, artifacts):
    expected = _hand_count()
    assert td.verify.count_flops(trained_model) == expected
    for name, path in artifacts.items():
        assert td.verify.count_flops(path) == expected, name


def test_bench_fields_and_consistency(trained_model, artifacts, test_arrays):
    x, _ = test_arrays
    r = td.verify.bench(artifacts["tflite_int8"], x[:16], batch_size=8, iters=20, threads=1,
                        progress=False)
    assert r["format"] == "tflite" and r["threads"] == 1 and r["batch_size"] == 8
    assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
    assert r["throughput"] > 0 and r["peak_rss_mb"] > 0
    assert r["flops_per_inference"] == _hand_count()
    assert r["achieved_flops"] == pytest.approx(r["flops_per_inference"] * r["throughput"])
    assert r["fraction_of_peak"] == pytest.approx(r["achieved_flops"] / r["machine_peak_flops"])
    assert r["size_bytes"] == td.verify.path_bytes(artifacts["tflite_int8"])
    k = td.verify.bench(trained_model, x[:16], batch_size=8, iters=10, progress=False)
    assert k["format"] == "keras" and k["name"] == "keras" and k["size_bytes"] is None
    assert td.verify.speedup(k, r) == pytest.approx(r["throughput"] / k["throughput"])
    assert td.verify.speedup(k, r, "p50_ms") == pytest.approx(k["p50_ms"] / r["p50_ms"])
    table = td.verify.format_table([k, r])
    assert "p99 ms" in table and "int8.tflite" in table


def test_interleaved_latency_times_every_target_in_each_round(
        trained_model, artifacts, test_arrays):
    x, _ = test_arrays
    res = td.verify.interleaved_latency({"keras": trained_model, "tflite": artifacts["tflite"]},
                                        x[:8], rounds=3, calls=5)
    assert set(res) == {"keras", "tflite"}
    for r in res.values():
        assert len(r["rounds_ms"]) == 3 and all(v > 0 for v in r["rounds_ms"])
        assert r["p50_ms"] == pytest.approx(float(np.median(r["rounds_ms"])))
    # a traced Keras call costs milliseconds, the small CNN in LiteRT a fraction of one
    assert res["keras"]["p50_ms"] > res["tflite"]["p50_ms"]
    with pytest.raises(DataError, match="rounds and calls"):
        td.verify.interleaved_latency({"t": artifacts["tflite"]}, x[:2], rounds=0)


def test_matmul_peak_is_measured_and_cached():
    first = td.verify.matmul_peak_flops(sizes=(128,), repeats=2)
    assert 1e8 < first < 1e14  # between 0.1 GFLOP/s and 100 TFLOP/s
    assert td.verify.matmul_peak_flops(sizes=(128,), repeats=2) == first


def test_bench_cli_prints_table_and_json(artifacts, digits_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", artifacts["tflite"], artifacts["onnx"], "--data", digits_dir,
                 "--iters", "10", "--batch-size", "4", "--threads", "1", "--no-progress",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "samples/s" in printed and "f32.tflite" in printed
    results = json.loads(out.read_text())
    assert [r["format"] for r in results] == ["tflite", "onnx"]
    assert all(r["threads"] == 1 and r["p99_ms"] >= r["p50_ms"] for r in results)
    assert np.isfinite([r["fraction_of_peak"] for r in results]).all()
