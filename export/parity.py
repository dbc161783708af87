"""ONNX evaluation for export, on the backend that serves ONNX; the tolerance table and the parity result live in
``runtime.tolerances``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.outputs import run_batched
from runtime.tolerances import TOLERANCES, ParityResult, Tolerance, compare, tolerance_failures

__all__ = ["TOLERANCES", "ParityResult", "Tolerance", "compare", "interleaved_latency_ms", "onnx_backend", "ort_logits",
           "tolerance_failures"]


def onnx_backend(path: Path, chw: tuple[int, ...], *, threads: int = 0, max_batch: int = 512):
    """The ONNX file loaded on the backend that serves it (the formats table's first for ONNX, on the CPU): export
    verifies and times exactly what ``parity``, ``predict`` and ``serve`` run."""
    from runtime import backends
    from runtime.formats import FORMATS
    from runtime.spec import ModelSpec

    c, h, w = chw
    shape_only = ModelSpec("model", "images", "logits", c, h, 0, (), (), ())  # the backend checks shapes only
    return backends.create(FORMATS["onnx"].backends[0], shape_only, Path(path), providers=("CPUExecutionProvider",),
                           threads=threads, max_batch=max_batch).load()


def ort_logits(path: Path, images: np.ndarray, batch_size: int | None = None, threads: int = 0) -> np.ndarray:
    """Run ``images`` [N, C, H, W] float32 through the ONNX file on its serving backend (ONNX Runtime, CPU)."""
    from resnet_edge.images import eval_batch

    size = batch_size or eval_batch(images.shape[-1], cap=500)
    with onnx_backend(path, images.shape[1:], threads=threads, max_batch=size) as backend:
        return run_batched(backend.infer, np.ascontiguousarray(images, np.float32), size)


def interleaved_latency_ms(paths: list[Path], batch: np.ndarray, *, rounds: int = 7, calls: int = 5,
                           threads: int = 0) -> list[float]:
    """Median over rounds of each model's median call time on its serving backend, the models taking turns every
    round (``runtime.timing.interleaved``)."""
    from runtime.timing import interleaved

    loaded = [onnx_backend(p, batch.shape[1:], threads=threads, max_batch=len(batch)) for p in paths]
    try:
        timed = interleaved([lambda b=b: b.infer(batch) for b in loaded], rounds=rounds, calls=calls, warmup_calls=2)
    finally:
        for b in loaded:
            b.close()
    return [t.median_of_rounds_s * 1e3 for t in timed]
