"""Views of bench results: rich tables, JSON, CSV and PNG plots (parity's table and JSON are in ``runtime.parity``)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from rich.markup import escape
from rich.table import Table

from resnet_edge.atomic import atomic_path, atomic_write_text
from resnet_edge.errors import MissingDependency
from runtime.lab.bench import BenchResult


def header(result: BenchResult) -> str:
    m = result.machine
    libs = ", ".join(f"{k} {m[k]}" for k in ("torch", "onnxruntime", "openvino") if m.get(k))
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    peaks = ", ".join(f"{p} {g:.0f} ({result.peak_sources.get(p, '?')})" for p, g in result.peaks.items() if g)
    flops = (f"{result.flops.nominal / 1e9:.3f} GFLOP/image nominal, {result.flops.real / 1e9:.3f} real "
             "(taps on zero padding left out)") if result.flops else "FLOPs not counted (no PyTorch here)"
    return (f"{m['cpu']} ({m['cores']} cores){gpu}; {libs}; {result.image_size}px input, "
            f"{flops}; {result.config.rounds} interleaved rounds, p50 = median of round medians"
            + (f"; measured GEMM peak GFLOP/s: {peaks}" if peaks else ""))


def bench_table(result: BenchResult) -> Table:
    t = Table(title=header(result), title_justify="left")
    cols = ["variant", "batch", "p50 ms", "p90 ms", "p99 ms", "min ms", "max ms", "img/s"]
    if any(r.accuracy is not None for r in result.rows):
        cols += ["test acc"]
    if any(r.gflops for r in result.rows):
        cols += ["GFLOP/s nominal", "GFLOP/s real"]
    if result.peaks:
        cols += ["% peak (real)"]
    if any(r.compute_p50_ms for r in result.rows):
        cols += ["compute p50 ms"]
    if any(r.compile_s is not None for r in result.rows):
        cols += ["compile s (all batches)"]
    for c in cols:
        t.add_column(c, justify="left" if c == "variant" else "right")
    for r in sorted(result.rows, key=lambda r: (r.batch, r.p50_ms)):
        label = r.label + (f" [computes {r.effective_precision}]" if r.effective_precision else "")
        cells = [("[dim]" + escape(label) + "[/]") if r.peer else escape(label), str(r.batch), f"{r.p50_ms:.3f}",
                 f"{r.p90_ms:.3f}", f"{r.p99_ms:.3f}", f"{r.min_ms:.3f}", f"{r.max_ms:.3f}", f"{r.throughput_ips:,.0f}"]
        if "test acc" in cols:
            cells.append(f"{r.accuracy:.2%}" if r.accuracy is not None else "")
        if "GFLOP/s nominal" in cols:
            cells += [f"{r.gflops:.1f}" if r.gflops else "", f"{r.gflops_real:.1f}" if r.gflops_real else ""]
        if "% peak (real)" in cols:
            cells.append(f"{r.peak_ratio:.0%}" if r.peak_ratio else "")
        if "compute p50 ms" in cols:
            cells.append(f"{r.compute_p50_ms:.3f}" if r.compute_p50_ms else "")
        if "compile s (all batches)" in cols:
            cells.append(f"{r.compile_s:.1f}" if r.compile_s is not None else "")
        t.add_row(*cells)
    return t


def speedup_table(result: BenchResult) -> Table | None:
    rows = result.speedups()
    if not rows:
        return None
    t = Table(title="our variant of each peer's precision class, fixed before timing by auto's rule, vs that peer "
                    "(p50 latency ratio; the lowest and highest per-round ratio)", title_justify="left")
    for c in ("batch", "class", "peer", "peer p50 ms", "peer acc", "ours", "ours p50 ms", "ours acc", "speed-up",
              "rounds"):
        t.add_column(c, justify="left" if c in ("class", "peer", "ours") else "right")

    def acc(a):
        return f"{a:.2%}" if a is not None else ""

    for s in rows:
        t.add_row(str(s["batch"]), s["class"], s["peer"], f"{s['peer_p50_ms']:.3f}", acc(s["peer_accuracy"]),
                  s["ours"] or "(none of ours in this class)",
                  f"{s['ours_p50_ms']:.3f}" if s["ours_p50_ms"] else "", acc(s["ours_accuracy"]),
                  f"{s['speedup']:.2f}x" if s["speedup"] else "",
                  f"{s['speedup_min']:.2f}-{s['speedup_max']:.2f}x" if s["speedup_min"] else "")
    return t


def write_bench_json(result: BenchResult, path: Path) -> Path:
    return atomic_write_text(path, json.dumps(result.to_dict(), indent=2))


def write_bench_csv(result: BenchResult, path: Path) -> Path:
    buf = io.StringIO()
    rows = [asdict(r) for r in result.rows]
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["label"])
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def write_bench_plot(result: BenchResult, path: Path) -> Path:
    """Latency (p50) and throughput against batch size, one line per variant; peers dashed."""
    try:
        import matplotlib
    except ImportError:
        raise MissingDependency("--plot needs matplotlib (pip install matplotlib).") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5.4), dpi=110)
    labels = list(dict.fromkeys(r.label for r in result.rows))
    colors = plt.cm.tab20(np.linspace(0, 1, max(len(labels), 2)))
    markers = {"torch": "s", "onnxruntime": "o", "openvino": "^", "tensorrt": "D", "aoti": "P"}
    for color, label in zip(colors, labels):
        rows = sorted((r for r in result.rows if r.label == label), key=lambda r: r.batch)
        style = dict(linestyle="--" if rows[0].peer else "-", marker=markers.get(rows[0].backend, "o"),
                     color=color, label=label + (" (peer)" if rows[0].peer and "peer" not in label else ""))
        ax1.plot([r.batch for r in rows], [r.p50_ms for r in rows], **style)
        ax2.plot([r.batch for r in rows], [r.throughput_ips for r in rows], **style)
        if all(r.compute_p50_ms for r in rows):  # GPU rows: compute alone (dotted) under end-to-end
            ax1.plot([r.batch for r in rows], [r.compute_p50_ms for r in rows], linestyle=":", color=color, alpha=0.7)
    for ax, ylabel in ((ax1, "p50 latency (ms)"), (ax2, "throughput (images/s)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_xticks(list(result.config.batches), [str(b) for b in result.config.batches])
        ax.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
               title="dashed: peers' defaults; dotted: GPU compute only", title_fontsize=7)
    fig.suptitle(header(result), fontsize=8)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
