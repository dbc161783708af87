import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from runtime.lab.bench import BenchConfig, BenchResult, LatencyStats, run_bench
from runtime.lab.roofline import Flops, conv_flops, gemm_peak_gflops, model_flops
from runtime.timing import time_calls
from runtime.variants import Variant


def test_flop_count_matches_torch_flop_counter_and_leaves_padding_out(arts, trained_ckpt):
    from torch.utils.flop_counter import FlopCounterMode

    from train.checkpoint import load_model

    model = load_model(trained_ckpt)  # the network itself; the count reads the exported reference program's graph
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 1, 28, 28))
    flops = model_flops(arts)
    assert flops.nominal == pytest.approx(counter.get_total_flops(), rel=1e-6)
    # At 28 px stage 4 runs 3x3 convs on 1x1 maps and stage 3 on 2x2 maps: most of their taps are padding.
    assert 0.4 < flops.real / flops.nominal < 0.8


def test_conv_flops_count_only_taps_inside_the_input():
    full = conv_flops(64, 64, (3, 3), (1, 1), (1, 1), (1, 1))
    assert full.nominal == 2 * 64 * 64 * 9 and full.real == full.nominal / 9  # only the centre tap is real
    three = conv_flops(8, 8, (3, 3), (1, 1), (1, 1), (3, 3))
    assert three.real == three.nominal * 49 / 81  # per axis 2 + 3 + 2 of 9 taps
    no_pad = conv_flops(8, 8, (1, 1), (2, 2), (0, 0), (8, 8))
    assert no_pad.real == no_pad.nominal == 2 * 8 * 8 * 16


def test_time_calls_by_count_and_by_duration():
    calls = []
    times = time_calls(lambda: calls.append(1), warmup_s=0.0, duration_s=0.0, iterations=17)
    assert len(times) == 17 and len(calls) == 20  # 3 warm-up calls
    times = time_calls(lambda: None, warmup_s=0.0, duration_s=0.05, iterations=None)
    assert len(times) >= 10


def test_variants_take_turns_and_p50_is_the_median_of_round_medians(arts, monkeypatch):
    import runtime.timing as timing

    fp32 = arts.find("onnx", "fp32")
    ours = Variant("onnxruntime", fp32.path, "fp32", "ours", {"providers": ("CPUExecutionProvider",)}, fp32)
    peer = Variant("onnxruntime", fp32.path, "fp32", "peer", {"defaults": True}, fp32, peer=True)
    fake = iter(range(1, 100))

    def fake_time_calls(fn, *, warmup_s, duration_s, iterations, warmup_calls):
        fn()
        k = next(fake)  # round r of a variant returns k ms, three times
        return np.full(3, k / 1000.0)

    monkeypatch.setattr(timing, "time_calls", fake_time_calls)
    seen = []
    result = run_bench(arts, [ours, peer], BenchConfig(batches=(2,), rounds=3, accuracy_images=0),
                       np.zeros((2, 1, 28, 28), np.float32), progress=seen.append)
    turns = [s.split(": ", 1)[1] for s in seen if s.startswith("batch 2, round")]
    assert turns == ["ours", "peer", "peer", "ours", "ours", "peer"]  # interleaved, alternating direction
    by = {r.label: r for r in result.rows}
    assert by["ours"].p50_ms == pytest.approx(np.median([1, 4, 5]))  # median of its round medians
    assert by["peer"].p50_ms == pytest.approx(np.median([2, 3, 6]))


def _row(label, precision, p50, *, peer=False, effective=None, accuracy=None, device="cpu"):
    return LatencyStats(label=label, backend="x", artifact="a", precision=precision, batch=1, image_size=28,
                        device=device, peer=peer, iterations=10, min_ms=p50, mean_ms=p50, p50_ms=p50, p90_ms=p50,
                        p95_ms=p50, p99_ms=p50, max_ms=p50, throughput_ips=1000 / p50, accuracy=accuracy,
                        effective_precision=effective)


def test_speedups_compare_within_a_precision_class():
    result = BenchResult({}, BenchConfig(batches=(1,)), 28, Flops(1.0, 1.0))
    result.rows = [
        _row("ours fp32", "fp32", 0.20), _row("ours int8", "int8", 0.10, accuracy=0.912),
        _row("ours bf16", "bf16", 0.15),
        _row("peer fp32", "fp32", 0.25, peer=True), _row("peer nncf", "int8", 0.11, peer=True, accuracy=0.913),
        _row("peer ov defaults", "fp32", 0.16, peer=True, effective="bf16"),
    ]
    result.fixed = {"fp32@cpu": "ours fp32", "int8@cpu": "ours int8", "bf16@cpu": "ours bf16"}
    sp = {s["peer"]: s for s in result.speedups()}
    assert sp["peer fp32"]["ours"] == "ours fp32" and sp["peer fp32"]["speedup"] == pytest.approx(1.25)
    assert sp["peer nncf"]["ours"] == "ours int8" and sp["peer nncf"]["speedup"] == pytest.approx(1.1)
    assert sp["peer nncf"]["peer_accuracy"] == 0.913 and sp["peer nncf"]["ours_accuracy"] == 0.912
    # a peer that silently computes in bf16 is held against our bf16, not our fp32
    assert sp["peer ov defaults"]["class"] == "bf16" and sp["peer ov defaults"]["ours"] == "ours bf16"


