"""``bench --summary --pareto-with DIR,...``: the teacher's artifacts and compressed models' artifacts in one
interleaved run, as a Pareto view of test accuracy against latency at batch 1 and throughput at the largest batch.

Every folder's artifacts run on their format's own runtime, each at its own precision. The peers are the strongest a
user would run instead, told apart: OpenVINO + NNCF's post-training INT8 of the **teacher's** FP32 ONNX (what an
OpenVINO user does today), and NNCF INT8 of each compressed model's FP32 ONNX (so that what the smaller model brings
is told apart from what the runtime brings). Views: Markdown, CSV, JSON and a PNG with both panels.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from resnet_edge.atomic import atomic_path, atomic_write_text
from resnet_edge.errors import InvalidInput
from runtime.lab.bench import BenchConfig, BenchResult, run_bench
from runtime.spec import Artifacts
from runtime.variants import Variant

NNCF = "peer: OpenVINO + NNCF INT8"


@dataclass(frozen=True)
class ParetoRow:
    model: str  # the folder's name
    label: str  # the variant: format, backend and precision, or the peer's name
    peer: bool
    params: int | None
    macs: int | None
    accuracy: float | None
    p50_ms_batch1: float | None
    ips_largest_batch: float | None
    vs_teacher_nncf_batch1: float | None = None  # the teacher's NNCF INT8 p50 over this one's: above 1 is faster
    vs_teacher_nncf_largest: float | None = None


def folder_variants(name: str, arts: Artifacts, threads: int, calibration: np.ndarray | None) -> list[Variant]:
    """A folder's artifacts on their format's first backend at their own precision, and its NNCF INT8 peer; every
    label carries the folder's name."""
    from runtime.formats import FORMATS
    from runtime.lab.peers import nncf_int8, nncf_unavailable, workdir
    from runtime.variants import plan

    variants, _ = plan(arts, sorted({FORMATS[a.format].backends[0] for a in arts.items}), threads=threads)
    own = [replace(v, label=f"{name}: {v.label}") for v in variants
           if v.artifact is not None and v.precision == v.artifact.precision
           and FORMATS[v.artifact.format].backends[0] == v.backend]
    fp32 = arts.find("onnx", "fp32")
    if calibration is not None and fp32 is not None and nncf_unavailable() is None:
        xml = nncf_int8(fp32.path, calibration, workdir() / f"pareto_{name}_nncf_int8.xml")
        own.append(Variant("openvino", xml, "int8", f"{name}: {NNCF}", {"defaults": True, "threads": threads},
                           peer=True))
    return own


def check_same_model_io(folders: list[Artifacts]) -> None:
    first = folders[0]
    for arts in folders[1:]:
        if replace(arts.spec, name=first.spec.name) != first.spec:  # a ResNet-10 student differs in name only
            raise InvalidInput(f"{arts.root} takes other inputs or classes than {first.root}; a Pareto view compares "
                               "models of one task.")


def pareto_bench(folders: list[Artifacts], cfg: BenchConfig, x: np.ndarray, labels: np.ndarray, *, threads: int = 0,
                 calibration: np.ndarray | None = None, progress=None) -> tuple[BenchResult, list[ParetoRow]]:
    """Every folder's variants and NNCF peers in one interleaved run; the first folder is the teacher."""
    check_same_model_io(folders)
    names = _names(folders)
    variants = [v for name, arts in zip(names, folders) for v in folder_variants(name, arts, threads, calibration)]
    result = run_bench(folders[0], variants, cfg, x, labelled=(x, labels), progress=progress)
    # FLOPs were counted on the first folder's graph: a compressed model's achieved GFLOP/s would be wrong
    result.rows = [r if r.label.startswith(names[0] + ":") else replace(r, gflops=None, gflops_real=None,
                                                                        peak_ratio=None) for r in result.rows]
    return result, pareto_rows(names, folders, result)


def _names(folders: list[Artifacts]) -> list[str]:
    names = [arts.root.resolve().name for arts in folders]
    if len(set(names)) != len(names):
        raise InvalidInput(f"The artifact folders must have distinct names, not {', '.join(names)}.")
    return names


