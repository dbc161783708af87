"""AOTInductor packages (``.pt2`` from ``torch._inductor.aoti_compile_and_package``), loaded with
``aoti_load_package(..., run_single_threaded=True)``. AOTI does not use CUDA graphs itself, so on CUDA this backend
captures one graph per batch bucket at load (static input and output, one shared memory pool, pinned host
buffers) and replays it, exactly as the torch backend does; on the CPU it calls the package directly.

Each package has a JSON sidecar (torch version, device, compute capability, precision, batch range); a package
built by another torch or for another GPU is refused in one sentence before it is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_edge.errors import ArtifactMismatch, InvalidInput
from runtime.backends.base import Backend
from runtime.backends.torch_backend import DTYPES, TorchBackend


def sidecar_path(package: Path) -> Path:
    return package.with_suffix(package.suffix + ".json")


def device_identity(device: str) -> dict[str, str]:
    """What a package is bound to: the torch version, and the GPU (name, compute capability) or the CPU."""
    import torch

    here = {"torch_version": str(torch.__version__), "device": "cpu", "gpu": "", "compute_capability": ""}
    if device.startswith("cuda"):
        idx = torch.device(device).index or 0
        major, minor = torch.cuda.get_device_capability(idx)
        here.update(device="cuda", gpu=torch.cuda.get_device_name(idx), compute_capability=f"{major}.{minor}")
    return here


@dataclass(frozen=True)
class AotiSidecar:
    """A package's JSON sidecar, read and checked once: what it was built with and for."""

    precision: str
    max_batch: int
    device: str  # cpu | cuda
    torch_version: str
    gpu: str
    compute_capability: str

    @classmethod
    def read(cls, package: Path) -> AotiSidecar:
        side = sidecar_path(package)
        try:
            meta = json.loads(side.read_text())
            found = cls(str(meta["precision"]), int(meta["max_batch"]), str(meta.get("device", "cpu")),
                        str(meta.get("torch_version", "")), str(meta.get("gpu", "") or ""),
                        str(meta.get("compute_capability", "") or ""))
        except (OSError, ValueError, KeyError, TypeError):
            raise ArtifactMismatch(f"{package.name} has no readable sidecar {side.name}; rebuild it with "
                                   "'resnet-edge export --aoti'.") from None
        if found.device not in ("cpu", "cuda"):
            raise ArtifactMismatch(f"{side.name} names the device {found.device[:40]!r}; rebuild it with "
                                   "'resnet-edge export --aoti'.")
        return found


def check_compatible(package: Path) -> AotiSidecar:
    """The sidecar, once it says the package was built here: this torch, and this GPU (or the CPU)."""
    import torch

    meta = AotiSidecar.read(package)
    if meta.device == "cuda" and not torch.cuda.is_available():
        raise ArtifactMismatch(f"{package.name} was built for the GPU {meta.gpu}, and PyTorch sees no CUDA GPU here.")
    here = device_identity(meta.device)
    for key, label in (("torch_version", "torch"), ("gpu", "GPU"), ("compute_capability", "compute capability")):
        if getattr(meta, key) != here[key]:
            raise ArtifactMismatch(f"{package.name} was built with {label} {getattr(meta, key) or 'none'} but this "
                                   f"machine has {here[key] or 'none'}; rebuild it here with 'resnet-edge export "
                                   "--aoti'.")
    return meta


class AotiBackend(TorchBackend):
    """``source`` is a ``.pt2`` package. Options: ``cuda_graphs`` (default True on CUDA), ``threads``."""

    name = "aoti"

    @classmethod
    def offers(cls, art, device, threads, gpu_index=0, skipped=None) -> list:
        if not (art.target == "cpu" or device.startswith("cuda") or device == "auto"):
            return []  # a CUDA package on a CPU-only run
        return Backend.offers.__func__(cls, art, device, threads, gpu_index, skipped)

    def _load(self) -> None:
        import torch

        meta = check_compatible(self.source)
        if meta.precision != self.precision:
            raise InvalidInput(f"{self.source.name} holds a {meta.precision} model, not {self.precision}.")
        if self.max_batch > meta.max_batch:
            raise InvalidInput(f"A batch limit of {self.max_batch} exceeds the {meta.max_batch} that "
                               f"{self.source.name} was compiled for; lower --max-batch-size or re-export.")
        self._device = torch.device(meta.device)
        self._threads = int(self.options.get("threads") or 0)
        self._dtype = getattr(torch, DTYPES[self.precision])
        self._format = torch.contiguous_format  # the layout the package was exported with
        runner = torch._inductor.aoti_load_package(str(self.source), run_single_threaded=True)

        def model(x):
            out = runner(x)
            return out[0] if isinstance(out, (list, tuple)) else out

        self.model = model
        self._graphs: dict[int, tuple] = {}
        self.static_shapes = self._device.type == "cuda" and bool(self.options.get("cuda_graphs", True))
        if self.static_shapes:
            self._capture_all()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        with self._scope():
            if self._graphs:
                return self._graph_infer(batch)
            return self.model(self._to_device(batch)).float().cpu().numpy()

    def describe(self) -> str:
        return f"aoti {self.precision} on {self._device.type}" + (" with CUDA graphs" if self.static_shapes else "")
