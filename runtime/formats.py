"""The formats table and the backends table: everything the toolkit knows about a model format, in one place.

CLI validation, export planning (``export.plan``), ``runtime.variants`` (what parity and bench run), the Triton
repository and the README's formats table read these rows. A new format is one ``Format`` row, one builder module
under ``export/`` (named by ``builder``) and one backend module under ``runtime/backends/`` (a ``Backend`` row).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from resnet_edge.errors import InvalidInput
from runtime.contract import Precision

FP32, FP16, BF16, INT8 = Precision.FP32, Precision.FP16, Precision.BF16, Precision.INT8


@dataclass(frozen=True)
class Triton:
    """How the format sits in a Triton model repository."""

    platform: str  # config.pbtxt's platform
    filename: str  # the model file in <name>/1/
    tag: str  # the model name's last part: resnet18_fp32_onnx
    kind: str = "KIND_AUTO"  # instance_group kind


@dataclass(frozen=True)
class Format:
    name: str  # as manifest rows name it
    suffix: str
    precisions: tuple[Precision, ...]  # the precisions export builds in this format
    devices: tuple[str, ...]  # where its artifacts run
    builder: str  # the export module that builds it
    backends: tuple[str, ...]  # the runtime backends that run it, the preferred first
    triton: Triton | None  # None: Triton does not load it
    extra: str  # the pip extra its runtime needs ("" for the base install)
    runtime_needs_torch: bool
    summary: str
    why_not: dict[str, str] = field(default_factory=dict)  # precision -> why export does not build it in this format
    label: str = ""  # how export's progress and the summary name it ("" : the name)
    verify_apart: bool = False  # export verifies it in a process without torch (ncnn: see runtime.backends.ncnn_backend)
    own_defaults: bool = False  # the lab runs the FP32 file on its backend with the runtime's defaults as a peer
    held_against: dict[str, str] = field(default_factory=dict)  # precision -> the peer row the summary compares with
    # The runtime settings its artifacts need to compute in their own precision, recorded in every manifest row:
    # anyone loading the file elsewhere (a script, OpenVINO Model Server, Triton's OpenVINO backend) must set them.
    runtime_settings: dict[str, str] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return self.label or self.name

    @property
    def defaults_peer(self) -> str:
        """The label of the peer row ``own_defaults`` adds."""
        return f"peer: {self.title} defaults"


@dataclass(frozen=True)
class Backend:
    name: str
    module: str  # runtime.backends.<module>
    cls: str
    package: str  # the package it imports, checked before loading it
    extra: str  # the pip extra that brings ``package``
    needs_cuda: bool = False
    also: tuple[str, ...] = ()  # further packages it imports (ExecuTorch's Python runtime: torch)


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", ".onnx", (FP32, FP16, INT8), ("cpu", "cuda"), "export.onnx", ("onnxruntime", "openvino"),
           Triton("onnxruntime_onnx", "model.onnx", "onnx"), "", False,
           "ONNX (FP16 by conversion, INT8 as QDQ with a uint8 CPU variant where it pays)",
           label="ONNX", held_against={"fp32": "peer: ONNX Runtime defaults",
                                       "int8": "peer: ONNX Runtime quantize_static defaults"}),
    Format("tensorrt", ".engine", (FP32, FP16, INT8), ("cuda",), "export.tensorrt", ("tensorrt",),
           Triton("tensorrt_plan", "model.plan", "trt", "KIND_GPU"), "gpu", True,
           "TensorRT engines built from the ONNX files, where TensorRT and a GPU exist (torch's CUDA tensors are "
           "their buffers)"),
    # Triton's TensorRT backend loads plans of the full TensorRT, not TensorRT-RTX: served by our server instead.
    Format("tensorrt_rtx", ".rtx.engine", (FP32, FP16, INT8), ("cuda",), "export.tensorrt", ("tensorrt_rtx",), None,
           "rtx", True, "TensorRT-RTX engines built ahead of time on any machine, GPU or not, for compute capabilities "
           "7.5-8.9 and 12.x (RTX cards, A100, A10, L4); parsed and built in CI, run where such a GPU exists",
           label="TensorRT-RTX"),
    Format("aoti", ".pt2", (FP16, BF16, FP32), ("cuda", "cpu"), "export.aoti", ("aoti",), None, "train", True,
           "AOTInductor packages, on CUDA (a CPU one on request); Triton's PyTorch backend does not load them"),
    Format("openvino", ".xml", (FP32, INT8), ("cpu",), "export.openvino_ir", ("openvino",), None, "openvino", False,
           "OpenVINO IR (.xml + .bin), FP32 and INT8 (from our QDQ ONNX or from NNCF, whichever the held-out split "
           "prefers), so that a device loads IR instead of converting ONNX at start-up",
           {"fp16": "OpenVINO's CPU plugin computes an FP16 IR in fp32 (or bf16) after decompressing its weights at "
                    "load; the FP32 IR with the bf16 hint is the faster reduced-precision path here"},
           label="OpenVINO IR",
           held_against={"fp32": "peer: OpenVINO defaults", "int8": "peer: OpenVINO + NNCF INT8"},
           # the CPU plugin computes an FP32 IR in bf16 where the CPU has AVX512-BF16 or AMX unless asked for f32
           # (1,000 golden images: 6.7e-3 relative, 99.7% top-1 agreement in bf16; 8.2e-7 and 100% with f32), and
           # an INFERENCE_PRECISION_HINT in the IR's rt_info is not honoured
           runtime_settings={"INFERENCE_PRECISION_HINT": "f32"}),
    Format("litert", ".tflite", (FP32, INT8), ("cpu",), "export.litert", ("litert",), None, "litert", False,
           "LiteRT (TFLite) flatbuffers from litert-torch: FP32, and full-integer INT8 (PT2E, int8 per-channel "
           "weights and int8 activations) on the XNNPACK interpreter",
           {"fp16": "LiteRT's CPU interpreter dequantizes fp16 weights to fp32 at load: the file halves and nothing "
                    "runs in fp16 on x86"},
           label="LiteRT", own_defaults=True,  # LiteRT has no INT8 default of its own: held against the strongest
           held_against={"fp32": "peer: LiteRT defaults", "int8": "peer: OpenVINO + NNCF INT8"}),
    Format("ncnn", ".ncnn.param", (FP32, FP16), ("cpu", "vulkan"), "export.ncnn", ("ncnn",), None, "ncnn", False,
           "ncnn (.ncnn.param + .ncnn.bin) from pnnx, FP32 and FP16 storage; on the CPU, or on any Vulkan GPU "
           "(`--device vulkan`: phones, Raspberry Pi, Mali boards, NVIDIA/AMD drivers)",
           {"int8": "ncnn INT8 needs ncnn's ncnn2table and ncnn2int8 tools, which neither the ncnn nor the pnnx wheel "
                    "ships, and pnnx writes no int8 models"},
           label="ncnn", verify_apart=True, own_defaults=True,
           held_against={"fp16": "peer: ncnn defaults"}),  # ncnn's defaults store fp16: its fp16 row's class
    Format("executorch", ".pte", (FP32, INT8), ("cpu",), "export.executorch", ("executorch",), None, "executorch",
           True, "ExecuTorch programs lowered to the XNNPACK delegate, FP32 and INT8 (PT2E, per-channel symmetric); "
           "its Python runtime needs torch",
           {"fp16": "XNNPACK runs fp16 only where the CPU has fp16 arithmetic (ARMv8.2), not on x86"},
           label="ExecuTorch", held_against={"int8": "peer: OpenVINO + NNCF INT8"}),
    Format("torch", ".pt2", (FP32,), ("cpu", "cuda"), "export.program", ("torch",), None, "train", True,
           "a torch.export program of the folded model (run in fp32, bf16 or fp16 by the torch backend); the "
           "unfolded one beside it is the reference every artifact is held to"),
)}

BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("torch", "torch_backend", "TorchBackend", "torch", "train"),
    Backend("onnxruntime", "onnxruntime_backend", "OnnxRuntimeBackend", "onnxruntime", ""),
    Backend("openvino", "openvino_backend", "OpenVinoBackend", "openvino", "openvino"),
    Backend("tensorrt", "tensorrt_backend", "TensorRTBackend", "tensorrt", "gpu", needs_cuda=True, also=("torch",)),
    Backend("tensorrt_rtx", "tensorrt_backend", "TensorRTRtxBackend", "tensorrt_rtx", "rtx", needs_cuda=True,
            also=("torch",)),
    Backend("aoti", "aoti_backend", "AotiBackend", "torch", "train"),
    Backend("litert", "litert_backend", "LiteRtBackend", "ai_edge_litert", "litert"),
    Backend("ncnn", "ncnn_backend", "NcnnBackend", "ncnn", "ncnn"),
    Backend("executorch", "executorch_backend", "ExecuTorchBackend", "executorch", "executorch", also=("torch",)),
)}

# The precisions `resnet-edge export --precision` takes: those of the ONNX row, from which the others are made.
EXPORT_PRECISIONS = tuple(p.value for p in FORMATS["onnx"].precisions)


def install_hint(extra: str, package: str = "") -> str:
    return f"pip install 'resnet-edge[{extra}]'" if extra else f"pip install {package or 'resnet-edge'}"


def runs_on(fmt: str, device: str) -> bool:
    """Whether artifacts of ``fmt`` run on ``device`` (cpu, cuda or cuda:N, vulkan) by the table's ``devices``."""
    row = FORMATS.get(fmt)
    return row is not None and device.split(":")[0] in row.devices


