"""Starting a run from saved weights: ``--resume`` (this run's own last.pt, exactly) and ``--init`` (another
checkpoint's weights)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from resnet_edge.errors import CheckpointError, InvalidInput
from train.amp import AMP_DTYPES
from train.checkpoint import Checkpoint
from train.config import TrainConfig
from train.model import ModelConfig


@dataclass
class Resumed:
    start_epoch: int
    amp_dtype: torch.dtype | None
    rng_state: torch.Tensor | None
    cuda_rng_state: torch.Tensor | None


def restore(out_dir: Path, model, optimizer, cfg: TrainConfig, result) -> Resumed:
    """Continue the saved run exactly: same settings, same schedule, same precision, same RNG state."""
    path = out_dir / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"--resume needs {path}, which does not exist.")
    ckpt = Checkpoint.read(path)
    saved = ckpt.train_config or TrainConfig()
    if saved.epochs != cfg.epochs:
        raise InvalidInput(f"--resume: {path} follows a {saved.epochs}-epoch learning-rate schedule; resume with "
                           f"--epochs {saved.epochs} (another length would jump the learning rate mid-run).")
    if replace(saved, device=cfg.device, threads=cfg.threads) != cfg:
        changed = sorted(k for k, v in cfg.to_dict().items() if saved.to_dict().get(k) != v
                         and k not in ("device", "threads"))
        raise InvalidInput(f"--resume: {path} was trained with other settings ({', '.join(changed)}); resume with "
                           "the same options.")
    if ckpt.epoch >= cfg.epochs:
        raise InvalidInput(f"--resume: {path} already finished epoch {ckpt.epoch} of {cfg.epochs}, the end of its "
                           "schedule; start a new run in another --out directory.")
    model.load_state_dict(ckpt.model(path).state_dict())
    if ckpt.optimizer:
        optimizer.load_state_dict(ckpt.optimizer)
    m = ckpt.metrics
    result.best_acc, result.best_epoch, result.train_seconds = m.best_acc, m.best_epoch, m.train_seconds
    if ckpt.history is None:
        raise CheckpointError(f"--resume: {path} was written by an older resnet-edge, which chose its epoch on the "
                              "test set; start a new run in another --out directory.")
    result.history = list(ckpt.history)
    if m.amp not in AMP_DTYPES:
        raise CheckpointError(f"{path} records an unknown autocast precision '{m.amp}'.")
    return Resumed(ckpt.epoch + 1, AMP_DTYPES[m.amp], ckpt.rng_state, ckpt.cuda_rng_state)


def initialise(model: nn.Module, mcfg: ModelConfig, init: Path, console: Console | None) -> ModelConfig:
    """Start from ``init``'s weights (an imported or trained checkpoint of the same architecture). A different
    class count keeps the fresh head, and says so; a different input channel count or depth is refused."""
    from train.checkpoint import load_model

    source = load_model(init)
    src = source.config
    if (src.depth, src.in_channels, src.stem) != (mcfg.depth, mcfg.in_channels, mcfg.stem):
        raise InvalidInput(f"--init {init} is a ResNet-{src.depth} ({src.stem} stem) for {src.in_channels}-channel "
                           f"images, but this run trains a ResNet-{mcfg.depth} ({mcfg.stem} stem) on "
                           f"{mcfg.in_channels}-channel images; pass --arch/--stem to match, or convert the data.")
    state = source.state_dict()
    if src.num_classes != mcfg.num_classes:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        if console:
            console.print(f"--init {init}: its {src.num_classes}-class head is replaced by a new {mcfg.num_classes}-"
                          "class head (fc), initialised afresh; every other layer starts from the checkpoint")
    elif console:
        console.print(f"--init {init}: every layer, the head included, starts from the checkpoint")
    model.load_state_dict(state, strict=False)
    return mcfg
