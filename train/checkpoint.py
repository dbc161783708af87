"""Versioned, safe checkpoints.

A checkpoint is a plain dict of tensors and primitives, loaded with
``torch.load(weights_only=True)`` so that opening one can never run code. It holds
everything the export stage needs to rebuild and describe the model.
"""

from __future__ import annotations

import datetime as _dt
import pickle
import platform
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from resnet_edge import __version__
from resnet_edge.atomic import atomic_path
from resnet_edge.errors import CheckpointError
from train.model import ModelConfig, build_model, upgrade_state_dict

FORMAT = "resnet-edge-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "config", "state_dict", "epoch", "metrics")


def library_versions() -> dict[str, str]:
    return {
        "resnet_edge": __version__,
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
    }


def save_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    config: ModelConfig,
    epoch: int,
    metrics: dict[str, float],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    data_sha256: str = "",
    rng_state: torch.Tensor | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file, fsync, rename)."""
    state = {
        "format": FORMAT,
        "version": VERSION,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler or {},
        "epoch": epoch,
        "metrics": metrics,
        "train_config": train_config or {},
        "data_sha256": data_sha256,
        "rng_state": rng_state if rng_state is not None else torch.get_rng_state(),
        "versions": library_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    with atomic_path(Path(path)) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load and validate a checkpoint; every failure is a one-sentence CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol chatter; the error below says what matters
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"{path} holds Python objects beyond tensors and plain data; it was refused "
                "because loading it could run code."
            ) from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({_first_line(exc)}).") from None
    except Exception as exc:  # an untrusted file can break the unpickler in many ways (KeyError, EOFError, ...)
        raise CheckpointError(
            f"{path} is truncated or not a PyTorch checkpoint ({_first_line(exc)})."
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a PyTorch file but not a resnet-edge checkpoint.")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks the entries {', '.join(missing)}.")
    record = ckpt.get("compression")
    if record is not None and not (isinstance(record, dict) and isinstance(record.get("teacher_sha256"), str)
                                   and len(record["teacher_sha256"]) == 64
                                   and all(c in "0123456789abcdef" for c in record["teacher_sha256"])):
        raise CheckpointError(f"{path} records a compression whose teacher sha256 is malformed; re-run compress.")
    if ckpt["version"] > VERSION:
        raise CheckpointError(
            f"{path} is checkpoint version {ckpt['version']}; this resnet-edge reads up to {VERSION}."
        )
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], path: Path | str = "checkpoint") -> nn.Module:
    """Build the network described by ``ckpt['config']`` and load its weights strictly."""
    try:
        config = ModelConfig.from_dict(ckpt["config"])
        model = build_model(config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has an invalid model config ({_first_line(exc)}).") from None
    expected = model.state_dict()
    got = upgrade_state_dict(ckpt["state_dict"])  # checkpoints from before torchvision's names load too
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [k for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        detail = (missing or unexpected or shapes)[0]
        raise CheckpointError(
            f"{path} holds weights of another architecture than its config "
            f"(ResNet-{config.depth}, {config.stem} stem): {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(shapes)} mis-shaped tensors, e.g. '{detail}'."
        )
    model.load_state_dict(got)
    return model.eval()


def load_model(path: Path | str) -> nn.Module:
    """Rebuild the model from a checkpoint alone, in eval mode."""
    return model_from_checkpoint(load_checkpoint(path), path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__
