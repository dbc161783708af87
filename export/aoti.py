"""AOTInductor packages from the BN-folded model: ``torch.export`` with a dynamic batch ``Dim``, then
``torch._inductor.aoti_compile_and_package``, one package per precision (fp16, bf16 and fp32 on CUDA, fp32 with
TF32 off). Each gets a JSON sidecar like a TensorRT engine's, checked by the runtime's ``aoti`` backend.

Packages are built for CUDA. On a machine without a GPU, ``--aoti`` builds a CPU fp32 package only when asked
(measured here, AOTI on the CPU is slower than eager PyTorch: 5.7 ms against 3.3 ms at batch 1, 28 px).
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

from resnet_edge.atomic import atomic_write_text
from resnet_edge.errors import InvalidInput, MissingDependency
from runtime.backends.aoti_backend import device_identity, sidecar_path

CPU_PRECISIONS = ("fp32",)


def unavailable_reason() -> str | None:
    """None when packages can be built for CUDA here; else why not, in one sentence."""
    import torch

    if not hasattr(torch._inductor, "aoti_compile_and_package"):
        return f"torch {torch.__version__} has no AOTInductor packaging (it needs torch >= 2.6)."
    if not torch.cuda.is_available():
        return "PyTorch sees no CUDA GPU, and AOTI packages are built for CUDA (pass --aoti to build a CPU one)."
    return None


@contextlib.contextmanager
def _no_tf32(strict: bool):
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        if strict:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def build_package(folded, out: Path, *, precision: str, device: str, chw: tuple[int, int, int], max_batch: int) -> Path:
    """Compile ``folded`` (a BN-folded eval model) into ``out`` (.pt2) with its sidecar; returns ``out``."""
    import torch
    from torch.export import Dim

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision not in dtypes:
        raise InvalidInput(f"AOTI precision must be one of {', '.join(dtypes)}, not '{precision}'.")
    if device == "cpu" and precision != "fp32":
        raise InvalidInput("AOTI CPU packages are fp32 only.")
    if not hasattr(torch._inductor, "aoti_compile_and_package"):
        raise MissingDependency(f"torch {torch.__version__} has no AOTInductor packaging (it needs torch >= 2.6).")
    model = copy.deepcopy(folded).to(device=device, dtype=dtypes[precision]).eval()
    example = torch.zeros((min(2, max_batch), *chw), device=device, dtype=dtypes[precision])
    batch = Dim("batch", min=1, max=max_batch)
    with torch.inference_mode(False), torch.no_grad(), _no_tf32(device.startswith("cuda") and precision == "fp32"):
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch._inductor.aoti_compile_and_package(program, package_path=str(out))
    meta = {**device_identity(device), "precision": precision, "max_batch": max_batch, "chw": list(chw),
            "tf32": False if precision == "fp32" else None}
    atomic_write_text(sidecar_path(out), json.dumps(meta, indent=2))
    return out