def test_each_peer_meets_the_one_variant_fixed_before_timing_with_the_spread_of_its_rounds():
    """Two noisy measurements of equal variants: dividing by the minimum of them biases the ratio upward; the
    variant fixed before timing is used even where another of ours measured faster."""
    from dataclasses import replace

    from runtime.lab.bench import fix_ours

    result = BenchResult({}, BenchConfig(batches=(1,)), 28, Flops(1.0, 1.0))
    a, b = _row("ours ort int8", "int8", 0.105), _row("ours ov int8", "int8", 0.095)
    peer = _row("peer nncf", "int8", 0.100, peer=True)
    result.rows = [replace(a, round_p50_ms=(0.10, 0.11, 0.105)), replace(b, round_p50_ms=(0.09, 0.10, 0.095)),
                   replace(peer, round_p50_ms=(0.10, 0.10, 0.10))]
    result.fixed = {"int8@cpu": "ours ort int8"}
    (row,) = result.speedups()
    assert row["ours"] == "ours ort int8" and row["speedup"] == pytest.approx(0.100 / 0.105)
    assert row["speedup_min"] == pytest.approx(0.10 / 0.11) and row["speedup_max"] == pytest.approx(1.0)

    class Fake:
        def __init__(self, device, max_batch=8):
            self.device, self.max_batch = device, max_batch

    V = lambda label, peer=False: type("V", (), {"label": label, "peer": peer})()  # noqa: E731
    loaded = [(V("x"), Fake("cpu")), (V("y"), Fake("cpu")), (V("z"), Fake("cpu")), (V("p", True), Fake("cpu"))]
    times = {"x": 2.0, "y": 1.0, "z": 5.0}
    timer = lambda backend, batch: times[next(v.label for v, be in loaded if be is backend)]  # noqa: E731
    fixed = fix_ours(loaded, {"x": "int8", "y": "int8", "z": "fp32", "p": "int8"}, np.zeros((8, 1)), timer)
    assert fixed == {"int8@cpu": "y", "fp32@cpu": "z"}


def test_gpu_peers_meet_our_gpu_rows_in_their_class_and_our_fastest_of_any_precision():
    result = BenchResult({}, BenchConfig(batches=(1,)), 28, Flops(1.0, 1.0))
    result.rows = [
        _row("ours cpu fp32", "fp32", 0.01), _row("ours gpu fp32", "fp32", 0.2, device="cuda"),
        _row("ours gpu fp16", "fp16", 0.1, device="cuda"),
        _row("eager", "fp32", 1.0, peer=True, device="cuda"), _row("compile fp16", "fp16", 0.15, peer=True, device="cuda"),
    ]
    result.fixed = {"fp32@cpu": "ours cpu fp32", "fp32@gpu": "ours gpu fp32", "fp16@gpu": "ours gpu fp16",
                    "any@gpu": "ours gpu fp16"}
    sp = {(s["peer"], s["class"]): s for s in result.speedups()}
    assert sp["eager", "fp32"]["ours"] == "ours gpu fp32" and sp["eager", "fp32"]["speedup"] == pytest.approx(5.0)
    assert sp["eager", "any"]["ours"] == "ours gpu fp16" and sp["eager", "any"]["speedup"] == pytest.approx(10.0)
    assert sp["compile fp16", "fp16"]["speedup"] == pytest.approx(1.5) and ("compile fp16", "any") not in sp


def test_cuda_peers_are_pytorch_eager_on_the_gpu_and_torch_compile(arts):
    from runtime.lab.peers import peer_variants
    from runtime.variants import plan

    def with_peers(device, **kw):
        return plan(arts, ["torch"], device=device, extra=peer_variants(arts, device=device, **kw))

    variants, _ = with_peers("cuda", compile_precisions=("fp16", "fp32"))
    peers = {v.label: v for v in variants if v.peer}
    assert set(peers) == {"peer: PyTorch eager (unfolded)", "peer: torch.compile max-autotune fp16",
                          "peer: torch.compile max-autotune fp32"}  # no CPU library competes with a GPU
    eager = peers["peer: PyTorch eager (unfolded)"]
    assert eager.options["device"] == "cuda" and eager.precision == "fp32"
    assert eager.source.name == "resnet18_reference.pt2"  # the unfolded model, as the user trained it
    assert peers["peer: torch.compile max-autotune fp16"].source.name == "resnet18_folded.pt2"
    compiled = peers["peer: torch.compile max-autotune fp16"]
    assert compiled.options == {"compile": "max-autotune", "device": "cuda"} and compiled.precision == "fp16"
    cpu, _ = with_peers("cpu")
    assert not any("compile" in v.label for v in cpu)
    assert next(v for v in cpu if v.label == "peer: PyTorch eager (unfolded)").options["device"] == "cpu"


