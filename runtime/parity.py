"""Parity of every artifact on every backend against the PyTorch FP32 reference (the unfolded checkpoint)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from resnet_edge.errors import InvalidInput
from resnet_edge.images import to_input
from runtime.outputs import SavedRun, run_batched
from runtime.precision import Precision, precision_of
from runtime.spec import Artifacts
from runtime.tolerances import TOLERANCES, ParityResult, Tolerance, compare
from runtime.variants import Variant

__all__ = ["TOLERANCES", "ParityReport", "ParityResult", "ParityRow", "Tolerance", "compare", "run_parity"]


@dataclass
class ParityRow:
    variant: str
    backend: str
    precision: Precision
    real: ParityResult
    random: ParityResult | None  # None where the reference is the golden set (no PyTorch to run random inputs)
    seconds: float

    def __post_init__(self) -> None:
        self.precision = precision_of(self.precision)

    @property
    def passed(self) -> bool:
        return bool(self.real) and (self.random is None or bool(self.random))

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "backend": self.backend, "precision": self.precision,
                "passed": self.passed, "seconds": round(self.seconds, 3),
                "real": self.real.to_dict(), "random": self.random.to_dict() if self.random is not None else None}


@dataclass
class ParityReport:
    rows: list[ParityRow] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    n_real: int = 0
    n_random: int = 0
    reference: str = "PyTorch FP32 (unfolded checkpoint)"

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)


def reference_logits(arts: Artifacts, program: Path, x: np.ndarray) -> np.ndarray:
    """PyTorch FP32 on the unfolded model (the reference program), eager, on CPU: the reference everything is held
    to. It runs through the torch backend like any artifact, in ``run_batched``'s batches."""
    from resnet_edge.images import eval_batch
    from runtime import backends

    batch = eval_batch(arts.spec.image_size, cap=500)
    with backends.create("torch", arts.spec, program, precision="fp32", channels_last=False, max_batch=batch) as model:
        return run_batched(model.infer, x, batch)


@dataclass(frozen=True)
class Reference:
    """What artifacts are held to: a run of the PyTorch FP32 reference (images, labels, logits), already made; with
    the reference program (and torch) here, random inputs are run against it as well."""

    run: SavedRun
    x: np.ndarray  # the run's images as model inputs
    program: Path | None
    description: str

    @property
    def labels(self) -> np.ndarray:
        return self.run.labels

    @property
    def logits(self) -> np.ndarray:
        return self.run.logits


REFERENCES = ("auto", "golden", "pytorch")


def choose_reference(arts: Artifacts, *, use: str = "auto", limit: int | None = None,
                     data_dir: Path | None = None) -> Reference:
    """``golden``: the golden set in the artifacts (no torch, no dataset needed). ``pytorch``: the reference program
    (the unfolded checkpoint, exported) run now over the real test set. ``auto``: ``pytorch`` where torch and the
    dataset are here, else the golden set. A path: a run saved by ``parity --save-outputs`` on any machine."""
    from runtime import reference

    use = "pytorch" if use == "checkpoint" else use  # the name before the reference became a program
    if use not in REFERENCES:
        path = Path(use)
        if not path.is_file():
            raise InvalidInput(f"--reference must be auto, golden, pytorch or a saved run's file, not '{use}'.")
        return _reference(arts, SavedRun.load(path).head(limit), None, f"the saved run {path.name}")
    fmnist_model = arts.spec.reads_fashion_mnist
    if use == "auto":
        use = "pytorch" if reference.available(arts) and fmnist_model and _has_data(data_dir) else "golden"
    golden = arts.golden_run()
    if use == "golden":
        return _reference(arts, golden.head(limit), None,
                          f"the golden set's PyTorch FP32 logits: {len(golden.head(limit)):,} real test images")
    program = reference.require(arts)  # one sentence if torch or the program is missing
    if fmnist_model:
        from resnet_edge import fmnist

        a = fmnist.load_arrays(data_dir)
        images, labels, what = a.test_images[:limit], a.test_labels[:limit], "real test images"
    else:  # an image-folder model: its golden images, the reference program's logits
        images, labels, what = golden.images[:limit], golden.labels[:limit], "golden images"
    x = _inputs(arts, images)
    run = SavedRun(images, labels.astype(np.int64), reference_logits(arts, program, x),
                   "PyTorch FP32, the unfolded model, eager on the CPU")
    return Reference(run, x, program, f"PyTorch FP32 (unfolded model): {len(x):,} {what}")


