"""``bench --summary``: one row per artifact on its format's own runtime, in the spirit of Ultralytics' benchmark
table, but every row proven against the PyTorch logits first.

Columns: format, precision, status (passed parity / exported but failed parity / export skipped / not run here),
size, accuracy and its difference from PyTorch, p50 at batch 1 and images/s at the largest batch, and two peers:
the runtime's own defaults for that format (LiteRT's interpreter on the plain conversion, ncnn's option defaults,
OpenVINO's defaults, ONNX Runtime's defaults and its ``quantize_static``, OpenVINO + NNCF for INT8) and the strongest
peer of the same precision class in the run. Everything comes from one interleaved bench run and one parity run on
the golden set. Views: a rich table, Markdown, CSV, JSON and a PNG.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from resnet_edge.atomic import atomic_path, atomic_write_text
from runtime.formats import FORMATS
from runtime.lab.bench import BenchResult, LatencyStats, precision_class
from runtime.parity import ParityReport
from runtime.spec import Artifacts
from runtime.variants import Variant


@dataclass(frozen=True)
class SummaryRow:
    format: str
    precision: str
    artifact: str
    runtime: str
    status: str
    size_mb: float | None = None
    accuracy: float | None = None
    delta_acc_pt: float | None = None
    top1_agreement: float | None = None
    p50_ms_batch1: float | None = None
    ips_largest_batch: float | None = None
    peer: str | None = None
    peer_speedup_batch1: float | None = None  # peer p50 / ours at batch 1: > 1 is ours faster
    peer_speedup_largest: float | None = None
    strongest_peer: str | None = None
    strongest_speedup_batch1: float | None = None


def primary_variants(variants: list[Variant]) -> list[Variant]:
    """Each artifact on the first backend the formats table names for its format, at its own precision."""
    return [v for v in variants if not v.peer and v.artifact is not None and v.precision == v.artifact.precision
            and FORMATS[v.artifact.format].backends[0] == v.backend]


def _row(result: BenchResult, label: str, batch: int) -> LatencyStats | None:
    return next((r for r in result.rows if r.label == label and r.batch == batch), None)


def build_summary(arts: Artifacts, variants: list[Variant], result: BenchResult, parity: ParityReport,
                  not_run: dict[str, str]) -> list[SummaryRow]:
    """``not_run``: format -> why its backend cannot run here."""
    largest = max(result.config.batches)
    checks = {r.variant: r for r in parity.rows}
    ref_acc = arts.reference_accuracy
    out = []
    for v in primary_variants(variants):
        art, check = v.artifact, checks.get(v.label)
        b1, big = _row(result, v.label, 1), _row(result, v.label, largest)
        cls = precision_class(b1) if b1 else v.precision
        own = FORMATS[art.format].held_against.get(art.precision) if art.format in FORMATS else None
        own_b1, own_big = (_row(result, own, 1), _row(result, own, largest)) if own else (None, None)
        if own_b1 and precision_class(own_b1) != cls:  # OpenVINO's defaults compute bf16 on this CPU: not this class
            own_b1 = own_big = None
        strongest = result.best(1, peer=True, precision=cls, gpu=False)
        acc = big.accuracy if big and big.accuracy is not None else art.test_accuracy
        out.append(SummaryRow(
            art.format, art.tag, art.path.name, v.backend,
            "passed parity" if check and check.passed else "exported, failed parity" if check else "not checked",
            round(art.row.size_bytes / 1e6, 2), acc, (acc - ref_acc) * 100 if ref_acc is not None else None,
            check.real.top1_agreement if check else None,
            b1.p50_ms if b1 else None, big.throughput_ips if big else None,
            own if own_b1 else None, own_b1.p50_ms / b1.p50_ms if own_b1 and b1 else None,
            own_big.p50_ms / big.p50_ms if own_big and big else None,
            strongest.label if strongest else None, strongest.p50_ms / b1.p50_ms if strongest and b1 else None))
    for s in arts.manifest.skipped:
        out.append(SummaryRow(s.format, "", "", "", f"export skipped: {s.reason}"))
    for fmt, why in not_run.items():  # each artifact of a format whose runtime is not here, and what export checked
        for art in (a for a in arts.items if a.format == fmt):
            done = art.row.built_note.split(";")[0] if art.row.status == "built" else "exported"
            out.append(SummaryRow(fmt, art.tag, art.path.name, FORMATS[fmt].backends[0], f"{done}; {why}",
                                  round(art.row.size_bytes / 1e6, 2)))
    return out


COLUMNS = ("format", "precision", "status", "size MB", "accuracy", "Δ vs PyTorch", "p50 ms b1", "img/s max batch",
           "vs own-runtime defaults (b1 / max)", "vs strongest peer in class (b1)")


def _cells(r: SummaryRow) -> list[str]:
    def num(x, f):
        return "" if x is None else format(x, f)

    own = f"{r.peer.removeprefix('peer: ')}: {num(r.peer_speedup_batch1, '.2f')}× / " \
          f"{num(r.peer_speedup_largest, '.2f')}×" if r.peer else ""
    strong = f"{r.strongest_peer.removeprefix('peer: ')}: {num(r.strongest_speedup_batch1, '.2f')}×" \
        if r.strongest_peer else ""
    return [r.format, r.precision, r.status, num(r.size_mb, ".1f"), num(r.accuracy, ".2%"),
            "" if r.delta_acc_pt is None else f"{r.delta_acc_pt:+.2f} pt", num(r.p50_ms_batch1, ".3f"),
            num(r.ips_largest_batch, ",.0f"), own, strong]


def summary_table(rows: list[SummaryRow], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for c in COLUMNS:
        t.add_column(c, justify="left" if c in ("format", "precision", "status") or c.startswith("vs") else "right")
    for r in rows:
        t.add_row(*_cells(r))
    return t


def summary_markdown(rows: list[SummaryRow]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in _cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_summary(rows: list[SummaryRow], path: Path, meta: dict[str, Any]) -> Path:
    """By suffix: .md, .csv, .json or .png."""
    path = Path(path)
    if path.suffix == ".md":
        return atomic_write_text(path, summary_markdown(rows))
    if path.suffix == ".csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(SummaryRow.__dataclass_fields__))
        w.writeheader()
        w.writerows(asdict(r) for r in rows)
        return atomic_write_text(path, buf.getvalue())
    if path.suffix == ".json":
        return atomic_write_text(path, json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=2))
    return _plot(rows, path, meta)


def _plot(rows: list[SummaryRow], path: Path, meta: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [r for r in rows if r.p50_ms_batch1 is not None]
    names = [f"{r.format} {r.precision}" for r in ran]
    colors = ["tab:green" if r.status == "passed parity" else "tab:red" for r in ran]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(ran) + 1.8))
    axes[0].barh(names, [r.p50_ms_batch1 for r in ran], color=colors)
    axes[0].set_xlabel("p50 ms at batch 1 (lower is better)")
    axes[1].barh(names, [r.ips_largest_batch or 0 for r in ran], color=colors)
    axes[1].set_xlabel(f"images/s at batch {meta.get('largest_batch', '')} (higher is better)")
    for ax in axes:
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"every artifact on its own runtime (green: passed parity)\n{meta.get('machine', '')}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