def test_statistics_on_known_samples(arts):
    from runtime.lab.bench import summarize

    times = np.arange(1, 101) / 1000.0  # 1 ms .. 100 ms
    fp32 = arts.find("onnx", "fp32")
    v = Variant("onnxruntime", fp32.path, "fp32", "x", {}, fp32)
    s = summarize(times, v, batch=4, device="cpu", flops=Flops(2e9, 1e9), peak=100.0, image_size=28)
    assert (s.min_ms, s.max_ms, s.mean_ms) == (1.0, 100.0, 50.5)
    assert s.p50_ms == pytest.approx(50.5) and s.p90_ms == pytest.approx(90.1) and s.p99_ms == pytest.approx(99.01)
    assert s.throughput_ips == pytest.approx(4 / 0.0505)
    assert s.gflops == pytest.approx(2 * 4 / 0.0505) and s.gflops_real == pytest.approx(4 / 0.0505)
    assert s.peak_ratio == pytest.approx(s.gflops_real / 100.0)  # real FLOPs against the peak
    assert s.artifact == "resnet18_fp32.onnx" and s.iterations == 100


def test_gemm_peak_names_its_library_and_tries_the_widest_kernels():
    from runtime.lab.roofline import _gemm_candidates

    names = [name for name, _ in _gemm_candidates("fp32", 64, torch.device("cpu"))]
    assert "onnxruntime MLAS" in names and "torch.mm" in names and "numpy" in names
    assert "onnxruntime MLAS" in [name for name, _ in _gemm_candidates("int8", 64, torch.device("cpu"))]
    rate, source = gemm_peak_gflops("fp32", sizes=(256,), seconds=0.05)
    assert source in names and rate > 0
    assert gemm_peak_gflops("fp16") is None  # no native fp16 GEMM on a CPU: no ratio is better than a wrong one


def test_cli_bench_writes_json_csv_plot(arts, tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "resnet_edge", "bench", str(arts.root), "--backend", "onnxruntime", "--precision",
         "fp32,int8", "--batch", "1,4", "--warmup", "10ms", "--duration", "60ms", "--rounds", "2", "--peers",
         "--roofline", "--accuracy-images", "200", "--threads", "1",
         "--json", str(tmp_path / "b.json"), "--csv", str(tmp_path / "b.csv"), "--plot", str(tmp_path / "b.png")],
        capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "p99 ms" in res.stdout and "speed-up" in res.stdout and "GFLOP/image" in res.stdout
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["machine"]["cores"] >= 1 and data["peaks_gflops"]["fp32"] > 0 and data["peak_sources"]["fp32"]
    peers = {r["label"] for r in data["results"] if r["peer"]}
    # INT8 peers built in the run from the same FP32 ONNX, next to the FP32 ones
    assert {"peer: ONNX Runtime defaults", "peer: ONNX Runtime quantize_static defaults",
            "peer: PyTorch eager (unfolded)"} <= peers
    for s in data["speedups"]:
        int8_peer = "quantize_static" in s["peer"] or "NNCF" in s["peer"]
        # ncnn's defaults store fp16 and are compared in that class
        assert s["class"] == "int8" if int8_peer else s["class"] in (("fp16",) if "ncnn" in s["peer"] else ("fp32", "bf16"))
        assert s["peer_accuracy"] > 0.8 and (s["ours"] is None or s["ours_accuracy"] > 0.8)
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
    (["--compile-peer", "int4"], "--compile-peer takes fp32, fp16, bf16 or none, not 'int4'"),
])
def test_cli_bench_bad_options(arts, args, message):
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "bench", str(arts.root), *args],
                         capture_output=True, text=True)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_cli_bench_missing_artifacts(tmp_path):
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "bench", str(tmp_path / "none")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "run 'make export' first" in res.stderr


def test_one_interleaved_loop_times_every_callable_in_alternating_order():
    """runtime.timing.interleaved, which export's u8 decision, ncnn's winograd choice and bench all use."""
    from runtime.timing import interleaved

    log = []
    turns = []
    timed = interleaved([lambda: log.append("a"), lambda: log.append("b")], rounds=3, calls=4, warmup_calls=1,
                        on_turn=lambda r, i: turns.append((r, "ab"[i])))
    assert turns == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b")]
    assert log.count("a") == log.count("b") == 3 * (1 + 4)  # one untimed call per turn, four timed
    assert all(len(t.pooled) == 12 and len(t.round_medians) == 3 for t in timed)
    with pytest.raises(ValueError):
        interleaved([], rounds=1)
