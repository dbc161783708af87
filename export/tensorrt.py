"""TensorRT engines from the exported ONNX files (TensorRT 10 and 11 Python APIs).

TensorRT 11 networks are always strongly typed: FP16 comes from the FP16 ONNX and INT8
from the QDQ ONNX, and the precision builder flags no longer exist. On TensorRT 10 the
same ONNX files are built with the FP16/INT8 builder flags set. The engine file is a
plain serialized plan (trtexec and Triton load it as is); everything we know about it
goes into a JSON sidecar next to it, never into the plan.

``tensorrt`` is imported lazily: without it (or without a CUDA GPU) the caller gets one
sentence naming what to install.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from train.atomic import atomic_write_bytes, atomic_write_text, sha256_file
from train.errors import ArtifactMismatch, InvalidInput, MissingDependency

INSTALL_HINT = "pip install 'resnet-edge[gpu]' on a machine with an NVIDIA GPU"


@dataclass(frozen=True)
class Profile:
    """Optimization profile over the batch dimension."""

    min_batch: int = 1
    opt_batch: int = 32
    max_batch: int = 64

    def validate(self) -> Profile:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise InvalidInput(f"The TensorRT profile needs 1 <= min <= opt <= max batch, got "
                               f"{self.min_batch}/{self.opt_batch}/{self.max_batch}.")
        return self


def unavailable_reason() -> str | None:
    """None when engines can be built here; otherwise why not, as one sentence."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return f"TensorRT is not installed ({INSTALL_HINT})."
    import torch

    if not torch.cuda.is_available():
        return "TensorRT is installed but PyTorch sees no CUDA GPU."
    return None


def _trt():
    reason = unavailable_reason()
    if reason:
        raise MissingDependency(reason)
    import tensorrt as trt

    return trt


def trt_major(trt_module: Any) -> int:
    return int(str(trt_module.__version__).split(".")[0])


def device_identity() -> dict[str, str]:
    import torch

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}"}


def build_engine(
    onnx_path: Path,
    out: Path,
    *,
    precision: str,
    input_name: str,
    chw: tuple[int, int, int],
    profile: Profile = Profile(),
    workspace_mb: int = 1024,
    timing_cache: Path | None = None,
) -> Path:
    """Build ``out`` (a plain plan) from ``onnx_path``, plus ``out.json`` describing it."""
    trt = _trt()
    profile = profile.validate()
    major = trt_major(trt)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch always; strongly typed always on TRT 11
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactMismatch(f"TensorRT could not parse {onnx_path}: {errors}.")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision == "fp32":  # TF32 is on by default: an "fp32" engine would round matmul inputs to 10 bits
        config.clear_flag(trt.BuilderFlag.TF32)
    if major < 11:  # TensorRT 10 is weakly typed by default: precision comes from flags
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization from the QDQ nodes
    opt = builder.create_optimization_profile()
    shape = lambda n: (n, *chw)  # noqa: E731
    opt.set_shape(input_name, shape(profile.min_batch), shape(profile.opt_batch), shape(profile.max_batch))
    config.add_optimization_profile(opt)
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ArtifactMismatch(f"TensorRT failed to build a {precision} engine from {onnx_path}.")
    seconds = time.perf_counter() - t0
    atomic_write_bytes(out, bytes(plan))
    if timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    sidecar = {
        "tensorrt_version": str(trt.__version__), **device_identity(), "precision": precision,
        "profile": asdict(profile), "input_name": input_name, "chw": list(chw),
        "workspace_mb": workspace_mb, "strongly_typed": major >= 11, "tf32": precision != "fp32",
        "source_onnx": onnx_path.name, "source_onnx_sha256": sha256_file(onnx_path),
        "build_seconds": round(seconds, 2),
    }
    atomic_write_text(sidecar_path(out), json.dumps(sidecar, indent=2))
    return out


def sidecar_path(engine: Path) -> Path:
    return engine.with_suffix(engine.suffix + ".json")


def check_compatible(engine: Path) -> dict[str, Any]:
    """Refuse an engine built by another TensorRT version or for another GPU, with one sentence."""
    trt = _trt()
    side = sidecar_path(engine)
    if not side.is_file():
        raise ArtifactMismatch(f"{engine} has no sidecar {side.name}; rebuild it with 'resnet-edge export --trt'.")
    meta = json.loads(side.read_text())
    here = {"tensorrt_version": str(trt.__version__), **device_identity()}
    for key, label in (("tensorrt_version", "TensorRT"), ("gpu", "GPU"), ("compute_capability", "compute capability")):
        if meta.get(key) != here[key]:
            raise ArtifactMismatch(f"{engine} was built for {label} {meta.get(key)} but this machine has "
                                   f"{here[key]}; rebuild it here with 'resnet-edge export --trt'.")
    return meta


def load_engine(engine: Path):
    """Deserialize a compatible engine (checked against its sidecar first)."""
    trt = _trt()
    check_compatible(engine)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    cuda_engine = runtime.deserialize_cuda_engine(engine.read_bytes())
    if cuda_engine is None:
        raise ArtifactMismatch(f"TensorRT could not deserialize {engine}.")
    return cuda_engine


class EngineRunner:
    """The one way an engine runs here (export verifies with it, the runtime backend serves with it):
    named tensors, torch CUDA tensors as buffers, copy-in, execute and copy-out on one stream."""

    def __init__(self, engine: Path) -> None:
        import tensorrt as trt
        import torch

        self.path = Path(engine)
        self.engine = load_engine(self.path)  # checks the sidecar against this TensorRT and GPU first
        self.meta = json.loads(sidecar_path(self.path).read_text())
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.max_batch = int(self.meta["profile"]["max_batch"])
        self.stream = torch.cuda.Stream()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.cuda.stream(self.stream):
            xb = torch.from_numpy(np.ascontiguousarray(x)).pin_memory().to("cuda", non_blocking=True)
            if not self.context.set_input_shape(self.input_name, tuple(xb.shape)):
                p = self.meta["profile"]
                raise InvalidInput(f"Batch {xb.shape[0]} is outside the optimization profile of {self.path.name} "
                                   f"({p['min_batch']}..{p['max_batch']}); rebuild it with a wider --trt-batch.")
            yb = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(self.input_name, xb.data_ptr())
            self.context.set_tensor_address(self.output_name, yb.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise ArtifactMismatch(f"TensorRT failed to run {self.path}.")
            out = yb.to("cpu", non_blocking=True)
        self.stream.synchronize()
        return out.numpy()

    def close(self) -> None:
        del self.context, self.engine


def engine_max_batch(engine: Path) -> int:
    """The largest batch the engine's optimization profile accepts, from its sidecar (no GPU needed)."""
    side = sidecar_path(Path(engine))
    try:
        return int(json.loads(side.read_text())["profile"]["max_batch"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ArtifactMismatch(f"{engine} has no readable sidecar {side.name}; rebuild it with 'resnet-edge export "
                               "--trt'.") from None


def engine_logits(engine: Path, x: np.ndarray, max_batch: int) -> np.ndarray:
    """Run the test set through a fresh engine, ``max_batch`` rows at a time."""
    runner = EngineRunner(engine)
    try:
        return np.concatenate([runner(x[i:i + max_batch]) for i in range(0, len(x), max_batch)])
    finally:
        runner.close()
