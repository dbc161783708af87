"""Mixed precision for training: which autocast dtype a run uses (``--amp``), probed on the CPU."""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from resnet_edge.errors import InvalidInput
from train.config import Amp, TrainConfig

AMP_DTYPES: dict[str, torch.dtype | None] = {"none": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def amp_name(dtype: torch.dtype | None) -> str:
    return str(dtype).replace("torch.", "") if dtype else "none"


def _step_time(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None) -> float:
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    return time.perf_counter() - t0


def _bf16_faster_on_cpu(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> bool:
    """Time fp32 and bf16 training steps in blocks (switching every step would defeat oneDNN's
    cached weight layouts); the minimum of each block resists load noise."""
    times: dict[torch.dtype | None, list[float]] = {None: [], torch.bfloat16: []}
    for _ in range(2):
        for dtype in (None, torch.bfloat16):
            times[dtype] += [_step_time(model, x, y, dtype) for _ in range(3)][1:]
    return min(times[torch.bfloat16]) < 0.93 * min(times[None])


def choose_amp(cfg: TrainConfig, device: torch.device, model: nn.Module, batch: int) -> torch.dtype | None:
    """Resolve ``--amp``. On CPU, ``auto`` uses bf16 only if a short probe measures it faster."""
    if cfg.amp == Amp.NONE.value:
        return None
    if cfg.amp == Amp.FP16.value:
        if device.type != "cuda":
            raise InvalidInput("--amp fp16 needs CUDA; use bf16 or none on CPU.")
        return torch.float16
    if cfg.amp == Amp.BF16.value:
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    probe = copy.deepcopy(model).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg_channels(model), cfg.image_size, cfg.image_size, generator=gen)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, model.fc.out_features, (x.shape[0],), generator=gen)  # the model's own class count
    return torch.bfloat16 if _bf16_faster_on_cpu(probe, x, y) else None


def cfg_channels(model: nn.Module) -> int:
    return model.conv1.in_channels  # type: ignore[union-attr]
