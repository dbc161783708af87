"""A saved run: inputs, labels and the logits some model gave for them, as one ``.npz`` (numpy only).

Parity is run, then compare: run a reference (or an artifact) on one machine, save what it gave, and compare another
run with it anywhere, as Polygraphy's ``--save-outputs`` / ``--load-outputs`` do. The golden set export writes is
exactly such a run (uint8 images at the source size, labels, PyTorch FP32 logits), and ``resnet-edge parity
--save-outputs F`` / ``--reference F`` write and read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_edge.atomic import atomic_open
from resnet_edge.errors import ArtifactMismatch


@dataclass(frozen=True)
class SavedRun:
    images: np.ndarray  # uint8 [N, H, W] or [N, H, W, C] at the source size (what preprocessing starts from)
    labels: np.ndarray  # int64 [N]
    logits: np.ndarray  # float32 [N, classes]
    description: str = ""

    def __post_init__(self) -> None:
        if not len(self.images) == len(self.labels) == len(self.logits):
            raise ArtifactMismatch(f"A saved run has {len(self.images)} images, {len(self.labels)} labels and "
                                   f"{len(self.logits)} logit rows; they must be as many.")

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int | None) -> SavedRun:
        return self if n is None else SavedRun(self.images[:n], self.labels[:n], self.logits[:n], self.description)

    def with_logits(self, logits: np.ndarray, description: str = "") -> SavedRun:
        """The same inputs and labels with another model's logits: that model's run, to save and compare later."""
        return SavedRun(self.images, self.labels, np.asarray(logits, np.float32), description)

    def save(self, path: Path) -> Path:
        path = Path(path)
        with atomic_open(path) as fh:
            np.savez_compressed(fh, images=self.images, labels=self.labels, logits=self.logits,
                                description=np.array(self.description))
        return path

    @classmethod
    def load(cls, path: Path) -> SavedRun:
        """A run saved by ``save`` (or a golden set); one sentence if the file is not one."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                desc = str(z["description"]) if "description" in z.files else ""
                return cls(z["images"], z["labels"], z["logits"], desc)
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise ArtifactMismatch(f"{path} is not a readable saved run ({type(exc).__name__}: {exc}).") from None


def run_batched(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int | None = None) -> np.ndarray:
    """``fn`` over ``x`` [N, C, H, W] in batches: the one loop every reference and artifact run goes through. The
    default batch follows the input size (``eval_batch``: 1,000 at 28 px, 62 at 224 px), so that a large model's
    activations stay within a few GB."""
    from resnet_edge.images import eval_batch

    step = batch or eval_batch(x.shape[-1])
    out = [np.asarray(fn(x[i:i + step])) for i in range(0, len(x), step)]
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros((0, 0), np.float32)