def formats_on(device: str) -> tuple[str, ...]:
    return tuple(f.name for f in FORMATS.values() if runs_on(f.name, device))


def backends_for(fmt: str) -> tuple[str, ...]:
    """The backends that run artifacts of ``fmt`` (none for a format this toolkit does not know)."""
    row = FORMATS.get(fmt)
    return row.backends if row else ()


def parse_precisions(text: str, *, allowed: tuple[str, ...] = tuple(p.value for p in Precision)) -> tuple[str, ...]:
    """'all' or a comma-separated list of precisions (a tag such as int8-cpu passes as its precision)."""
    if text == "all":
        return ()
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [n for n in names if n.split("-")[0] not in allowed]
    if bad or not names:
        raise InvalidInput(f"Unknown precision '{','.join(bad) or text}'; choose from {', '.join(allowed)} or all.")
    return names


def markdown_table() -> str:
    """The README's formats table."""
    lines = ["| format | file | precisions | runs on | runtime backend | Triton platform | install | torch at run time |",
             "|---|---|---|---|---|---|---|---|"]
    for f in FORMATS.values():
        extra = f"`resnet-edge[{f.extra}]`" if f.extra else "base install"
        lines.append(f"| {f.name} | `{f.suffix}` | {', '.join(p.value for p in f.precisions)} | {', '.join(f.devices)} "
                     f"| {', '.join(f.backends)} | {f.triton.platform if f.triton else '-'} | {extra} "
                     f"| {'yes' if f.runtime_needs_torch else 'no'} |")
    return "\n".join(lines)
