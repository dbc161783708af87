"""Parity of every artifact on every backend against the PyTorch FP32 reference (the unfolded checkpoint)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnet_edge.errors import InvalidInput
from resnet_edge.images import to_input
from runtime.spec import Artifacts
from runtime.tolerances import TOLERANCES, Tolerance, parity, tolerance_failures
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
    random: ParityResult | None  # None where the reference is the golden set (no PyTorch to run random inputs)
    seconds: float

    @property
    def passed(self) -> bool:
        return bool(self.real) and (self.random is None or bool(self.random))

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "backend": self.backend, "precision": self.precision,
                "passed": self.passed, "seconds": round(self.seconds, 3),
                "real": {**asdict(self.real), "delta_acc_pt": self.real.delta_acc_pt},
                "random": asdict(self.random) if self.random is not None else None}


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


def reference_logits(checkpoint: Path, x: np.ndarray) -> np.ndarray:
    """PyTorch FP32 on the unfolded checkpoint, eager, on CPU: the reference everything is held to."""
    import torch

    from runtime import reference

    model = reference.load_model(checkpoint)
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(x[i:i + 500])).numpy() for i in range(0, len(x), 500)])


def run_batched(backend, x: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([backend.infer(x[i:i + batch]) for i in range(0, len(x), batch)])


@dataclass(frozen=True)
class Reference:
    """What artifacts are held to: model inputs, labels and the PyTorch FP32 logits for them; with a checkpoint
    (and torch), random inputs too."""

    x: np.ndarray
    labels: np.ndarray
    logits: np.ndarray | None  # None: computed from ``checkpoint``
    checkpoint: Path | None
    description: str


def choose_reference(arts: Artifacts, *, use: str = "auto", checkpoint: Path | None = None, limit: int | None = None,
                     data_dir: Path | None = None) -> Reference:
    """``golden``: the golden set in the artifacts (no torch, no dataset needed). ``checkpoint``: PyTorch on the
    verified checkpoint over the real test set. ``auto``: the checkpoint where torch, the checkpoint and the
    dataset are all here, else the golden set."""
    from runtime import reference
    from runtime.preprocess import load_test_inputs

    if use not in ("auto", "golden", "checkpoint"):
        raise InvalidInput(f"--reference must be auto, golden or checkpoint, not '{use}'.")
    fmnist_model = arts.spec.reads_fashion_mnist
    if use == "auto":
        use = "checkpoint" if reference.available() and (checkpoint or arts.checkpoint).is_file() and fmnist_model \
            and _has_data(data_dir) else "golden"
    if use == "checkpoint":
        reference.require()  # one sentence if torch or the training stack is missing
        ckpt = arts.verified_checkpoint(checkpoint)
        if fmnist_model:
            x, labels = load_test_inputs(arts.spec, limit, data_dir)
            return Reference(x, labels, None, ckpt, f"PyTorch FP32 (unfolded checkpoint): {len(x):,} real test images")
        images, labels, _ = arts.golden()  # an image-folder model: its golden images, its checkpoint's logits
        x = to_input(images[:limit], arts.spec.mean, arts.spec.std, arts.spec.image_size)
        return Reference(x, labels[:limit], None, ckpt, f"PyTorch FP32 (unfolded checkpoint): {len(x):,} golden images")
    images, labels, logits = arts.golden()
    images, labels, logits = images[:limit], labels[:limit], logits[:limit]
    x = to_input(images, arts.spec.mean, arts.spec.std, arts.spec.image_size)
    return Reference(x, labels, logits, None, f"the golden set's PyTorch FP32 logits: {len(x):,} real test images")


def _has_data(data_dir: Path | None) -> bool:
    from resnet_edge import fmnist
    from resnet_edge.errors import DataError

    try:
        fmnist.locate(data_dir)
    except DataError:
        return False
    return True


def run_parity(arts: Artifacts, variants: list[Variant], test_x: np.ndarray, labels: np.ndarray, *,
               checkpoint: Path | None = None, reference: np.ndarray | None = None, n_random: int = 256,
               batch: int = 64, progress=None, description: str | None = None) -> ParityReport:
    """Every variant against PyTorch FP32 logits: ``reference`` (the golden set's) or computed from
    ``checkpoint``, which also adds ``n_random`` random inputs."""
    import time

    if reference is None:
        if checkpoint is None:
            raise InvalidInput("Parity needs reference logits or the source checkpoint.")
        reference = reference_logits(checkpoint, test_x)
    n_random = n_random if checkpoint is not None else 0
    rng = np.random.default_rng(0)
    rand_x = rng.standard_normal((n_random, *arts.spec.chw)).astype(np.float32)
    ref_rand = reference_logits(checkpoint, rand_x) if n_random else None
    report = ParityReport(n_real=len(test_x), n_random=n_random)
    if description:
        report.reference = description
    for v in variants:
        if progress:
            progress(v.label)
        t0 = time.perf_counter()
        with v.create(arts, max_batch=batch, buckets=(batch,)) as backend:  # a short last batch is padded
            real = compare(reference, run_batched(backend, test_x, batch), v.precision, labels)
            # Random inputs have no labels and near-tied logits: gate only the float paths' relative error.
            rand = compare(ref_rand, run_batched(backend, rand_x, batch), v.precision, gate_accuracy=False) \
                if n_random else None
        report.rows.append(ParityRow(v.label, v.backend, v.precision, real, rand, time.perf_counter() - t0))
    return report
