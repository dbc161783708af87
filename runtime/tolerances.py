"""The one tolerance table and the parity statistics every stage holds artifacts to (numpy only)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    max_rel: float | None = None  # max |dlogit| / max |ref logit|
    min_top1: float | None = None  # top-1 agreement with the reference
    max_acc_drop_pt: float | None = None  # accuracy drop on the real test set, percentage points


# The one tolerance table, keyed by precision. Export's accuracy gates, BN folding, the choice of
# optional variants, runtime parity and the tests all read it; nothing restates a bound.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_rel=1e-4, max_acc_drop_pt=0.1),
    "fp16": Tolerance(max_rel=1e-2, max_acc_drop_pt=0.1),
    "bf16": Tolerance(max_rel=5e-2, min_top1=0.99),
    "int8": Tolerance(min_top1=0.99, max_acc_drop_pt=0.5),
}


def tolerance_failures(precision: str, *, max_rel: float, top1_agreement: float, accuracy: float | None,
                       ref_accuracy: float | None, gate_top1: bool = True) -> tuple[str, ...]:
    """Each bound of ``precision``'s row of the table that these statistics miss, as a phrase."""
    tol, failures = TOLERANCES[precision], []
    if tol.max_rel is not None and max_rel > tol.max_rel:
        failures.append(f"max relative error {max_rel:.2e} > {tol.max_rel:.0e}")
    if tol.min_top1 is not None and gate_top1 and top1_agreement < tol.min_top1:
        failures.append(f"top-1 agreement {top1_agreement:.2%} < {tol.min_top1:.0%}")
    if tol.max_acc_drop_pt is not None and accuracy is not None and (ref_accuracy - accuracy) * 100 > tol.max_acc_drop_pt:
        failures.append(f"accuracy {accuracy:.2%} is {(ref_accuracy - accuracy) * 100:.2f} pt below "
                        f"{ref_accuracy:.2%} (bound {tol.max_acc_drop_pt} pt)")
    return tuple(failures)


@dataclass(frozen=True)
class ParityStats:
    max_abs: float  # max |out - ref| over all logits
    max_rel: float  # max_abs / max |ref|
    cosine_min: float  # lowest per-sample cosine similarity of logit vectors
    top1_agreement: float  # fraction of samples whose argmax matches the reference
    accuracy: float  # artifact's accuracy on the labels
    ref_accuracy: float
    n: int

    @property
    def delta_acc_pt(self) -> float:
        return (self.accuracy - self.ref_accuracy) * 100

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "delta_acc_pt": self.delta_acc_pt}

    def failures(self, precision: str) -> tuple[str, ...]:
        return tolerance_failures(precision, max_rel=self.max_rel, top1_agreement=self.top1_agreement,
                                  accuracy=self.accuracy, ref_accuracy=self.ref_accuracy)


def parity(ref: np.ndarray, out: np.ndarray, labels: np.ndarray) -> ParityStats:
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"logit shapes differ: {ref.shape} vs {out.shape}")
    diff = np.abs(out - ref)
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = np.divide((ref * out).sum(1), denom, out=np.ones(len(ref)), where=denom > 0)
    return ParityStats(
        max_abs=float(diff.max()) if diff.size else 0.0,
        max_rel=float(diff.max() / max(np.abs(ref).max(), 1e-12)) if diff.size else 0.0,
        cosine_min=float(cos.min()) if cos.size else 1.0,
        top1_agreement=float((ref.argmax(1) == out.argmax(1)).mean()),
        accuracy=float((out.argmax(1) == labels).mean()),
        ref_accuracy=float((ref.argmax(1) == labels).mean()),
        n=len(ref),
    )
