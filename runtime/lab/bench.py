"""Latency and throughput of each variant, in the spirit of trtexec and perf_analyzer.

Benchmarks return data (``LatencyStats``, ``BenchResult``); tables, JSON, CSV and plots
are views of it (``runtime.lab.report``); FLOPs and GEMM peaks come from ``runtime.lab.roofline``.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from runtime.lab.roofline import Flops, measure_peak, model_flops
from runtime.spec import Artifacts
from runtime.timing import interleaved
from runtime.variants import Variant


@dataclass(frozen=True)
class BenchConfig:
    batches: tuple[int, ...] = (1, 8, 64)
    warmup_s: float = 0.5
    duration_s: float = 2.0  # per variant and batch, split over the rounds
    iterations: int | None = None  # fixed count instead of a duration
    roofline: bool = False
    rounds: int = 5  # every variant takes a turn each round, so host drift hits all alike
    accuracy_images: int = 10_000  # test images each variant classifies, for accuracies on the same images


@dataclass(frozen=True)
class LatencyStats:
    label: str
    backend: str
    artifact: str  # the model file's name
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
    gflops: float | None = None  # achieved GFLOP/s, nominal FLOPs (every tap, padding included)
    gflops_real: float | None = None  # achieved GFLOP/s, real FLOPs (taps on zero padding not counted)
    peak_ratio: float | None = None  # gflops_real / measured GEMM peak of the precision computed in
    compute_p50_ms: float | None = None  # GPU compute only (CUDA events, input already on the device)
    accuracy: float | None = None  # the artifact's measured test accuracy, where known
    effective_precision: str | None = None  # what the library really computes in, where it differs
    compile_s: float | None = None  # time spent compiling at load (torch.compile peers), apart from the latency
    round_p50_ms: tuple[float, ...] | None = None  # each interleaved round's median: the spread of a ratio


def summarize(times_s: np.ndarray, v: Variant, batch: int, device: str, flops: Flops | None,
              peak: float | None, image_size: int, round_medians_s: list[float] | None = None) -> LatencyStats:
    """Statistics of pooled call times. With ``round_medians_s`` (interleaved rounds), p50 is the
    median of the rounds' medians, which a drifting host moves least."""
    ms = np.asarray(times_s) * 1e3
    mean = float(ms.mean())
    p50 = float(np.median(round_medians_s) * 1e3) if round_medians_s else float(np.percentile(ms, 50))
    gflops = flops.nominal * batch / (mean / 1e3) / 1e9 if flops else None
    real = flops.real * batch / (mean / 1e3) / 1e9 if flops else None
    return LatencyStats(
        label=v.label, backend=v.backend, artifact=v.source.name, precision=v.precision, batch=batch,
        image_size=image_size, device=device, peer=v.peer,
        iterations=len(ms), min_ms=float(ms.min()), mean_ms=mean, p50_ms=p50,
        p90_ms=float(np.percentile(ms, 90)), p95_ms=float(np.percentile(ms, 95)), p99_ms=float(np.percentile(ms, 99)),
        max_ms=float(ms.max()), throughput_ips=batch / (mean / 1e3), gflops=gflops, gflops_real=real,
        peak_ratio=real / peak if real and peak else None,
        accuracy=v.artifact.test_accuracy if v.artifact else None,
        round_p50_ms=tuple(float(m) * 1e3 for m in round_medians_s) if round_medians_s else None,
    )


