"""The PyTorch reference, as the export wrote it: a ``torch.export`` program of the unfolded checkpoint in the
artifacts (``manifest.reference``), which the torch backend runs. Nothing in the runtime imports ``train`` or
``export``; without torch installed, what needs the reference says so in one sentence and everything else works."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from resnet_edge.errors import ArtifactMismatch, MissingDependency

HINT = "pip install 'resnet-edge[train]'"


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def program(arts) -> Path | None:
    """The reference program of ``arts`` (a ``runtime.spec.Artifacts``), None for an export made without one."""
    entry = arts.manifest.reference
    return arts.root / entry.path if entry else None


def available(arts) -> bool:
    """Whether the PyTorch reference can run here: torch installed, and the artifacts carry the program."""
    return torch_installed() and program(arts) is not None


def require(arts) -> Path:
    """The reference program, or one sentence saying what is missing."""
    if not torch_installed():
        raise MissingDependency(f"The PyTorch reference needs PyTorch, which this install lacks ({HINT}).")
    path = program(arts)
    if path is None:
        raise ArtifactMismatch(f"{arts.root} has no PyTorch reference program (it was exported by an older "
                               "resnet-edge); re-export it with 'resnet-edge export'.")
    return path
