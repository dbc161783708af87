import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from runtime.bench import BenchConfig, gemm_peak_gflops, model_flop_per_image, run_bench, time_calls
from runtime.variants import Variant, peer_variants


def test_flop_count_matches_torch_flop_counter(arts):
    from torch.utils.flop_counter import FlopCounterMode

    from train.checkpoint import load_model

    model = load_model(arts.checkpoint)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 1, 28, 28))
    assert model_flop_per_image(arts) == pytest.approx(counter.get_total_flops(), rel=1e-6)


def test_time_calls_by_count_and_by_duration():
    calls = []
    times = time_calls(lambda: calls.append(1), warmup_s=0.0, duration_s=0.0, iterations=17)
    assert len(times) == 17 and len(calls) == 20  # 3 warm-up calls
    times = time_calls(lambda: None, warmup_s=0.0, duration_s=0.05, iterations=None)
    assert len(times) >= 10


def test_bench_rows_are_consistent(arts):
    fp32 = arts.find("onnx", "fp32")
    v = Variant("onnxruntime", fp32.path, "fp32", "onnxruntime fp32", {"providers": ("CPUExecutionProvider",)}, fp32)
    images = np.zeros((8, 1, 28, 28), np.float32)
    result = run_bench(arts, [v] + peer_variants(arts, arts.checkpoint),
                       BenchConfig(batches=(1, 8), warmup_s=0.01, duration_s=0.05), images)
    assert len(result.rows) == 2 * (1 + len(peer_variants(arts, arts.checkpoint)))
    for r in result.rows:
        assert r.min_ms <= r.p50_ms <= r.p90_ms <= r.p95_ms <= r.p99_ms <= r.max_ms
        assert r.throughput_ips == pytest.approx(r.batch / (r.mean_ms / 1e3))
        assert r.gflops == pytest.approx(result.flop_per_image * r.batch / (r.mean_ms / 1e3) / 1e9)
    sp = result.speedups()
    assert {s["peer"] for s in sp} >= {"peer: PyTorch eager (unfolded)", "peer: ONNX Runtime defaults"}
    assert all(s["speedup"] > 0 for s in sp)


def test_statistics_on_known_samples(arts):
    from runtime.bench import summarize

    times = np.arange(1, 101) / 1000.0  # 1 ms .. 100 ms
    fp32 = arts.find("onnx", "fp32")
    v = Variant("onnxruntime", fp32.path, "fp32", "x", {}, fp32)
    s = summarize(times, v, batch=4, device="cpu", flop_per_image=1e9, peak=100.0, image_size=28)
    assert (s.min_ms, s.max_ms, s.mean_ms) == (1.0, 100.0, 50.5)
    assert s.p50_ms == pytest.approx(50.5) and s.p90_ms == pytest.approx(90.1) and s.p99_ms == pytest.approx(99.01)
    assert s.throughput_ips == pytest.approx(4 / 0.0505)
    assert s.gflops == pytest.approx(4 / 0.0505) and s.peak_ratio == pytest.approx(s.gflops / 100.0)
    assert s.artifact == "resnet18_fp32.onnx" and s.iterations == 100


def test_gemm_peak_is_measured():
    peak = gemm_peak_gflops("fp32", sizes=(256,), seconds=0.05)
    assert gemm_peak_gflops("fp16") is None  # no native fp16 GEMM on a CPU: no ratio is better than a wrong one
    assert peak is not None and peak > 0.5


def test_cli_bench_writes_json_csv_plot(arts, tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "resnet_edge", "bench", str(arts.root), "--backend", "onnxruntime", "--precision",
         "fp32,int8", "--batch", "1,4", "--warmup", "10ms", "--duration", "50ms", "--peers", "--roofline",
         "--checkpoint", str(arts.checkpoint), "--json", str(tmp_path / "b.json"), "--csv", str(tmp_path / "b.csv"),
         "--plot", str(tmp_path / "b.png")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "p99 ms" in res.stdout and "speed-up" in res.stdout and "GFLOP/image" in res.stdout
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["machine"]["cores"] >= 1 and data["peaks_gflops"]["fp32"] > 0
    results = data["results"]
    required = {"backend", "artifact", "precision", "batch", "image_size", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
                "throughput_ips", "peer"}
    assert all(required <= set(r) for r in results)
    assert {r["precision"] for r in results if not r["peer"]} == {"fp32", "int8"}
    assert {r["batch"] for r in results} == {1, 4} and {r["image_size"] for r in results} == {28}
    assert any(r["peer"] for r in results) and {r["artifact"] for r in results} >= {"resnet18_fp32.onnx"}
    rows = list(csv.DictReader((tmp_path / "b.csv").open()))
    assert len(rows) == len(results) and "p99_ms" in rows[0]
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(("args", "message"), [
    (["--batch", "1,x"], "--batch must be comma-separated integers"),
    (["--duration", "soon"], "is not a duration"),
    (["--backend", "tvm"], "Unknown backend 'tvm'"),
])
def test_cli_bench_bad_options(arts, args, message):
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "bench", str(arts.root), *args],
                         capture_output=True, text=True)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_cli_bench_missing_artifacts(tmp_path):
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "bench", str(tmp_path / "none")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "run 'make export' first" in res.stderr
