"""What the runtime knows about a model: read from ``manifest.json`` and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_edge.errors import ArtifactMismatch, InvalidInput
from runtime.contract import ArtifactRow, Manifest, read_manifest


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

    @property
    def background(self) -> tuple[int, ...]:
        """The uint8 colour transparent pixels become: Fashion-MNIST's black for a gray model (its images are light
        garments on 0), the training mean colour for an image-folder model (zero after normalisation)."""
        if self.channels == 1:
            return (0,)
        return tuple(int(round(255 * m)) for m in self.mean)

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> ModelSpec:
        pre, model = manifest.preprocessing, manifest.model
        return cls(
            name=model.name, input_name=manifest.io.input.name, output_name=manifest.io.output.name,
            channels=pre.channels, image_size=pre.image_size, num_classes=model.num_classes,
            class_names=model.class_names, mean=pre.mean, std=pre.std, resize=pre.resize,
            source_size=pre.source_size, source_resize=pre.source_resize,
        )


@dataclass(frozen=True)
class Artifact:
    """A manifest row with its file's place on this machine."""

    path: Path
    row: ArtifactRow

    @property
    def format(self) -> str:
        return self.row.format

    def hashes(self) -> dict[Path, str]:
        """Each file of the artifact (and its sidecar) with the sha256 its manifest gives: checked again right
        before a backend loads it, not only when the manifest was read."""
        files = {self.path: self.row.sha256}
        if self.row.sidecar and self.row.sidecar_sha256:
            files[self.path.parent / Path(self.row.sidecar).name] = self.row.sidecar_sha256
        return files

    @property
    def precision(self) -> str:
        return self.row.precision.value

    @property
    def target(self) -> str:
        return self.row.target

    @property
    def tag(self) -> str:
        return self.row.tag

    @property
    def test_accuracy(self) -> float:
        return self.row.test_accuracy

    @property
    def label(self) -> str:
        return f"{self.format}:{self.tag}"


@dataclass(frozen=True)
class Artifacts:
    """A verified artifact directory: every hash in the manifest was checked on load."""

    root: Path
    manifest: Manifest
    spec: ModelSpec
    items: tuple[Artifact, ...]

    def golden_run(self):
        """The golden set export wrote, a saved run (``runtime.outputs.SavedRun``): uint8 test images, their labels
        and the PyTorch FP32 logits (its sha256 was checked with the rest of the manifest)."""
        from runtime.outputs import SavedRun

        entry = self.manifest.golden
        if entry is None:
            raise ArtifactMismatch(f"{self.root} has no golden set (it was exported by an older resnet-edge); re-export "
                                   "it with 'resnet-edge export' to verify it without PyTorch.")
        try:
            return SavedRun.load(self.root / entry.path)
        except ArtifactMismatch as exc:
            raise ArtifactMismatch(f"{exc} Re-export the artifacts.") from None

    def golden(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The golden set as (images, labels, logits)."""
        run = self.golden_run()
        return run.images, run.labels, run.logits

    @property
    def reference_accuracy(self) -> float:
        return self.manifest.source.test_accuracy

    def find(self, fmt: str, precision: str, target: str | None = None) -> Artifact | None:
        matches = [a for a in self.items if a.format == fmt and a.precision == precision
                   and (target is None or a.target == target)]
        return matches[0] if matches else None


def load_artifacts(root: Path | str = "artifacts") -> Artifacts:
    root = Path(root)
    if not root.is_dir():
        raise InvalidInput(f"Artifact directory {root} does not exist; run 'make export' first.")
    manifest = read_manifest(root, verify=True)
    items = tuple(Artifact(root / row.path, row) for row in manifest.artifacts)
    return Artifacts(root, manifest, ModelSpec.from_manifest(manifest), items)
