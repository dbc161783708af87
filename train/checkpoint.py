"""Versioned, safe checkpoints, typed: ``Checkpoint`` with its one reader and its one writer.

On disk a checkpoint is a plain dict of tensors and primitives, loaded with ``torch.load(weights_only=True)`` so that
opening one can never run code. ``Checkpoint.read`` validates it into typed fields (the model config, the metrics,
the epoch history, the compression record) and nothing else in the tree indexes it by string key;
``Checkpoint.write`` writes it atomically. It holds everything the export stage needs to rebuild and describe the
model.
"""

from __future__ import annotations

import datetime as _dt
import pickle
import platform
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from resnet_edge import __version__
from resnet_edge.atomic import atomic_path
from resnet_edge.compression import Compression
from resnet_edge.errors import CheckpointError
from resnet_edge.typed import Malformed, from_json, to_json
from train.config import TrainConfig
from train.model import ModelConfig, build_model, upgrade_state_dict

FORMAT = "resnet-edge-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "config", "state_dict", "epoch", "metrics")
_NAN = float("nan")


def library_versions() -> dict[str, str]:
    return {
        "resnet_edge": __version__,
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
    }


@dataclass(frozen=True)
class EpochResult:
    """One epoch of a run: its training loss and accuracy, and its validation ones (nan without a validation
    split)."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    img_per_s: float
    seconds: float


@dataclass(frozen=True)
class Metrics:
    """What a run measured at the epoch a checkpoint holds: the epoch's figures, the best epoch so far (chosen on
    validation), how the run trained, and, in best.pt, the test accuracy read once after training."""

    val_acc: float = _NAN
    val_loss: float = _NAN
    train_loss: float = _NAN
    train_acc: float = _NAN
    train_img_per_s: float = 0.0
    best_acc: float = 0.0
    best_epoch: int = 0
    train_seconds: float = 0.0
    world_size: int = 1
    amp: str = "none"
    device: str = "cpu"
    test_acc: float | None = None
    test_loss: float | None = None
    test_images: int | None = None


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint, typed. ``config`` rebuilds the network (``model()``), ``state_dict`` holds its weights under
    torchvision's names; the rest is the run's record: its metrics and history, its training settings (None for an
    imported model), its data and split, a compression record for a compressed model, and what resume needs (the
    optimizer's state and the RNG states)."""

    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    epoch: int = 0
    metrics: Metrics = field(default_factory=Metrics)
    train_config: TrainConfig | None = None
    data_sha256: str = ""
    split: dict[str, Any] | None = None
    history: tuple[EpochResult, ...] | None = ()  # None: an older resnet-edge's, which resume refuses
    compression: Compression | None = None
    imported_from: dict[str, str] | None = None
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] = field(default_factory=dict)
    rng_state: torch.Tensor | None = None
    cuda_rng_state: torch.Tensor | None = None
    versions: dict[str, str] = field(default_factory=library_versions)
    created: str = ""

    @classmethod
    def of(cls, model: nn.Module, config: ModelConfig, *, optimizer: torch.optim.Optimizer | None = None,
           **fields_: Any) -> Checkpoint:
        """A checkpoint of a live model (weights copied to the CPU) and, for resume, its optimiser."""
        return cls(config=config, state_dict={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                   optimizer=optimizer.state_dict() if optimizer is not None else None, **fields_)

    @property
    def test_accuracy(self) -> float | None:
        return self.metrics.test_acc

    def model(self, path: Path | str = "checkpoint") -> nn.Module:
        """The network this checkpoint describes, its weights loaded strictly, in eval mode."""
        return model_from_checkpoint(self, path)

    def write(self, path: Path) -> Path:
        """Write atomically (temporary file, fsync, rename): a crash leaves the previous file whole."""
        state = {
            "format": FORMAT, "version": VERSION, "config": self.config.to_dict(), "state_dict": self.state_dict,
            "optimizer": self.optimizer, "scheduler": self.scheduler, "epoch": self.epoch,
            "metrics": asdict(self.metrics), "train_config": self.train_config.to_dict() if self.train_config else {},
            "data_sha256": self.data_sha256, "split": self.split, "history": [asdict(e) for e in self.history or ()],
            "rng_state": self.rng_state if self.rng_state is not None else torch.get_rng_state(),
            "cuda_rng_state": self.cuda_rng_state, "versions": self.versions,
            "created": self.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if self.compression is not None:
            state["compression"] = to_json(self.compression)
        if self.imported_from is not None:
            state["imported_from"] = dict(self.imported_from)
        with atomic_path(Path(path)) as tmp:
            torch.save(state, tmp)
        return Path(path)

    @classmethod
    def read(cls, path: Path | str) -> Checkpoint:
        """Load and validate; every failure is a one-sentence CheckpointError."""
        return _typed(_load_raw(Path(path)), Path(path))


def save_checkpoint(path: Path, *, model: nn.Module, config: ModelConfig, epoch: int,
                    metrics: Metrics | dict[str, float] | None = None, **fields_: Any) -> Path:
    """``Checkpoint.of(model, config, ...).write(path)``: the writer for callers holding a live model."""
    m = metrics if isinstance(metrics, Metrics) else _metrics(metrics or {})
    return Checkpoint.of(model, config, epoch=epoch, metrics=m, **fields_).write(path)


def load_checkpoint(path: Path | str) -> Checkpoint:
    """``Checkpoint.read(path)``."""
    return Checkpoint.read(path)


def _load_raw(path: Path) -> dict[str, Any]:
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
    if type(ckpt["version"]) is not int:
        raise CheckpointError(f"{path} has a checkpoint version that is not an integer; it was not written by "
                              "resnet-edge.")
    if ckpt["version"] > VERSION:
        raise CheckpointError(
            f"{path} is checkpoint version {ckpt['version']}; this resnet-edge reads up to {VERSION}."
        )
    return ckpt


def _metrics(raw: dict[str, Any]) -> Metrics:
    known = {f.name for f in fields(Metrics)}
    return Metrics(**{k: v for k, v in raw.items() if k in known})


def _compression(raw: dict[str, Any], path: Path) -> Compression:
    raw = dict(raw)
    raw.update(raw.pop("distillation", None) or {})  # first written with temperature and alpha nested
    try:
        return from_json(Compression, raw, "compression")
    except Malformed as exc:
        raise CheckpointError(f"{path} records a compression whose {exc}; re-run compress.") from None


def _typed(raw: dict[str, Any], path: Path) -> Checkpoint:
    try:
        config = ModelConfig.from_dict(raw["config"])
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{path} has an invalid model config ({_first_line(exc)}).") from None
    if not isinstance(raw["state_dict"], dict) or not isinstance(raw["metrics"], dict) \
            or not isinstance(raw["epoch"], int):
        raise CheckpointError(f"{path} has a malformed state_dict, metrics or epoch entry.")
    try:
        history = tuple(EpochResult(**e) for e in raw.get("history") or ())
    except TypeError:  # an older resnet-edge's history (it chose its epoch on the test set): not resumable
        history = None
    record = raw.get("compression")
    if record in (None, {}):
        compression = None
    elif isinstance(record, dict):
        compression = _compression(record, path)
    else:
        raise CheckpointError(f"{path} has a malformed compression record; re-run compress.")
    return Checkpoint(
        config=config, state_dict=raw["state_dict"], epoch=raw["epoch"], metrics=_metrics(raw["metrics"]),
        train_config=TrainConfig.from_dict(raw["train_config"]) if raw.get("train_config") else None,
        data_sha256=raw.get("data_sha256") or "", split=raw.get("split"), history=history,
        compression=compression,
        imported_from=raw.get("imported_from"), optimizer=raw.get("optimizer"), scheduler=raw.get("scheduler") or {},
        rng_state=raw.get("rng_state"), cuda_rng_state=raw.get("cuda_rng_state"),
        versions=raw.get("versions") or {}, created=raw.get("created") or "")


def model_from_checkpoint(ckpt: Checkpoint, path: Path | str = "checkpoint") -> nn.Module:
    """Build the network ``ckpt.config`` describes and load its weights strictly: a config whose widths or depth
    disagree with the weights is refused in one sentence."""
    config = ckpt.config
    try:
        model = build_model(config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has an invalid model config ({_first_line(exc)}).") from None
    expected = model.state_dict()
    got = upgrade_state_dict(ckpt.state_dict)  # checkpoints from before torchvision's names load too
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
    return Checkpoint.read(path).model(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__