def machine_info() -> dict[str, Any]:
    import onnxruntime

    from runtime import reference

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "torch": None, "gpu": None}
    if reference.torch_installed():
        import torch

        info.update(torch_threads=torch.get_num_threads(), torch=str(torch.__version__),
                    gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
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
    flops: Flops | None  # None without PyTorch, which counts them
    rows: list[LatencyStats] = field(default_factory=list)
    peaks: dict[str, float | None] = field(default_factory=dict)
    peak_sources: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    # Ours, per comparison group ("<class>@cpu", "<class>@gpu", "any@gpu"): one variant, fixed before timing
    # by auto's rule, so that no ratio divides by the luckiest of several noisy measurements.
    fixed: dict[str, str] = field(default_factory=dict)

    def ours(self, batch: int, cls: str, gpu: bool) -> LatencyStats | None:
        label = self.fixed.get(f"{cls}@{'gpu' if gpu else 'cpu'}")
        rows = [r for r in self.rows if r.batch == batch and not r.peer and r.label == label]
        return rows[0] if rows else None

    def best(self, batch: int, *, peer: bool, precision: str | None = None, gpu: bool | None = None,
             ) -> LatencyStats | None:
        rows = [r for r in self.rows if r.batch == batch and r.peer == peer
                and (precision is None or precision_class(r) == precision)
                and (gpu is None or r.device.startswith("cuda") == gpu)]
        return min(rows, key=lambda r: r.p50_ms) if rows else None

    def speedups(self) -> list[dict[str, Any]]:
        """Per batch and peer: our variant of the same precision class (the precision the peer really computes
        in), fixed before timing (``fixed``), against it, as a ratio of p50 latencies (medians of the rounds'
        medians), with the lowest and highest of the per-round ratios (each round times both, interleaved)
        and both accuracies. On a GPU, where a user picks a precision as freely as a library, each peer is also
        compared with our fixed GPU variant of any precision (class ``any``), both precisions named."""
        out = []
        for b in self.config.batches:
            for peer in (r for r in self.rows if r.batch == b and r.peer):
                cls = precision_class(peer)
                gpu = peer.device.startswith("cuda")
                pairs = [(cls, self.ours(b, cls, gpu))]
                fastest = self.ours(b, "any", gpu) if gpu else None
                if fastest and precision_class(fastest) != cls:
                    pairs.append(("any", fastest))
                for name, ours in pairs:
                    spread = _round_ratios(peer, ours) if ours else []
                    out.append({"batch": b, "class": name, "peer": peer.label, "peer_p50_ms": peer.p50_ms,
                                "peer_accuracy": peer.accuracy, "ours": ours.label if ours else None,
                                "ours_p50_ms": ours.p50_ms if ours else None,
                                "ours_accuracy": ours.accuracy if ours else None,
                                "speedup": peer.p50_ms / ours.p50_ms if ours else None,
                                "speedup_min": min(spread) if spread else None,
                                "speedup_max": max(spread) if spread else None})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "config": asdict(self.config), "image_size": self.image_size,
                "gflop_per_image": self.flops.nominal / 1e9 if self.flops else None,
                "gflop_per_image_real": self.flops.real / 1e9 if self.flops else None,
                "peaks_gflops": self.peaks, "peak_sources": self.peak_sources,
                "results": [asdict(r) for r in self.rows], "speedups": self.speedups(), "skipped": self.skipped,
                "ours_fixed": self.fixed, "ours_fixed_rule": FIXED_RULE}


FIXED_RULE = ("per precision class (and device), the variant auto would serve: the lowest median latency at batch 8 "
              "over a 0.3 s run before any timing; every peer in that class is held against it alone")


def _round_ratios(peer: LatencyStats, ours: LatencyStats) -> list[float]:
    a, b = peer.round_p50_ms or (), ours.round_p50_ms or ()
    return [p / o for p, o in zip(a, b) if o > 0] if len(a) == len(b) else []


def fix_ours(loaded: list, effective: dict[str, str], batch: np.ndarray, timer=None) -> dict[str, str]:
    """Our one variant per comparison group, chosen before timing by auto's rule (``FIXED_RULE``)."""
    from runtime.select import median_latency_s

    timer = timer or median_latency_s
    groups: dict[str, list] = {}
    for v, backend in loaded:
        if v.peer:
            continue
        where = "gpu" if backend.device.startswith("cuda") else "cpu"
        groups.setdefault(f"{effective[v.label]}@{where}", []).append((v, backend))
        if where == "gpu":
            groups.setdefault("any@gpu", []).append((v, backend))
    fixed = {}
    for key, members in groups.items():
        if len(members) == 1:
            fixed[key] = members[0][0].label
        else:
            fixed[key] = min(members, key=lambda m: timer(m[1], batch[: m[1].max_batch]))[0].label
    return fixed


