"""One artifact on one backend in a process of its own, which imports no torch: how export verifies a format whose
runtime must not share a process with PyTorch (ncnn: two OpenMP runtimes), and how a test runs a backend clean.

``python -m runtime.isolated REQUEST.json`` reads the backend, the model file, the precision, the model spec, the
input ``.npy`` and the output ``.npy`` from the request, and writes the logits there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from resnet_edge.errors import ArtifactMismatch
from runtime.spec import ModelSpec


def run_isolated(backend: str, model: Path, precision: str, spec: ModelSpec, x: np.ndarray, *, max_batch: int = 64,
                 options: dict | None = None, timeout: float = 900) -> np.ndarray:
    """The logits of ``model`` on ``backend`` over ``x``, computed in a fresh Python process."""
    with tempfile.TemporaryDirectory(prefix="resnet-edge-isolated-") as tmp:
        inp, out, req = Path(tmp, "x.npy"), Path(tmp, "y.npy"), Path(tmp, "request.json")
        np.save(inp, x)
        req.write_text(json.dumps({"backend": backend, "model": str(model), "precision": precision,
                                   "spec": asdict(spec), "input": str(inp), "output": str(out),
                                   "max_batch": max_batch, "options": options or {}}))
        # Logits, not timings: OpenMP threads that sleep when idle instead of spinning. On a CPU something else
        # keeps busy, ncnn's spinning threads took 689 ms an image against 6 ms passive (docs/measurements.md).
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        proc = subprocess.run([sys.executable, "-m", "runtime.isolated", str(req)], capture_output=True, text=True,
                              timeout=timeout, env=env)
        if proc.returncode != 0 or not out.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ArtifactMismatch(f"The {backend} backend failed on {Path(model).name} in its own process: {last}")
        return np.load(out)


def main(request: str) -> int:
    from runtime import backends
    from runtime.outputs import run_batched

    req = json.loads(Path(request).read_text())
    spec_fields = {k: tuple(v) if isinstance(v, list) else v for k, v in req["spec"].items()}
    spec = ModelSpec(**spec_fields)
    x = np.load(req["input"])
    with backends.create(req["backend"], spec, Path(req["model"]), precision=req["precision"],
                         max_batch=req["max_batch"], **req.get("options", {})) as backend:
        logits = run_batched(backend.infer, x, req["max_batch"])
    if "torch" in sys.modules:
        raise SystemExit("torch was imported in the isolated process.")
    np.save(req["output"], logits)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
