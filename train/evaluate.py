"""Evaluation on the real test set: logits, accuracy, per-class accuracy, confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from train.data import Split, iterate_batches


@torch.inference_mode()
def predict(
    model: nn.Module,
    split: Split,
    *,
    mean: float,
    std: float,
    image_size: int,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    batch_size: int | None = None,
) -> torch.Tensor:
    """float32 logits [N, classes] for every image of ``split``, in order (``batch_size`` None: by input size)."""
    from resnet_edge.images import eval_batch

    batch_size = min(batch_size or 1000, eval_batch(image_size))
    was_training = model.training
    model.eval()
    device = torch.device(device)
    out = []
    for x, _ in iterate_batches(split, batch_size, mean=mean, std=std, image_size=image_size, device=device):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out.append(model(x).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


@dataclass(frozen=True)
class EvalReport:
    accuracy: float
    loss: float
    per_class: np.ndarray  # accuracy per class, in [0, 1]
    confusion: np.ndarray  # [true, predicted] counts
    class_names: tuple[str, ...]

    @property
    def n(self) -> int:
        return int(self.confusion.sum())


def report(logits: torch.Tensor, labels: torch.Tensor, class_names: tuple[str, ...]) -> EvalReport:
    k = len(class_names)
    preds = logits.argmax(1)
    confusion = torch.bincount(labels * k + preds, minlength=k * k).reshape(k, k).numpy()
    support = confusion.sum(1)
    per_class = np.divide(np.diag(confusion), support, out=np.zeros(k), where=support > 0)
    return EvalReport(
        accuracy=float((preds == labels).float().mean()),
        loss=float(F.cross_entropy(logits, labels)),
        per_class=per_class,
        confusion=confusion,
        class_names=class_names,
    )


def plot_confusion(rep: EvalReport, out: Path, title: str = "") -> Path:
    """Write the confusion matrix as a PNG (row-normalised colours, raw counts as text)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from resnet_edge.atomic import atomic_path

    norm = rep.confusion / np.maximum(rep.confusion.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(8, 7), dpi=110)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    k = len(rep.class_names)
    ax.set_xticks(range(k), rep.class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), [f"{n} ({a:.1%})" for n, a in zip(rep.class_names, rep.per_class)])
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(rep.confusion[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (per-class accuracy)")
    ax.set_title(title or f"accuracy {rep.accuracy:.2%} on {rep.n} test images")
    fig.tight_layout()
    with atomic_path(Path(out)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(out)
