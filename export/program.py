"""``torch.export`` programs of the model: how the PyTorch reference (the unfolded checkpoint) and the folded model
reach the runtime as files, which the torch backend loads with ``torch.export.load`` like any other artifact, so
that nothing after export needs the training code."""

from __future__ import annotations

from pathlib import Path

import torch

from resnet_edge.atomic import atomic_open

MAX_BATCH = 4096


def save_program(model: torch.nn.Module, out: Path, chw: tuple[int, int, int]) -> Path:
    """``model`` (eval, fp32, CPU) as an exported program with a dynamic batch dimension (1..4096)."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        program = torch.export.export(model.eval(), (torch.zeros(2, *chw),), dynamic_shapes=({0: batch},))
    with atomic_open(Path(out)) as fh:  # a buffer: torch.export.save wants a path ending in .pt2 or a file object
        torch.export.save(program, fh)
    return Path(out)


def load_program(path: Path) -> torch.nn.Module:
    return torch.export.load(str(path)).module()
