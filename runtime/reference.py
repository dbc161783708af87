"""The PyTorch reference model, when the training stack is installed: a plug-in, not an import.

The runtime never imports ``train`` or ``export``. The export stage registers a plug-in under the entry-point
group ``resnet_edge.torch_reference`` (see ``pyproject.toml``) that turns a checkpoint into a PyTorch model
(BN-folded or not) and builds the network a manifest describes. The torch backend, parity's checkpoint
reference, bench's PyTorch-eager peer and the roofline's FLOP count use it when it is there; on an edge
install, without torch, they say so in one sentence and everything else works.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from resnet_edge.errors import MissingDependency

GROUP = "resnet_edge.torch_reference"
HINT = "pip install 'resnet-edge[train]'"


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


@lru_cache(maxsize=1)
def _plugin() -> Any:
    if not torch_installed():
        raise MissingDependency(f"This needs PyTorch and the training stack, which this install lacks ({HINT}).")
    found = list(entry_points(group=GROUP))
    if found:
        return found[0].load()
    if importlib.util.find_spec("export.reference") is not None:  # a source checkout run without installing it
        return importlib.import_module("export.reference")
    raise MissingDependency(f"No PyTorch reference plug-in is installed ({HINT}).")


def require() -> None:
    """Raise MissingDependency, in one sentence, unless the PyTorch reference can be used here."""
    _plugin()


def available() -> bool:
    """Whether the PyTorch reference can be used here."""
    try:
        _plugin()
    except MissingDependency:
        return False
    return True


def load_model(checkpoint: Path, *, folded: bool = False):
    """The checkpoint's model in eval mode on the CPU, BN-folded or as trained."""
    return _plugin().load_model(Path(checkpoint), folded=folded)


def build_model(manifest):
    """An untrained network of the shape ``manifest`` describes (for counting FLOPs)."""
    return _plugin().build_model(manifest)
