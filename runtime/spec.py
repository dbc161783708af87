"""What the runtime knows about a model: read from ``manifest.json`` and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from resnet_edge.errors import ArtifactMismatch, InvalidInput
from runtime.manifest import read_manifest


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input_name: str
    output_name: str
    channels: int
    image_size: int
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "bilinear"
    source_size: int = 28
    source_resize: int | None = None  # the shorter side before the centre crop; None: stretch to the source size

    @property
    def chw(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    @property
    def reads_fashion_mnist(self) -> bool:
        """Whether the model is fed Fashion-MNIST's own images (1 channel, 28x28 sources, 10 classes); a model
        trained on an image folder is checked on its golden set instead."""
        return (self.channels, self.source_size, self.source_resize, self.num_classes) == (1, 28, None, 10)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> ModelSpec:
        pre, io = manifest["preprocessing"], manifest["io"]
        return cls(
            name=manifest["model"]["name"], input_name=io["input"]["name"], output_name=io["output"]["name"],
            channels=int(pre["channels"]), image_size=int(pre["image_size"]),
            num_classes=int(manifest["model"]["num_classes"]), class_names=tuple(manifest["model"]["class_names"]),
            mean=tuple(pre["mean"]), std=tuple(pre["std"]), resize=pre.get("resize", "bilinear"),
            source_size=int(pre.get("source_size", 28)),
            source_resize=int(pre["source_resize"]) if pre.get("source_resize") is not None else None,
        )


@dataclass(frozen=True)
class Artifact:
    path: Path
    format: str  # onnx | tensorrt
    precision: str  # fp32 | fp16 | int8
    target: str  # any | cpu
    test_accuracy: float
    entry: dict[str, Any]

    @property
    def label(self) -> str:
        extra = f"-{self.target}" if self.target != "any" else ""
        return f"{self.format}:{self.precision}{extra}"


@dataclass(frozen=True)
class Artifacts:
    """A verified artifact directory: every hash in the manifest was checked on load."""

    root: Path
    manifest: dict[str, Any]
    spec: ModelSpec
    items: tuple[Artifact, ...]

    @property
    def checkpoint(self) -> Path:
        """The source checkpoint: as recorded, else beside the artifact directory (it is not copied)."""
        recorded = Path(self.manifest["source"]["checkpoint"])
        for candidate in (recorded, self.root.parent / recorded, self.root / recorded.name):
            if candidate.is_file():
                return candidate
        return recorded

    def verified_checkpoint(self, path: Path | None = None) -> Path:
        """The checkpoint, checked against the sha256 the manifest recorded for it."""
        from resnet_edge.atomic import sha256_file

        path = Path(path) if path else self.checkpoint
        if not path.is_file():
            raise InvalidInput(f"The source checkpoint {path} does not exist; pass --checkpoint PATH.")
        if sha256_file(path) != self.manifest["source"]["sha256"]:
            raise ArtifactMismatch(f"{path} is not the checkpoint these artifacts were exported from "
                                   "(its sha256 differs from the manifest's).")
        return path

    def golden(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The golden set export wrote: uint8 test images, their labels and the PyTorch FP32 logits
        (its sha256 was checked with the rest of the manifest)."""
        entry = self.manifest.get("golden")
        if not entry:
            raise ArtifactMismatch(f"{self.root} has no golden set (it was exported by an older resnet-edge); re-export "
                                   "it with 'resnet-edge export' to verify it without PyTorch.")
        try:
            with np.load(self.root / entry["path"], allow_pickle=False) as z:
                return z["images"], z["labels"], z["logits"]
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactMismatch(f"{self.root / entry['path']} is not a readable golden set ({exc}); re-export.") from None

    @property
    def reference_accuracy(self) -> float:
        return float(self.manifest["source"]["test_accuracy"])

    def find(self, fmt: str, precision: str, target: str | None = None) -> Artifact | None:
        matches = [a for a in self.items if a.format == fmt and a.precision == precision
                   and (target is None or a.target == target)]
        return matches[0] if matches else None


def load_artifacts(root: Path | str = "artifacts") -> Artifacts:
    root = Path(root)
    if not root.is_dir():
        raise InvalidInput(f"Artifact directory {root} does not exist; run 'make export' first.")
    manifest = read_manifest(root, verify=True)
    items = tuple(
        Artifact(root / a["path"], a["format"], a["precision"], a.get("target", "any"), a["test_accuracy"], a)
        for a in manifest["artifacts"]
    )
    return Artifacts(root, manifest, ModelSpec.from_manifest(manifest), items)
