"""Training configuration: a frozen dataclass and the named presets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from enum import Enum
from typing import Any

from resnet_edge.errors import InvalidInput


class Schedule(str, Enum):
    ONECYCLE = "onecycle"
    COSINE = "cosine"


class Amp(str, Enum):
    AUTO = "auto"  # bf16/fp16 on CUDA; bf16 on CPU only where a probe measures it faster
    NONE = "none"
    BF16 = "bf16"
    FP16 = "fp16"


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "quick"
    epochs: int = 4
    batch_size: int = 256
    lr: float = 0.2
    schedule: str = Schedule.ONECYCLE.value
    warmup_frac: float = 0.25
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # 0: all cores (shared between DDP ranks)
    channels_last: bool = True
    amp: str = Amp.AUTO.value
    depth: int = 18
    stem: str = "imagenet"
    image_size: int = 28
    crop_padding: int = 0  # a 4-epoch run underfits: random crops cost more accuracy than they add
    hflip: bool = True
    erase_prob: float = 0.0
    limit_train: int | None = None  # use only the first N training images (tests, smoke runs)
    limit_test: int | None = None  # evaluate (and validate) on the first N images only
    eval_batch_size: int = 1000
    val_size: int = 5000  # validation images carved from the training images (a tenth at most); 0: keep the last epoch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def validate(self) -> TrainConfig:
        checks = [
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.lr > 0, "--lr must be positive"),
            (0 <= self.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
            (self.weight_decay >= 0, "--weight-decay must be non-negative"),
            (self.image_size >= 16, "--image-size must be at least 16"),
            (self.threads >= 0, "--threads must be non-negative"),
            (self.val_size >= 0, "--val-size must be non-negative"),
            (0 < self.warmup_frac < 1, "warmup_frac must be in (0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidInput(message + ".")
        for value, enum, name in ((self.schedule, Schedule, "--schedule"), (self.amp, Amp, "--amp")):
            if value not in {e.value for e in enum}:
                raise InvalidInput(f"{name} must be one of {', '.join(e.value for e in enum)}, not '{value}'.")
        return self


PRESETS: dict[str, TrainConfig] = {
    # >= 90% test accuracy: 202 s on a 2-core AVX-512 CPU, 351 s on a 2-core AVX2 one (see README).
    "quick": TrainConfig(),
    # The classic resized recipe: 96 px input (stages at 24/12/6/3), longer schedule,
    # random erasing. Meant for a GPU; it is hours on a 2-core CPU.
    "full": TrainConfig(
        preset="full", epochs=40, batch_size=256, lr=0.2, image_size=96, crop_padding=2,
        erase_prob=0.5, weight_decay=5e-4, label_smoothing=0.1,
    ),
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """The named preset with the given (non-None) overrides applied."""
    if name not in PRESETS:
        raise InvalidInput(f"Unknown preset '{name}'; choose one of {', '.join(PRESETS)}.")
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(PRESETS[name], **given).validate()


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate at ``step`` of ``total``: one-cycle (warm-up, cosine down) or cosine."""
    t = step / max(total - 1, 1)
    warm = cfg.warmup_frac if cfg.schedule == Schedule.ONECYCLE.value else min(cfg.warmup_frac, 0.02)
    if t < warm:
        start = cfg.lr / 25
        return start + (cfg.lr - start) * t / warm
    progress = (t - warm) / (1 - warm)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress)) + 1e-6
