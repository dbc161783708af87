"""Latency and throughput of each variant, in the spirit of trtexec and perf_analyzer.

Benchmarks return data (``LatencyStats``, ``BenchResult``); tables, JSON, CSV and plots
are views of it (``runtime.report``).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from runtime.spec import Artifacts
from runtime.variants import Variant


@dataclass(frozen=True)
class BenchConfig:
    batches: tuple[int, ...] = (1, 8, 64)
    warmup_s: float = 0.5
    duration_s: float = 2.0
    iterations: int | None = None  # fixed count instead of a duration
    roofline: bool = False


@dataclass(frozen=True)
class LatencyStats:
    label: str
    backend: str
    artifact: str  # the model file's name (a checkpoint for torch)
    precision: str
    batch: int
    image_size: int
    device: str
    peer: bool
    iterations: int
    min_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    throughput_ips: float  # images per second, from the mean latency
    gflops: float | None = None  # achieved model GFLOP/s
    peak_ratio: float | None = None  # gflops / measured GEMM peak of this precision
    compute_p50_ms: float | None = None  # GPU compute only (CUDA events, input already on the device)
    accuracy: float | None = None  # the artifact's measured test accuracy, where known
    effective_precision: str | None = None  # what the library really computes in, where it differs


def summarize(times_s: np.ndarray, v: Variant, batch: int, device: str, flop_per_image: float | None,
              peak: float | None, image_size: int) -> LatencyStats:
    ms = np.asarray(times_s) * 1e3
    mean = float(ms.mean())
    gflops = flop_per_image * batch / (mean / 1e3) / 1e9 if flop_per_image else None
    return LatencyStats(
        label=v.label, backend=v.backend, artifact=v.source.name, precision=v.precision, batch=batch,
        image_size=image_size, device=device, peer=v.peer,
        iterations=len(ms), min_ms=float(ms.min()), mean_ms=mean, p50_ms=float(np.percentile(ms, 50)),
        p90_ms=float(np.percentile(ms, 90)), p95_ms=float(np.percentile(ms, 95)), p99_ms=float(np.percentile(ms, 99)),
        max_ms=float(ms.max()), throughput_ips=batch / (mean / 1e3), gflops=gflops,
        peak_ratio=gflops / peak if gflops and peak else None,
        accuracy=v.artifact.test_accuracy if v.artifact else None,
    )


def time_calls(fn, *, warmup_s: float, duration_s: float, iterations: int | None) -> np.ndarray:
    """Warm up by time (at least 3 calls), then time each call for a duration (at least 10) or a count."""
    t_end = time.perf_counter() + warmup_s
    n = 0
    while n < 3 or time.perf_counter() < t_end:
        fn()
        n += 1
    times = []
    t_end = time.perf_counter() + duration_s
    while (len(times) < iterations) if iterations else (len(times) < 10 or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return np.array(times)


def model_flop_per_image(arts: Artifacts) -> float:
    """Multiply-adds x 2 of one forward pass, counted from the layer shapes (convs and the linear head)."""
    import torch
    from torch import nn

    from train.model import ModelConfig, build_model

    m = arts.manifest["model"]
    model = build_model(ModelConfig(depth=m["depth"], stem=m["stem"], in_channels=arts.spec.channels,
                                    num_classes=arts.spec.num_classes, image_size=arts.spec.image_size)).eval()
    total = 0.0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total += 2.0 * k * out.numel()
        elif isinstance(mod, nn.Linear):
            total += 2.0 * mod.in_features * mod.out_features

    handles = [mod.register_forward_hook(hook) for mod in model.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    with torch.inference_mode():
        model(torch.zeros(1, *arts.spec.chw))
    for h in handles:
        h.remove()
    return total


def gemm_peak_gflops(precision: str, device: str = "cpu", sizes: tuple[int, ...] = (1024, 2048),
                     seconds: float = 0.5) -> float | None:
    """Measured (not datasheet) GEMM throughput: the best n x n x n product over sizes and libraries.

    None where the device has no native GEMM for that precision (fp16 on a CPU)."""
    import torch

    dev = torch.device(device)
    if precision == "fp16" and dev.type == "cpu":
        return None
    best = 0.0
    for n in sizes:
        try:
            for fn in _gemm_candidates(precision, n, dev):
                best = max(best, 2.0 * n**3 / _best_time(fn, dev, seconds / len(sizes)) / 1e9)
        except (RuntimeError, NotImplementedError):
            continue
    return best or None


def _gemm_candidates(precision: str, n: int, dev):
    import torch

    if precision == "int8":
        a = torch.randint(-128, 127, (n, n), dtype=torch.int8, device=dev)
        b = torch.randint(-128, 127, (n, n), dtype=torch.int8, device=dev)
        return [lambda: torch._int_mm(a, b)]
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    fns = [lambda: a @ b]
    if precision == "fp32" and dev.type == "cpu":  # OpenBLAS through numpy is sometimes the faster GEMM
        an, bn = a.numpy(), b.numpy()
        fns.append(lambda: an @ bn)
    return fns


def _best_time(fn, dev, seconds: float) -> float:
    import torch

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    fn()
    sync()
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end or best == float("inf"):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def machine_info() -> dict[str, Any]:
    import onnxruntime
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": str(torch.__version__),
            "onnxruntime": onnxruntime.__version__}
    try:
        import openvino

        info["openvino"] = openvino.__version__.split("-")[0]
    except ImportError:
        pass
    return info


@dataclass
class BenchResult:
    machine: dict[str, Any]
    config: BenchConfig
    image_size: int
    flop_per_image: float
    rows: list[LatencyStats] = field(default_factory=list)
    peaks: dict[str, float | None] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def best(self, batch: int, *, peer: bool, precision: str | None = None) -> LatencyStats | None:
        rows = [r for r in self.rows if r.batch == batch and r.peer == peer
                and (precision is None or r.precision == precision)]
        return max(rows, key=lambda r: r.throughput_ips) if rows else None

    def speedups(self) -> list[dict[str, Any]]:
        """Per batch: our best path (any precision, and FP32 only) against each peer default."""
        out = []
        for b in self.config.batches:
            ours, ours32 = self.best(b, peer=False), self.best(b, peer=False, precision="fp32")
            for peer in (r for r in self.rows if r.batch == b and r.peer):
                out.append({"batch": b, "peer": peer.label, "peer_ms": peer.mean_ms,
                            "best": ours.label if ours else None,
                            "speedup": peer.mean_ms / ours.mean_ms if ours else None,
                            "best_fp32": ours32.label if ours32 else None,
                            "speedup_fp32": peer.mean_ms / ours32.mean_ms if ours32 else None})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "config": asdict(self.config), "image_size": self.image_size,
                "gflop_per_image": self.flop_per_image / 1e9, "peaks_gflops": self.peaks,
                "results": [asdict(r) for r in self.rows], "speedups": self.speedups(), "skipped": self.skipped}


def run_bench(arts: Artifacts, variants: list[Variant], cfg: BenchConfig, images: np.ndarray,
              progress=None) -> BenchResult:
    flop = model_flop_per_image(arts)
    result = BenchResult(machine_info(), cfg, arts.spec.image_size, flop)
    if cfg.roofline:
        for p in sorted({v.precision for v in variants}):
            result.peaks[p] = gemm_peak_gflops(p)
    max_batch = max(cfg.batches)
    if len(images) < max_batch:
        images = np.resize(images, (max_batch, *images.shape[1:])).astype(np.float32)
    for v in variants:
        with v.create(arts, max_batch=max_batch) as backend:
            for b in cfg.batches:
                if progress:
                    progress(f"{v.label}, batch {b}")
                x = np.ascontiguousarray(images[:b])
                times = time_calls(lambda: backend.infer(x), warmup_s=cfg.warmup_s,  # noqa: B023
                                   duration_s=cfg.duration_s, iterations=cfg.iterations)
                effective = backend.effective_precision
                if cfg.roofline and effective not in result.peaks:
                    result.peaks[effective] = gemm_peak_gflops(effective)
                stats = summarize(times, v, b, backend.device, flop, result.peaks.get(effective), arts.spec.image_size)
                if effective != v.precision:
                    stats = LatencyStats(**{**asdict(stats), "effective_precision": effective})
                compute = getattr(backend, "compute_only_ms", None)
                if compute is not None and backend.device.startswith("cuda"):
                    stats = LatencyStats(**{**asdict(stats), "compute_p50_ms": compute(x)})
                result.rows.append(stats)
    return result
