"""The one tolerance table and the parity statistics every stage holds artifacts to (numpy only)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from runtime.precision import Precision, precision_of


@dataclass(frozen=True)
class Tolerance:
    max_rel: float | None = None  # max |dlogit| / max |ref logit|
    min_top1: float | None = None  # top-1 agreement with the reference
    max_acc_drop_pt: float | None = None  # accuracy drop on the real test set, percentage points


# The one tolerance table, keyed by precision. Export's accuracy gates, BN folding, the choice of
# optional variants, runtime parity and the tests all read it; nothing restates a bound.
TOLERANCES: dict[Precision, Tolerance] = {
    Precision.FP32: Tolerance(max_rel=1e-4, max_acc_drop_pt=0.1),
    Precision.FP16: Tolerance(max_rel=1e-2, max_acc_drop_pt=0.1),
    Precision.BF16: Tolerance(max_rel=5e-2, min_top1=0.99),
    Precision.INT8: Tolerance(min_top1=0.99, max_acc_drop_pt=0.5),
}


def tolerance_failures(precision: str, *, max_rel: float, top1_agreement: float, accuracy: float | None,
                       ref_accuracy: float | None, gate_top1: bool = True) -> tuple[str, ...]:
    """Each bound of ``precision``'s row of the table that these statistics miss, as a phrase."""
    tol, failures = TOLERANCES[precision_of(precision)], []
    if tol.max_rel is not None and max_rel > tol.max_rel:
        failures.append(f"max relative error {max_rel:.2e} > {tol.max_rel:.0e}")
    if tol.min_top1 is not None and gate_top1 and top1_agreement < tol.min_top1:
        failures.append(f"top-1 agreement {top1_agreement:.2%} < {tol.min_top1:.0%}")
    drop = None if accuracy is None or ref_accuracy is None else (ref_accuracy - accuracy) * 100
    # 1e-9 pt of slack for float rounding only: one image of 1,000 is a drop of 0.1000000000000001 "pt" in float,
    # which is the 0.1 pt the fp32/fp16 rows allow, not more
    if tol.max_acc_drop_pt is not None and drop is not None and drop > tol.max_acc_drop_pt + 1e-9:
        failures.append(f"accuracy {accuracy:.2%} is {(ref_accuracy - accuracy) * 100:.2f} pt below "
                        f"{ref_accuracy:.2%} (bound {tol.max_acc_drop_pt} pt)")
    return tuple(failures)


@dataclass(frozen=True)
class ParityResult:
    """Outputs compared with reference logits: ``bool(result)`` says whether the precision's tolerances hold."""

    max_abs: float  # max |out - ref| over all logits
    max_rel: float  # max_abs / max |ref|
    cosine_min: float  # lowest per-sample cosine similarity of logit vectors
    top1_agreement: float  # fraction of samples whose argmax matches the reference
    accuracy: float | None = None  # on the labels; None without labels (random inputs)
    ref_accuracy: float | None = None
    n: int = 0
    failures: tuple[str, ...] = ()  # each bound of the precision's row that is missed

    def __bool__(self) -> bool:
        return not self.failures

    @property
    def delta_acc_pt(self) -> float | None:
        return None if self.accuracy is None or self.ref_accuracy is None else (self.accuracy - self.ref_accuracy) * 100

    def derived(self) -> dict[str, float | None]:
        return {"delta_acc_pt": self.delta_acc_pt}

    def to_dict(self) -> dict:
        return {**asdict(self), **self.derived()}


def compare(ref: np.ndarray, out: np.ndarray, precision: str | None = None, labels: np.ndarray | None = None,
            *, gate_top1: bool = True) -> ParityResult:
    """Compare logits with the reference's; with ``precision``, held to its row of the tolerance table (random
    inputs, ``gate_top1=False``: near-tied logits make top-1 meaningless, only the float error is gated)."""
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"logit shapes differ: {ref.shape} vs {out.shape}")
    diff = np.abs(out - ref)
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = np.divide((ref * out).sum(1), denom, out=np.ones(len(ref)), where=denom > 0)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float(diff.max() / max(np.abs(ref).max(), 1e-12)) if diff.size else 0.0
    agree = float((ref.argmax(1) == out.argmax(1)).mean()) if len(ref) else 1.0
    acc = ref_acc = None
    if labels is not None:
        acc, ref_acc = float((out.argmax(1) == labels).mean()), float((ref.argmax(1) == labels).mean())
    failures = tolerance_failures(precision, max_rel=max_rel, top1_agreement=agree, accuracy=acc, ref_accuracy=ref_acc,
                                  gate_top1=gate_top1) if precision else ()
    return ParityResult(max_abs, max_rel, float(cos.min()) if cos.size else 1.0, agree, acc, ref_acc, len(ref),
                        failures)
