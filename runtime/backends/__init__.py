"""Backend registry, keyed by name. Backends load lazily, so ``import runtime`` stays light."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from resnet_edge.errors import InvalidInput, MissingDependency
from runtime.backends.base import Backend
from runtime.spec import ModelSpec

REGISTRY: dict[str, tuple[str, str, str]] = {
    # name: (module, class, the package it needs)
    "torch": ("runtime.backends.torch_backend", "TorchBackend", "torch"),
    "onnxruntime": ("runtime.backends.onnxruntime_backend", "OnnxRuntimeBackend", "onnxruntime"),
    "openvino": ("runtime.backends.openvino_backend", "OpenVinoBackend", "openvino"),
    "tensorrt": ("runtime.backends.tensorrt_backend", "TensorRTBackend", "tensorrt"),
    "aoti": ("runtime.backends.aoti_backend", "AotiBackend", "torch"),
}
EXTRAS = {"openvino": "pip install 'resnet-edge[openvino]'", "tensorrt": "pip install 'resnet-edge[gpu]'",
          "torch": "pip install 'resnet-edge[train]'", "aoti": "pip install 'resnet-edge[train]'"}


def unavailable_reason(name: str) -> str | None:
    """None if the backend can run here, else one sentence saying what to install."""
    if name not in REGISTRY:
        raise InvalidInput(f"Unknown backend '{name}'; choose from {', '.join(REGISTRY)} or auto.")
    package = REGISTRY[name][2]
    if importlib.util.find_spec(package) is None:
        return f"The {name} backend needs the '{package}' package ({EXTRAS.get(name, 'pip install ' + package)})."
    if name == "tensorrt":
        import torch

        if not torch.cuda.is_available():
            return "The tensorrt backend needs a CUDA GPU, and PyTorch sees none here."
    return None


def available() -> list[str]:
    return [name for name in REGISTRY if unavailable_reason(name) is None]


def create(name: str, spec: ModelSpec, source: Path, **kwargs: Any) -> Backend:
    reason = unavailable_reason(name)
    if reason:
        raise MissingDependency(reason)
    module, cls, _ = REGISTRY[name]
    return getattr(importlib.import_module(module), cls)(spec, source, **kwargs)


__all__ = ["Backend", "REGISTRY", "available", "create", "unavailable_reason"]
