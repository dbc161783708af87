"""Knowledge distillation: the student ``resnet-edge compress`` trains in place of a fresh network, and its loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from resnet_edge.compression import Compression
from train.model import ModelConfig


@dataclass(frozen=True)
class Distillation:
    """A student to train instead of a fresh network (``resnet-edge compress``): its config and weights, the teacher
    whose logits it learns from, and what its checkpoints record about the compression."""

    config: ModelConfig
    model: nn.Module
    teacher: nn.Module
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the soft (teacher) term; 1 - alpha on the hard labels; 0: hard labels alone
    record: Compression | None = None

    def loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        """Hinton et al.'s distillation loss: KL to the teacher's softened outputs (times T^2) plus hard labels."""
        hard = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        if self.alpha == 0:
            return hard
        with torch.no_grad():
            soft_t = F.softmax(self.teacher(x).float() / self.temperature, dim=1)
        t2 = self.temperature ** 2
        soft = F.kl_div(F.log_softmax(logits / self.temperature, dim=1), soft_t, reduction="batchmean") * t2
        return self.alpha * soft + (1 - self.alpha) * hard
