"""Which (backend, model file, precision, options) combinations to run, for parity and bench alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import backends
from runtime.backends.base import Backend
from runtime.spec import Artifact, Artifacts
from train.errors import InvalidInput


@dataclass(frozen=True)
class Variant:
    backend: str
    source: Path
    precision: str
    label: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    artifact: Artifact | None = None
    peer: bool = False  # a default-settings baseline of what users would otherwise run

    def create(self, arts: Artifacts, max_batch: int = 64) -> Backend:
        return backends.create(self.backend, arts.spec, self.source, precision=self.precision,
                               max_batch=max_batch, **self.options)


def _cpu_has_bf16() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def parse_backends(text: str) -> list[str]:
    """'all', or a comma-separated list; unknown names are an error, unavailable ones are reported."""
    if text in ("all", "auto"):
        return list(backends.REGISTRY)
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        backends.unavailable_reason(n)  # raises on an unknown name
    return names


def plan(arts: Artifacts, names: list[str], *, checkpoint: Path | None = None, device: str = "cpu",
         peers: bool = False, precisions: set[str] | None = None, threads: int = 0) -> tuple[list[Variant], list[str]]:
    """Variants to run, and one line for each backend that cannot run here."""
    ckpt = checkpoint or arts.checkpoint
    variants: list[Variant] = []
    skipped = []
    for name in names:
        reason = backends.unavailable_reason(name)
        if reason:
            skipped.append(reason)
            continue
        if name == "torch":
            if not ckpt.is_file():
                skipped.append(f"The torch backend needs the source checkpoint {ckpt}; pass --checkpoint.")
                continue
            dev = device if device != "auto" else "cpu"
            torch_precisions = ["fp32"] + (["fp16"] if dev.startswith("cuda") else ["bf16"] if _cpu_has_bf16() else [])
            for p in torch_precisions:
                variants.append(Variant("torch", ckpt, p, f"torch {p} folded", {"device": dev, "threads": threads}))
            if dev.startswith("cuda"):
                variants.append(Variant("torch", ckpt, "fp16", "torch fp16 folded+graphs",
                                        {"device": dev, "cuda_graphs": True}))
        for art in arts.items:
            tag = art.precision + ("-cpu" if art.target == "cpu" else "")
            if name == "onnxruntime" and art.format == "onnx":
                providers = None if device.startswith("cuda") else ("CPUExecutionProvider",)
                variants.append(Variant("onnxruntime", art.path, art.precision, f"onnxruntime {tag}",
                                        {"providers": providers, "threads": threads}, art))
            elif name == "openvino" and art.format == "onnx":
                variants.append(Variant("openvino", art.path, art.precision, f"openvino {tag}",
                                        {"hint": "LATENCY", "threads": threads}, art))
                if art.precision == "fp32" and _cpu_has_bf16():  # verified against the bf16 tolerance
                    variants.append(Variant("openvino", art.path, "bf16", "openvino bf16",
                                            {"hint": "LATENCY", "threads": threads, "inference_precision": "bf16"},
                                            art))
            elif name == "tensorrt" and art.format == "tensorrt":
                variants.append(Variant("tensorrt", art.path, art.precision, f"tensorrt {tag}", {}, art))
    if precisions:
        variants = [v for v in variants if v.precision in precisions]
    if peers:
        variants += peer_variants(arts, ckpt)
    if not variants:
        raise InvalidInput("No backend can run here: " + " ".join(skipped))
    return variants, skipped


def peer_variants(arts: Artifacts, ckpt: Path) -> list[Variant]:
    """Default settings of what users would otherwise run, on the FP32 model."""
    fp32 = arts.find("onnx", "fp32")
    peers = []
    if ckpt.is_file():
        peers.append(Variant("torch", ckpt, "fp32", "peer: PyTorch eager (unfolded)",
                             {"folded": False, "channels_last": False}, peer=True))
    if fp32 is not None:
        peers.append(Variant("onnxruntime", fp32.path, "fp32", "peer: ONNX Runtime defaults", {"defaults": True},
                             fp32, peer=True))
        if backends.unavailable_reason("openvino") is None:
            peers.append(Variant("openvino", fp32.path, "fp32", "peer: OpenVINO defaults", {"defaults": True},
                                 fp32, peer=True))
    return peers
