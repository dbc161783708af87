"""The one backend protocol: ``load()``, ``infer(batch) -> logits``, ``close()``, and a context manager.

The base class validates every input once (shape, dtype, batch limit, finite values);
each backend implements only ``_load``, ``_infer`` and optionally ``_close``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from runtime.spec import ModelSpec
from train.errors import InvalidInput, ToolkitError


class Backend(ABC):
    name: ClassVar[str]

    def __init__(self, spec: ModelSpec, source: Path, *, precision: str = "fp32", max_batch: int = 64,
                 **options: Any) -> None:
        self.spec, self.source, self.precision, self.max_batch = spec, Path(source), precision, max_batch
        self.options = options
        self.loaded = False

    # -- the protocol -------------------------------------------------------------------------
    def load(self) -> Backend:
        if not self.loaded:
            if not self.source.exists():
                raise InvalidInput(f"{self.name}: model file {self.source} does not exist.")
            self._load()
            self.loaded = True
        return self

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, C, H, W] -> float32 logits [N, classes]."""
        if not self.loaded:
            raise ToolkitError(f"{self.name}: call load() (or use 'with') before infer().")
        self.validate(batch)
        return self._infer(batch)

    def close(self) -> None:
        if self.loaded:
            self._close()
            self.loaded = False

    def __enter__(self) -> Backend:
        return self.load()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- shared behaviour ---------------------------------------------------------------------
    def validate(self, batch: np.ndarray) -> None:
        c, h, w = self.spec.chw
        if not isinstance(batch, np.ndarray):
            raise InvalidInput(f"Input must be a numpy array, not {type(batch).__name__}.")
        if batch.dtype != np.float32:
            raise InvalidInput(f"Input dtype must be float32, not {batch.dtype}.")
        if batch.ndim != 4 or batch.shape[1:] != (c, h, w):
            raise InvalidInput(f"Input shape must be [N, {c}, {h}, {w}], not {list(batch.shape)}.")
        if not 1 <= batch.shape[0] <= self.max_batch:
            raise InvalidInput(f"Batch size {batch.shape[0]} is outside 1..{self.max_batch}.")
        if not np.isfinite(batch).all():
            raise InvalidInput("Input contains NaN or Inf values.")

    def describe(self) -> str:
        return f"{self.name} {self.precision}"

    @property
    def effective_precision(self) -> str:
        """The precision the backend actually computes in (a library may pick one silently)."""
        return self.precision

    @property
    def device(self) -> str:
        return "cpu"

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray: ...

    def _close(self) -> None:  # noqa: B027 - optional hook
        pass
