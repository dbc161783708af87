"""ncnn (``.ncnn.param`` + ``.ncnn.bin``) with ``pnnx``: the BN-folded model traced to TorchScript, converted by
the pnnx executable in a scratch directory of its own (it writes a dozen files beside its input), FP32 weights or
FP16 storage (``fp16=1``: half-precision weights in the .bin, which ncnn reads with fp16 storage on).

No INT8: ncnn quantizes with its ``ncnn2table`` and ``ncnn2int8`` command-line tools, which neither the ``ncnn`` nor
the ``pnnx`` wheel ships, and pnnx writes no int8 models (the formats table's ``why_not``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from resnet_edge.errors import ArtifactMismatch

WINOGRAD_IMAGES = 8  # held-out training images the winograd decision times


def unavailable_reason() -> str | None:
    for package in ("pnnx", "ncnn"):
        if importlib.util.find_spec(package) is None:
            return f"the ncnn converter needs '{package}' (pip install 'resnet-edge[edge]')."
    return None


def build(folded, out: Path, *, chw: tuple[int, int, int], precision: str) -> dict[str, Any]:
    """Convert ``folded`` into ``out`` (``*.ncnn.param``) and its weights beside it; returns how it was made."""
    import pnnx
    import torch

    from runtime.backends.ncnn_backend import blob_names, weights_path

    if precision not in ("fp32", "fp16"):
        raise ArtifactMismatch(f"ncnn is exported in fp32 and fp16, not {precision}.")
    with tempfile.TemporaryDirectory(prefix="resnet-edge-pnnx-") as tmp:
        traced = Path(tmp, "model.pt")
        with torch.no_grad():
            torch.jit.trace(folded.eval(), torch.zeros(1, *chw)).save(str(traced))
        shape = ",".join(map(str, (1, *chw)))
        cmd = [pnnx.EXEC_PATH, traced.name, f"inputshape=[{shape}]", f"fp16={int(precision == 'fp16')}",
               "device=cpu"]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        param, weights = Path(tmp, "model.ncnn.param"), Path(tmp, "model.ncnn.bin")
        if proc.returncode != 0 or not param.is_file() or not weights.is_file():
            last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no output"])[-1]
            raise ArtifactMismatch(f"pnnx could not convert the model to ncnn: {last}")
        shutil.move(param, out)
        shutil.move(weights, weights_path(out))
    blobs = blob_names(out)
    return {"converter": f"pnnx {getattr(pnnx, '__version__', '?')}", "input_blob": blobs[0], "output_blob": blobs[1],
            "weights": "fp16" if precision == "fp16" else "fp32"}


def winograd_decision(param: Path, precision: str, spec, images) -> dict[str, Any]:
    """Whether ncnn runs this model faster with winograd convolution on or off: median per-image latency over
    interleaved rounds on ``images`` (training images, never the test set). Recorded in the row's ``details`` and
    followed by the runtime."""
    from runtime.backends.ncnn_backend import NcnnBackend
    from runtime.timing import interleaved

    runners = {w: NcnnBackend(spec, param, precision=precision, max_batch=len(images), winograd=w).load()
               for w in (True, False)}
    try:
        on, off = interleaved([lambda: runners[True].infer(images), lambda: runners[False].infer(images)], rounds=5,
                              calls=3, warmup_calls=1)
    finally:
        for runner in runners.values():
            runner.close()
    ms = {True: on.median_of_rounds_s * 1e3 / len(images), False: off.median_of_rounds_s * 1e3 / len(images)}
    return {"winograd": ms[True] < ms[False], "winograd_ms_per_image": round(ms[True], 3),
            "no_winograd_ms_per_image": round(ms[False], 3),
            "winograd_rule": f"the faster per image over 5 interleaved rounds on {len(images)} training images"}
