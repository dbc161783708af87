"""Parity of every artifact on every backend against the PyTorch FP32 reference (the unfolded checkpoint)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.parity import TOLERANCES, Tolerance, parity, tolerance_failures
from runtime.spec import Artifacts
from runtime.variants import Variant

__all__ = ["TOLERANCES", "ParityReport", "ParityResult", "ParityRow", "Tolerance", "compare", "run_parity"]


@dataclass(frozen=True)
class ParityResult:
    max_abs: float
    max_rel: float
    cosine_min: float
    top1_agreement: float
    accuracy: float | None  # None on random inputs (no labels)
    ref_accuracy: float | None
    failures: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return not self.failures

    @property
    def delta_acc_pt(self) -> float | None:
        return None if self.accuracy is None else (self.accuracy - self.ref_accuracy) * 100


def compare(ref: np.ndarray, out: np.ndarray, precision: str, labels: np.ndarray | None = None,
            *, gate_accuracy: bool = True) -> ParityResult:
    """Compare logits against the reference; ``bool(result)`` says whether ``precision``'s tolerances hold."""
    s = parity(ref, out, labels if labels is not None else np.zeros(len(ref), dtype=np.int64))
    acc, ref_acc = (s.accuracy, s.ref_accuracy) if labels is not None else (None, None)
    failures = tolerance_failures(precision, max_rel=s.max_rel, top1_agreement=s.top1_agreement, accuracy=acc,
                                  ref_accuracy=ref_acc, gate_top1=gate_accuracy)
    return ParityResult(s.max_abs, s.max_rel, s.cosine_min, s.top1_agreement, acc, ref_acc, failures)


@dataclass
class ParityRow:
    variant: str
    backend: str
    precision: str
    real: ParityResult
    random: ParityResult
    seconds: float

    @property
    def passed(self) -> bool:
        return bool(self.real) and bool(self.random)

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "backend": self.backend, "precision": self.precision,
                "passed": self.passed, "seconds": round(self.seconds, 3),
                "real": {**asdict(self.real), "delta_acc_pt": self.real.delta_acc_pt},
                "random": asdict(self.random)}


@dataclass
class ParityReport:
    rows: list[ParityRow] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    n_real: int = 0
    n_random: int = 0

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)


def reference_logits(checkpoint: Path, x: np.ndarray) -> np.ndarray:
    """PyTorch FP32 on the unfolded checkpoint, eager, on CPU: the reference everything is held to."""
    import torch

    from train.checkpoint import load_model

    model = load_model(checkpoint)
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(x[i:i + 500])).numpy() for i in range(0, len(x), 500)])


def run_batched(backend, x: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([backend.infer(x[i:i + batch]) for i in range(0, len(x), batch)])


def run_parity(arts: Artifacts, variants: list[Variant], test_x: np.ndarray, labels: np.ndarray, *,
               checkpoint: Path, n_random: int = 256, batch: int = 64, progress=None) -> ParityReport:
    import time

    rng = np.random.default_rng(0)
    rand_x = rng.standard_normal((n_random, *arts.spec.chw)).astype(np.float32)
    ref_real, ref_rand = reference_logits(checkpoint, test_x), reference_logits(checkpoint, rand_x)
    report = ParityReport(n_real=len(test_x), n_random=n_random)
    for v in variants:
        if progress:
            progress(v.label)
        t0 = time.perf_counter()
        with v.create(arts, max_batch=batch, buckets=(batch,)) as backend:  # a short last batch is padded
            real = compare(ref_real, run_batched(backend, test_x, batch), v.precision, labels)
            # Random inputs have no labels and near-tied logits: gate only the float paths' relative error.
            rand = compare(ref_rand, run_batched(backend, rand_x, batch), v.precision, gate_accuracy=False)
        report.rows.append(ParityRow(v.label, v.backend, v.precision, real, rand, time.perf_counter() - t0))
    return report