def _inputs(arts: Artifacts, images: np.ndarray) -> np.ndarray:
    return to_input(images, arts.spec.mean, arts.spec.std, arts.spec.image_size)


def _reference(arts: Artifacts, run: SavedRun, program: Path | None, description: str) -> Reference:
    if run.logits.ndim != 2 or run.logits.shape[1] != arts.spec.num_classes:
        raise InvalidInput(f"{description} has logits of shape {list(run.logits.shape)}; this model has "
                           f"{arts.spec.num_classes} classes.")
    return Reference(run, _inputs(arts, run.images), program, description)


def _has_data(data_dir: Path | None) -> bool:
    from resnet_edge import fmnist
    from resnet_edge.errors import DataError

    try:
        fmnist.locate(data_dir)
    except DataError:
        return False
    return True


def run_parity(arts: Artifacts, variants: list[Variant], ref: Reference, *, n_random: int = 256, batch: int = 64,
               progress=None) -> ParityReport:
    """Every variant compared with the reference run; with the reference program here, ``n_random`` random inputs
    too."""
    import time

    n_random = n_random if ref.program is not None else 0
    rng = np.random.default_rng(0)
    rand_x = rng.standard_normal((n_random, *arts.spec.chw)).astype(np.float32)
    ref_rand = reference_logits(arts, ref.program, rand_x) if n_random else None
    report = ParityReport(n_real=len(ref.x), n_random=n_random, reference=ref.description)
    for v in variants:
        if progress:
            progress(v.label)
        t0 = time.perf_counter()
        with v.create(arts, max_batch=batch, buckets=(batch,)) as backend:  # a short last batch is padded
            real = compare(ref.logits, run_batched(backend.infer, ref.x, batch), v.precision, ref.labels)
            if getattr(backend, "fell_back", False):  # right numbers, but not from the device asked for
                real = dataclasses.replace(real, failures=(*real.failures, f"fell back to the CPU ({backend.describe()})"))
            # Random inputs have no labels and near-tied logits: gate only the float paths' relative error.
            rand = compare(ref_rand, run_batched(backend.infer, rand_x, batch), v.precision, gate_top1=False) \
                if n_random else None
        report.rows.append(ParityRow(v.label, v.backend, v.precision, real, rand, time.perf_counter() - t0))
    return report


def parity_table(report: ParityReport) -> Table:
    t = Table(title=f"parity vs {report.reference}" + (f", {report.n_random} random inputs" if report.n_random else ""))
    for col in ("variant", "max |Δ| real", "max rel real", "cos min", "top-1 agree", "test acc", "Δacc",
                "max rel random", "result"):
        t.add_column(col, justify="left" if col in ("variant", "result") else "right")
    for r in report.rows:
        d = r.real.delta_acc_pt
        why = "; ".join(r.real.failures + (r.random.failures if r.random else ()))
        t.add_row(r.variant, f"{r.real.max_abs:.2e}", f"{r.real.max_rel:.2e}", f"{r.real.cosine_min:.5f}",
                  f"{r.real.top1_agreement:.2%}", f"{r.real.accuracy:.2%}", f"{d:+.2f} pt",
                  f"{r.random.max_rel:.2e}" if r.random else "-", "[green]pass[/]" if r.passed else f"[red]FAIL[/] {why}")
    return t


def parity_json(report: ParityReport) -> str:
    return json.dumps({"passed": report.passed, "reference": report.reference, "n_real": report.n_real,
                       "n_random": report.n_random,
                       "rows": [r.to_dict() for r in report.rows], "skipped": report.skipped}, indent=2)