def precision_class(row: LatencyStats) -> str:
    """The precision a row really computes in: a library that silently picks bf16 competes in bf16."""
    return row.effective_precision or row.precision


def run_bench(arts: Artifacts, variants: list[Variant], cfg: BenchConfig, images: np.ndarray,
              labelled: tuple[np.ndarray, np.ndarray] | None = None, progress=None) -> BenchResult:
    """Time every variant at every batch size in interleaved rounds, and classify ``labelled`` images
    with each, so that ours and the peers are measured under the same host conditions."""
    import contextlib

    from runtime import reference

    flops = model_flops(arts) if reference.available(arts) else None  # counted on the reference program's graph
    result = BenchResult(machine_info(), cfg, arts.spec.image_size, flops)
    max_batch = max(cfg.batches)
    if len(images) < max_batch:
        images = np.resize(images, (max_batch, *images.shape[1:])).astype(np.float32)
    with contextlib.ExitStack() as stack:
        loaded = []
        for v in variants:
            if progress:
                progress(f"loading {v.label}")
            loaded.append((v, stack.enter_context(v.create(arts, max_batch=max_batch, buckets=cfg.batches))))
        accuracy = {}
        if labelled is not None and cfg.accuracy_images:
            x, y = labelled[0][: cfg.accuracy_images], labelled[1][: cfg.accuracy_images]
            for v, backend in loaded:
                if progress:
                    progress(f"accuracy of {v.label} on {len(x)} test images")
                logits = np.concatenate([backend.infer(x[i:i + max_batch]) for i in range(0, len(x), max_batch)])
                accuracy[v.label] = float((logits.argmax(1) == y).mean())
        effective = {v.label: backend.effective_precision for v, backend in loaded}
        if progress:
            progress("fixing our variant per precision class (auto's rule) before timing")
        result.fixed = fix_ours(loaded, effective, np.ascontiguousarray(images[: min(8, max_batch)]))
        if cfg.roofline:
            for p in sorted(set(effective.values())):
                if progress:
                    progress(f"measuring the {p} GEMM peak")
                measure_peak(result, p)
        iterations = -(-cfg.iterations // cfg.rounds) if cfg.iterations else None
        for b in cfg.batches:
            x = np.ascontiguousarray(images[:b])
            turn = (lambda r, i: progress(f"batch {b}, round {r + 1}/{cfg.rounds}: {loaded[i][0].label}")  # noqa: B023
                    ) if progress else None
            timed = interleaved([lambda be=backend: be.infer(x) for _, backend in loaded], rounds=cfg.rounds,  # noqa: B023
                                calls=iterations, duration_s=cfg.duration_s, warmup_s=cfg.warmup_s, on_turn=turn)
            for i, (v, backend) in enumerate(loaded):
                eff = effective[v.label]
                stats = summarize(np.array(timed[i].pooled), v, b, backend.device, flops, result.peaks.get(eff),
                                  arts.spec.image_size, timed[i].round_medians)
                extra: dict[str, Any] = {}
                if eff != v.precision:
                    extra["effective_precision"] = eff
                if v.label in accuracy:
                    extra["accuracy"] = accuracy[v.label]
                compute = getattr(backend, "compute_only_ms", None)
                if compute is not None and backend.device.startswith("cuda"):
                    extra["compute_p50_ms"] = compute(x)
                if getattr(backend, "compile_s", None) is not None:
                    extra["compile_s"] = backend.compile_s
                result.rows.append(LatencyStats(**{**asdict(stats), **extra}) if extra else stats)
    return result
