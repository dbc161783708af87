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

import numpy as np

from resnet_edge.atomic import atomic_write_bytes, atomic_write_text, sha256_file
from resnet_edge.errors import ArtifactMismatch, InvalidInput
from runtime.backends.trt_engine import (  # noqa: F401 - the runtime half, re-exported for export's callers
    INSTALL_HINT,
    EngineRunner,
    _trt,
    check_compatible,
    device_identity,
    engine_max_batch,
    load_engine,
    sidecar_path,
    trt_major,
    unavailable_reason,
)
from runtime.outputs import run_batched


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


def engine_logits(engine: Path, x: np.ndarray, max_batch: int) -> np.ndarray:
    """Run the test set through a fresh engine, ``max_batch`` rows at a time."""
    runner = EngineRunner(engine)
    try:
        return run_batched(runner, x, max_batch)
    finally:
        runner.close()