def pareto_rows(names: list[str], folders: list[Artifacts], result: BenchResult) -> list[ParetoRow]:
    largest = max(result.config.batches)

    def stat(label: str, batch: int):
        return next((r for r in result.rows if r.label == label and r.batch == batch), None)

    ref1, refn = stat(f"{names[0]}: {NNCF}", 1), stat(f"{names[0]}: {NNCF}", largest)
    rows = []
    for name, arts in zip(names, folders):
        comp = arts.manifest.model.compression
        params, macs = (comp.params, comp.macs) if comp else (None, None)
        if comp is None and folders[0] is arts:  # the teacher: its size as its students recorded it
            told = next((f.manifest.model.compression for f in folders[1:] if f.manifest.model.compression), None)
            params, macs = (told.teacher_params, told.teacher_macs) if told else (None, None)
        for label in dict.fromkeys(r.label for r in result.rows if r.label.startswith(name + ": ")):
            b1, bn = stat(label, 1), stat(label, largest)
            rows.append(ParetoRow(name, label.removeprefix(name + ": "), b1.peer if b1 else False, params, macs,
                                  (b1 or bn).accuracy if (b1 or bn) else None, b1.p50_ms if b1 else None,
                                  bn.throughput_ips if bn else None,
                                  ref1.p50_ms / b1.p50_ms if ref1 and b1 else None,
                                  refn.p50_ms / bn.p50_ms if refn and bn else None))
    return rows


COLUMNS = ("model", "variant", "params (M)", "MACs (M)", "accuracy", "p50 ms b1", "img/s max batch",
           "vs teacher's NNCF INT8 (b1 / max)")


def _cells(r: ParetoRow) -> list[str]:
    def num(x, f):
        return "" if x is None else format(x, f)

    ratio = "" if r.vs_teacher_nncf_batch1 is None else \
        f"{r.vs_teacher_nncf_batch1:.2f}× / {num(r.vs_teacher_nncf_largest, '.2f')}×"
    return [r.model, r.label, num(r.params and r.params / 1e6, ".2f"), num(r.macs and r.macs / 1e6, ".1f"),
            num(r.accuracy, ".2%"), num(r.p50_ms_batch1, ".3f"), num(r.ips_largest_batch, ",.0f"), ratio]


def pareto_markdown(rows: list[ParetoRow]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(_cells(r)) + " |" for r in rows]) + "\n"


def write_pareto(rows: list[ParetoRow], out_dir: Path, meta: dict) -> list[Path]:
    """pareto.md, .csv, .json and .png in ``out_dir``, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_text(out_dir / "pareto.md", pareto_markdown(rows))]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(list(asdict(rows[0])) if rows else [])
    w.writerows([list(asdict(r).values()) for r in rows])
    written.append(atomic_write_text(out_dir / "pareto.csv", buf.getvalue()))
    written.append(atomic_write_text(out_dir / "pareto.json", json.dumps({**meta, "rows": [asdict(r) for r in rows]},
                                                                         indent=2)))
    written.append(_plot(rows, out_dir / "pareto.png", meta.get("largest_batch")))
    return written


def _short(label: str) -> str:
    for long, short in (("peer: OpenVINO + NNCF INT8", "NNCF int8"), ("onnxruntime", "ORT"), ("openvino IR", "OV"),
                        ("executorch", "ET"), (" folded", "")):
        label = label.replace(long, short)
    return label


def _plot(rows: list[ParetoRow], path: Path, largest: int | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    models = list(dict.fromkeys(r.model for r in rows))
    colors = dict(zip(models, plt.cm.tab10.colors))
    for ax, key, xlabel in ((axes[0], "p50_ms_batch1", "p50 latency at batch 1 (ms, log)"),
                            (axes[1], "ips_largest_batch", f"images/s at batch {largest} (log)")):
        for r in rows:
            x = getattr(r, key)
            if x is None or r.accuracy is None:
                continue
            ax.scatter(x, r.accuracy * 100, color=colors[r.model], marker="x" if r.peer else "o", s=40)
            ax.annotate(_short(r.label), (x, r.accuracy * 100), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    for m in models:
        axes[0].scatter([], [], color=colors[m], label=m)
    axes[0].legend(title="model (x: NNCF INT8 peer)", fontsize=8)
    fig.suptitle("accuracy against speed: the teacher and its compressed models, every format on its own runtime")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path
