"""Which (backend, model file, precision, options) combinations to run, for parity and bench alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnet_edge.errors import InvalidInput
from runtime import backends
from runtime.backends.base import Backend
from runtime.formats import backends_for
from runtime.spec import Artifact, Artifacts


@dataclass(frozen=True)
class Variant:
    backend: str
    source: Path
    precision: str
    label: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    artifact: Artifact | None = None
    peer: bool = False  # a default-settings baseline of what users would otherwise run
    target: str = "any"  # any | cpu: the artifact variant made for one kind of device

    @property
    def tag(self) -> str:
        """The precision as users name it: fp32, fp16, bf16, int8, or int8-cpu for a CPU-only variant."""
        return self.precision + (f"-{self.target}" if self.target != "any" else "")

    def create(self, arts: Artifacts, max_batch: int = 64, buckets: tuple[int, ...] | None = None) -> Backend:
        return backends.create(self.backend, arts.spec, self.source, precision=self.precision,
                               max_batch=max_batch, buckets=buckets, **self.options)


COMPILE_PEER_PRECISIONS = ("fp16",)  # torch.compile peers on CUDA; each costs minutes of compiling per batch size


def _cpu_has_bf16() -> bool:
    """Native bf16 on this CPU: oneDNN's own answer where torch is installed, else the CPU's flags."""
    from runtime import reference

    if reference.torch_installed():
        from runtime.backends.torch_backend import onednn_bf16

        return onednn_bf16()
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def parse_backends(text: str) -> list[str]:
    """'all', or a comma-separated list; unknown names are an error, unavailable ones are reported."""
    if text in ("all", "auto"):
        return list(backends.REGISTRY)
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        backends.unavailable_reason(n)  # raises on an unknown name
    return names


def plan(arts: Artifacts, names: list[str], *, checkpoint: Path | None = None, device: str = "cpu",
         peers: bool = False, precisions: set[str] | None = None, threads: int = 0,
         peer_calibration: np.ndarray | None = None,
         compile_precisions: tuple[str, ...] = COMPILE_PEER_PRECISIONS) -> tuple[list[Variant], list[str]]:
    """Variants to run, and one line for each backend that cannot run here. With ``peers``, what users
    would run instead, per precision class, with the same thread count (INT8 peers need
    ``peer_calibration``: training images; on CUDA the peers are PyTorch's, see ``peer_variants``)."""
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
            if name in backends_for(art.format):
                variants += _artifact_variants(name, art, device, threads)
    if precisions:  # a precision (int8: every INT8 variant) or a tag (int8-cpu: that one)
        variants = [v for v in variants if v.precision in precisions or v.tag in precisions]
    if peers:
        peer_list, peer_skipped = peer_variants(arts, ckpt, threads=threads, calibration=peer_calibration,
                                                device=device, compile_precisions=compile_precisions)
        variants += [p for p in peer_list if not precisions or p.precision in precisions]
        skipped += peer_skipped
    if not variants:
        if precisions and not skipped:
            raise InvalidInput(f"No variant here has precision {', '.join(sorted(precisions))}.")
        raise InvalidInput("No backend can run here: " + " ".join(skipped))
    return variants, skipped


def _artifact_variants(name: str, art: Artifact, device: str, threads: int) -> list[Variant]:
    """The variants backend ``name`` runs one artifact as: its own options for the device asked for."""
    common = {"artifact": art, "target": art.target}
    if name == "onnxruntime":
        providers = None if device.startswith("cuda") else ("CPUExecutionProvider",)
        return [Variant(name, art.path, art.precision, f"{name} {art.tag}", {"providers": providers, "threads": threads},
                        **common)]
    if name == "openvino":
        found = [Variant(name, art.path, art.precision, f"{name} {art.tag}", {"threads": threads}, **common)]
        if art.precision == "fp32" and _cpu_has_bf16():  # verified against the bf16 tolerance
            found.append(Variant(name, art.path, "bf16", f"{name} bf16", {"threads": threads, "inference_precision": "bf16"},
                                 art))
        return found
    if name == "aoti" and not (art.target == "cpu" or device.startswith("cuda") or device == "auto"):
        return []  # a CUDA package on a CPU-only run
    options = {"threads": threads} if name == "aoti" else {}
    return [Variant(name, art.path, art.precision, f"{name} {art.tag}", options, **common)]


def peer_variants(arts: Artifacts, ckpt: Path, *, threads: int = 0, calibration: np.ndarray | None = None,
                  device: str = "cpu", compile_precisions: tuple[str, ...] = COMPILE_PEER_PRECISIONS,
                  ) -> tuple[list[Variant], list[str]]:
    """Default settings of what users would otherwise run: FP32 peers on the FP32 model, and, given
    calibration images, INT8 peers quantized from the same FP32 ONNX by their own tools.

    On CUDA the peers are what a PyTorch user runs on the GPU without TensorRT (ONNX Runtime's CUDA provider is not
    part of this toolkit's GPU story): PyTorch eager fp32 on the unfolded checkpoint, and ``torch.compile`` with
    ``mode="max-autotune"`` on the folded model in each of ``compile_precisions`` (static shapes, compiled per batch
    size at load; its compile time is reported apart)."""
    from runtime import peers as build

    fp32 = arts.find("onnx", "fp32")
    from runtime import reference

    found, skipped = [], []
    common = {"defaults": True, "threads": threads}
    cuda = device.startswith("cuda")
    if not ckpt.is_file() or not reference.available():
        skipped.append("The PyTorch peers need the source checkpoint and PyTorch's training stack "
                       f"({'no checkpoint ' + str(ckpt) if not ckpt.is_file() else reference.HINT}).")
    else:
        found.append(Variant("torch", ckpt, "fp32", "peer: PyTorch eager (unfolded)",
                             {"folded": False, "channels_last": False, "threads": threads,
                              "device": device if cuda else "cpu"}, peer=True))
        for p in compile_precisions if cuda else ():
            found.append(Variant("torch", ckpt, p, f"peer: torch.compile max-autotune {p}",
                                 {"compile": "max-autotune", "device": device}, peer=True))
    if cuda:
        return found, skipped
    if fp32 is None:
        return found, skipped
    found.append(Variant("onnxruntime", fp32.path, "fp32", "peer: ONNX Runtime defaults", common, fp32, peer=True))
    have_openvino = backends.unavailable_reason("openvino") is None
    if have_openvino:
        found.append(Variant("openvino", fp32.path, "fp32", "peer: OpenVINO defaults", common, fp32, peer=True))
    if calibration is None:
        return found, skipped
    import importlib.util

    work = build.workdir()
    if importlib.util.find_spec("onnx") is None:  # ONNX Runtime's quantizer is written on the onnx package
        skipped.append("The ONNX Runtime INT8 peer needs the 'onnx' package (pip install onnx).")
    else:
        ort_q = build.ort_default_int8(fp32.path, calibration, work / "ort_default_int8.onnx")
        found.append(Variant("onnxruntime", ort_q, "int8", "peer: ONNX Runtime quantize_static defaults", common,
                             peer=True))
    reason = build.nncf_unavailable()
    if reason:
        skipped.append(reason)
    else:
        ov_q = build.nncf_int8(fp32.path, calibration, work / "nncf_int8.xml")
        found.append(Variant("openvino", ov_q, "int8", "peer: OpenVINO + NNCF INT8", common, peer=True))
        # The same model compiled as our OpenVINO variants are (a static shape per batch bucket, the LATENCY
        # hint): what a user who tunes OpenVINO runs, so that the INT8 ratio is reported both ways.
        found.append(Variant("openvino", ov_q, "int8", "peer: OpenVINO + NNCF INT8, tuned as ours",
                             {"threads": threads}, peer=True))
    return found, skipped
