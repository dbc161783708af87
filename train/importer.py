"""`resnet-edge import`: a torchvision ResNet ``state_dict`` -> a project checkpoint every later stage takes.

torchvision's module names are this project's (``train.model``), so the weights load with no renaming. The file
may hold the plain ``state_dict``, or one wrapped as ``{"state_dict": ...}`` or ``{"model": ...}``, with DDP's
``module.`` prefix or without. It is read with ``weights_only=True``: a file that holds code is refused, never
run. Every key and shape is checked before anything is written; the first problem is named in one sentence.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from resnet_edge.errors import CheckpointError, InvalidInput
from train.model import STAGES, ModelConfig, build_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ARCHS = {f"resnet{d}": d for d in STAGES}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a torchvision-style weights file, unwrapped and without a ``module.`` prefix."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"Weights file {path} does not exist.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(f"{path} holds Python objects beyond tensors and plain data; it was refused "
                                  "unread (weights_only). Save the model's state_dict() instead.") from None
        raise CheckpointError(f"{path} is not a PyTorch weights file ({type(exc).__name__}).") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch weights file ({type(exc).__name__}).") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state_dict (a mapping of names to tensors), plain or under "
                              "'state_dict' or 'model'.")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def check_state_dict(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor], what: str, path: Path) -> None:
    """One sentence about the first key that is missing, unexpected or of another shape."""
    for key, tensor in expected.items():
        if key.endswith("num_batches_tracked"):
            continue  # older torchvision weights lack it; it is a counter, not a weight
        if key not in got:
            raise CheckpointError(f"{path} lacks '{key}', which {what} needs with shape {list(tensor.shape)}; "
                                  "is --arch right?")
        if tuple(got[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"'{key}' has shape {list(got[key].shape)} in {path} but {list(tensor.shape)} in "
                                  f"{what}; check --arch, --num-classes and --channels.")
    for key, tensor in got.items():
        if key not in expected:
            raise CheckpointError(f"{path} holds '{key}' (shape {list(tensor.shape)}), which {what} has no place for; "
                                  "is --arch right?")


def class_names(num_classes: int, classes: Path | None = None, data: Path | None = None) -> tuple[str, ...]:
    """From a file (one name a line), from a dataset folder's class subfolders (sorted, as torchvision's
    ImageFolder does; ``train/`` if it has one), or ``class_0``..``class_{N-1}``."""
    if classes is not None and data is not None:
        raise InvalidInput("Give --classes FILE or --data DIR, not both.")
    if classes is not None:
        try:
            names = tuple(line.strip() for line in Path(classes).read_text().splitlines() if line.strip())
        except OSError as exc:
            raise InvalidInput(f"Cannot read the class file {classes} ({exc.strerror}).") from None
        source = str(classes)
    elif data is not None:
        root = Path(data) / "train" if (Path(data) / "train").is_dir() else Path(data)
        if not root.is_dir():
            raise InvalidInput(f"Dataset folder {data} does not exist.")
        names = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
        source = f"the class folders of {root}"
    else:
        return tuple(f"class_{i}" for i in range(num_classes))
    if len(names) != num_classes:
        raise InvalidInput(f"{source} names {len(names)} classes, but --num-classes is {num_classes}.")
    if len(set(names)) != len(names):
        raise InvalidInput(f"{source} names a class twice.")
    return names


def import_weights(weights: Path, *, arch: str, num_classes: int, image_size: int, out: Path, channels: int = 3,
                   mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                   classes: Path | None = None, data: Path | None = None, resize: int | None = None) -> dict[str, Any]:
    """Check the weights against ``arch`` and write the project checkpoint ``out`` (atomically; nothing on error)."""
    from train.checkpoint import Checkpoint

    if arch not in ARCHS:
        raise InvalidInput(f"Unknown --arch '{arch}'; choose one of {', '.join(ARCHS)}.")
    if num_classes < 1 or channels < 1 or image_size < 16:
        raise InvalidInput("--num-classes and --channels must be positive and --image-size at least 16.")
    if mean is None or std is None:
        if channels != 3:
            raise InvalidInput(f"Give --mean and --std for {channels}-channel inputs (ImageNet's are for 3).")
        mean, std = mean or IMAGENET_MEAN, std or IMAGENET_STD
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise InvalidInput(f"--mean and --std need {channels} values each, and std must be positive.")
    names = class_names(num_classes, classes, data)
    resize = resize if resize is not None else round(image_size * 256 / 224)  # torchvision's eval transform
    if resize < image_size:
        raise InvalidInput(f"--resize {resize} is smaller than --image-size {image_size}; the centre crop would not fit.")
    config = ModelConfig(depth=ARCHS[arch], stem="imagenet", in_channels=channels, num_classes=num_classes,
                         image_size=image_size, class_names=names, mean=tuple(mean), std=tuple(std),
                         source_size=image_size, source_resize=resize)
    model = build_model(config)
    got = read_state_dict(weights)
    what = f"a {arch} with {channels} input channels and {num_classes} classes"
    check_state_dict(model.state_dict(), got, what, Path(weights))
    model.load_state_dict(got, strict=False)  # every weight was checked above; only counters may be absent
    Checkpoint.of(model.eval(), config, imported_from={"weights": str(weights), "arch": arch}).write(Path(out))
    return {"arch": arch, "config": config, "tensors": len(got)}
