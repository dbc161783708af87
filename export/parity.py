"""ONNX Runtime evaluation for export; the tolerance table and the parity result live in ``runtime.tolerances``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.outputs import run_batched
from runtime.tolerances import TOLERANCES, ParityResult, Tolerance, compare, tolerance_failures

__all__ = ["TOLERANCES", "ParityResult", "Tolerance", "compare", "interleaved_latency_ms", "ort_logits", "ort_session",
           "tolerance_failures"]


def ort_session(path: Path, threads: int = 0):
    """A CPU ONNX Runtime session with full graph optimisation."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_logits(path: Path, images: np.ndarray, batch_size: int | None = None, threads: int = 0) -> np.ndarray:
    """Run ``images`` [N, C, H, W] float32 through the ONNX file on ONNX Runtime's CPU provider."""
    from resnet_edge.images import eval_batch

    sess = ort_session(path, threads)
    name = sess.get_inputs()[0].name
    return run_batched(lambda b: sess.run(None, {name: b})[0], images, batch_size or eval_batch(images.shape[-1], cap=500))


def interleaved_latency_ms(paths: list[Path], batch: np.ndarray, *, rounds: int = 7, calls: int = 5,
                           threads: int = 0) -> list[float]:
    """Median over rounds of each model's median call time, the models taking turns every round
    (``runtime.timing.interleaved``)."""
    from runtime.timing import interleaved

    sessions = [ort_session(p, threads) for p in paths]
    feeds = [{s.get_inputs()[0].name: batch} for s in sessions]
    timed = interleaved([lambda s=s, f=f: s.run(None, f) for s, f in zip(sessions, feeds)], rounds=rounds,
                        calls=calls, warmup_calls=2)
    return [t.median_of_rounds_s * 1e3 for t in timed]
