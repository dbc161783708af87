"""TensorRT and TensorRT-RTX engines from the exported ONNX files: one builder for both libraries.

The libraries share the builder API (network, ONNX parser, builder config, optimization profile, serialized plan),
so both run the same code and differ only where ``runtime.backends.trt_engine.Library`` says: TensorRT-RTX builds
ahead of time on any machine, GPU or not, for a set of compute capabilities, with no precision flags (always
strongly typed: FP16 comes from the FP16 ONNX, INT8 from the QDQ ONNX) and no timing cache (which would query a
GPU). TensorRT 11 is strongly typed too; TensorRT 10 builds the same files with the FP16/INT8 flags. The engine is a
plain serialized plan; everything we know about it goes into a JSON sidecar next to it, never into the plan.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from resnet_edge.atomic import atomic_write_bytes, atomic_write_text, sha256_file
from resnet_edge.errors import ArtifactMismatch, InvalidInput
from runtime.backends.trt_engine import (  # noqa: F401 - the runtime half, re-exported for export's callers
    TENSORRT,
    TENSORRT_RTX,
    EngineRunner,
    Library,
    _trt,
    check_compatible,
    device_identity,
    engine_max_batch,
    engine_unavailable_reason,
    gpu_capability,
    load_engine,
    read_sidecar,
    run_unavailable_reason,
    runtime_cache_path,
    sidecar_path,
    unavailable_reason,
)
from runtime.outputs import run_batched

# TensorRT-RTX's ahead-of-time targets: its portable default set (Ampere to Blackwell) unless asked otherwise.
# Turing (7.5) is built only on request, as NVIDIA advises (a portable engine that includes it runs slower).
RTX_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
RTX_DEFAULT_CAPABILITIES = ("8.0", "8.6", "8.9", "12.0")


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


def parse_capabilities(text: str) -> tuple[str, ...]:
    """``--trt-rtx-cc``: 'portable' (the default set), 'current' (this machine's GPU) or a list such as 8.6,8.9,12.0."""
    text = text.strip()
    if text == "portable":
        return RTX_DEFAULT_CAPABILITIES
    if text == "current":
        cc = gpu_capability()
        if cc is None:
            raise InvalidInput("--trt-rtx-cc current needs a CUDA GPU here; name the targets instead, for example "
                               f"--trt-rtx-cc {','.join(RTX_DEFAULT_CAPABILITIES)}.")
        text = cc
    names = tuple(dict.fromkeys(c.strip() for c in text.split(",") if c.strip()))
    bad = [c for c in names if c not in RTX_CAPABILITIES]
    if bad or not names:
        raise InvalidInput(f"TensorRT-RTX does not target compute capability '{','.join(bad) or text}'; choose from "
                           f"{', '.join(RTX_CAPABILITIES)}, 'portable' or 'current' (Hopper, 9.0, and Jetson are "
                           "not TensorRT-RTX targets).")
    return names


class _Log:
    """Collects the builder's messages: a CPU-only TensorRT-RTX build logs a CUDA driver error that does not stop
    it, so messages are shown only with a failure they explain."""

    def __init__(self, trt: Any) -> None:
        base = trt.ILogger

        class Logger(base):  # the library's own base class, made here because the library loads lazily
            def __init__(self) -> None:
                base.__init__(self)
                self.messages: list[str] = []

            def log(self, severity, msg) -> None:  # noqa: ANN001 - the binding's signature
                if int(severity) <= int(trt.ILogger.Severity.WARNING):
                    self.messages.append(str(msg))

        self.logger = Logger()


_LOGGERS: dict[str, Any] = {}  # one logger a library: it registers the first one for the whole process


def _logger(lib: Library, trt: Any):
    if lib.module not in _LOGGERS:
        _LOGGERS[lib.module] = _Log(trt).logger
    log = _LOGGERS[lib.module]
    log.messages.clear()
    return log


def parse_onnx(onnx_path: Path, lib: Library = TENSORRT_RTX) -> tuple[Any, Any, Any, Any]:
    """(library module, builder, network, parser) after a complete parse; every parser error named with its node
    otherwise, in one sentence."""
    trt = _trt(lib, to_run=not lib.builds_without_gpu)
    logger = _logger(lib, trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch always; strongly typed always on TRT 11 and TensorRT-RTX
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(_parser_error(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactMismatch(f"{lib.title}'s ONNX parser rejected {Path(onnx_path).name}: {errors}.")
    return trt, builder, network, parser


def _parser_error(err: Any) -> str:
    desc = str(err.desc()).strip().splitlines()
    detail = next((line for line in desc if "Error Code" in line), desc[0] if desc else "")
    return f"node {err.node_name() or err.node()} ({err.node_operator()}): {detail.strip()}"


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
    lib: Library = TENSORRT,
    capabilities: tuple[str, ...] = RTX_DEFAULT_CAPABILITIES,
) -> Path:
    """Build ``out`` (a plain plan) from ``onnx_path`` with ``lib``, plus ``out.json`` describing it."""
    profile = profile.validate()
    trt, builder, network, _parser = parse_onnx(onnx_path, lib)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision == "fp32":  # TF32 is on by default: an "fp32" engine would round matmul inputs to 10 bits
        config.clear_flag(trt.BuilderFlag.TF32)
    if not lib.strongly_typed(trt):  # TensorRT 10 is weakly typed by default: precision comes from flags
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization from the QDQ nodes
    opt = builder.create_optimization_profile()
    shape = lambda n: (n, *chw)  # noqa: E731
    opt.set_shape(input_name, shape(profile.min_batch), shape(profile.opt_batch), shape(profile.max_batch))
    config.add_optimization_profile(opt)
    if lib.builds_without_gpu:
        capabilities = parse_capabilities(",".join(capabilities))
        config.num_compute_capabilities = len(capabilities)
        for i, cc in enumerate(capabilities):
            config.set_compute_capability(getattr(trt.ComputeCapability, "SM" + cc.replace(".", "")), i)
    elif timing_cache is not None:  # TensorRT-RTX: a timing cache queries a GPU, which a CPU build has none of
        cache_bytes = timing_cache.read_bytes() if timing_cache.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=False)
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if plan is None:
        said = "; ".join(_LOGGERS[lib.module].messages[-3:])
        raise ArtifactMismatch(f"{lib.title} failed to build a {precision} engine from {Path(onnx_path).name}"
                               f"{': ' + said if said else ''}.")
    atomic_write_bytes(out, bytes(plan))
    if timing_cache is not None and not lib.builds_without_gpu:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    atomic_write_text(sidecar_path(out), json.dumps(_sidecar(
        lib, trt, out, onnx_path, precision=precision, profile=profile, input_name=input_name, chw=chw,
        workspace_mb=workspace_mb, seconds=seconds, layers=network.num_layers,
        capabilities=capabilities if lib.builds_without_gpu else ()), indent=2))
    return out


def _sidecar(lib: Library, trt: Any, out: Path, onnx_path: Path, *, precision: str, profile: Profile,
             input_name: str, chw: tuple[int, ...], workspace_mb: int, seconds: float, layers: int,
             capabilities: tuple[str, ...]) -> dict[str, Any]:
    """What an engine is, for the runtime's compatibility check and for people."""
    where = device_identity() if gpu_capability() else {"gpu": None, "compute_capability": None}
    doc: dict[str, Any] = {
        "format": lib.fmt, "library": lib.title, lib.version_key: str(trt.__version__), "precision": precision,
        "profile": asdict(profile), "input_name": input_name, "chw": list(chw), "workspace_mb": workspace_mb,
        "strongly_typed": lib.strongly_typed(trt), "tf32": precision != "fp32",
        "source_onnx": Path(onnx_path).name, "source_onnx_sha256": sha256_file(onnx_path),
        "build_seconds": round(seconds, 2), "engine_bytes": out.stat().st_size,
        "parser_errors": 0, "network_layers": layers,
    }
    if lib.builds_without_gpu:
        doc.update(compute_capabilities=list(capabilities), built_on_gpu=where["gpu"])
    else:
        doc.update(where)  # a TensorRT engine is for the GPU it was built on
    return doc


def engine_logits(engine: Path, x: np.ndarray, max_batch: int) -> np.ndarray:
    """Run the test set through a fresh engine, ``max_batch`` rows at a time."""
    runner = EngineRunner(engine)
    try:
        return run_batched(runner, x, max_batch)
    finally:
        runner.close()
