"""The backends, as ``runtime.formats.BACKENDS`` lists them. Backends load lazily, so ``import runtime`` stays
light."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from resnet_edge.errors import InvalidInput, MissingDependency
from runtime.backends.base import Backend
from runtime.formats import BACKENDS, install_hint
from runtime.spec import ModelSpec

REGISTRY = tuple(BACKENDS)  # the backend names, in the table's order


def unavailable_reason(name: str) -> str | None:
    """None if the backend can run here, else one sentence saying what to install."""
    row = BACKENDS.get(name)
    if row is None:
        raise InvalidInput(f"Unknown backend '{name}'; choose from {', '.join(BACKENDS)} or auto.")
    for package in (row.package, *row.also):
        if importlib.util.find_spec(package) is None:
            return f"The {name} backend needs the '{package}' package ({install_hint(row.extra, package)})."
    if row.needs_cuda:
        from runtime.backends.trt_engine import LIBRARIES, run_unavailable_reason

        reason = run_unavailable_reason(LIBRARIES[name])
        return f"The {name} backend cannot run here: {reason}" if reason else None
    return None


def available() -> list[str]:
    return [name for name in BACKENDS if unavailable_reason(name) is None]


def backend_class(name: str) -> type[Backend]:
    """The class of backend ``name`` (its module imported now): what it offers and what ``create`` makes."""
    row = BACKENDS[name]
    return getattr(importlib.import_module(f"runtime.backends.{row.module}"), row.cls)


def create(name: str, spec: ModelSpec, source: Path, **kwargs: Any) -> Backend:
    reason = unavailable_reason(name)
    if reason:
        raise MissingDependency(reason)
    return backend_class(name)(spec, source, **kwargs)


__all__ = ["Backend", "REGISTRY", "available", "create", "unavailable_reason"]
