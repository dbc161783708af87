"""The one backend protocol: ``load()``, ``infer(batch) -> logits``, ``close()``, and a context manager.

The base class validates every input once (shape, dtype, batch limit, finite values);
each backend implements only ``_load``, ``_infer`` and optionally ``_close``.

A backend that runs fixed shapes (OpenVINO's static compiles, CUDA graphs) sets ``static_shapes``:
it prepares one shape per batch *bucket* at load, and ``infer`` pads each batch with zero rows to
the next bucket and returns only the caller's rows, as TensorRT profiles and Triton's
``preferred_batch_size`` do. A bounded set of shapes means bounded memory, whatever sizes arrive.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from resnet_edge.atomic import sha256_file
from resnet_edge.errors import ArtifactMismatch, InvalidInput, ToolkitError
from runtime.precision import Precision, precision_of
from runtime.spec import Artifact, ModelSpec


@dataclass(frozen=True)
class Offer:
    """One way a backend runs an artifact: the precision it computes in, how parity and bench name it, the options
    it is created with."""

    precision: Precision
    label: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", precision_of(self.precision))


class Backend(ABC):
    name: ClassVar[str]

    static_shapes: bool = False

    @classmethod
    def offers(cls, art: Artifact, device: str, threads: int, gpu_index: int = 0,
               skipped: list[str] | None = None) -> list[Offer]:
        """The variants this backend runs ``art`` as on ``device`` (parity and bench try each); a line in
        ``skipped`` for one it cannot run there. By default: the artifact's own precision."""
        return [Offer(art.precision, f"{cls.name} {art.tag}", {"threads": threads})]

    def __init__(self, spec: ModelSpec, source: Path, *, precision: str | Precision = "fp32", max_batch: int = 64,
                 buckets: tuple[int, ...] | None = None, **options: Any) -> None:
        self.spec, self.source, self.max_batch = spec, Path(source), max_batch
        self.precision: Precision = precision_of(precision)
        self.buckets = bucket_sizes(max_batch, buckets)
        self.expected_sha256: dict[Path, str] = dict(options.pop("expected_sha256", None) or {})
        self.options = options
        self.loaded = False

    # -- the protocol -------------------------------------------------------------------------
    def load(self) -> Backend:
        if not self.loaded:
            if not self.source.exists():
                raise InvalidInput(f"{self.name}: model file {self.source} does not exist.")
            for path, sha in self.expected_sha256.items():  # the bytes about to be loaded are the ones verified
                if not path.is_file() or sha256_file(path) != sha:
                    raise ArtifactMismatch(f"{path} changed since its manifest was read (its sha256 differs); re-run "
                                           "the export or restore the file.")
            try:
                self._load()
            except ToolkitError:
                raise
            except Exception as exc:  # a library's own error on a bad file: one sentence, not its traceback
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
                raise ArtifactMismatch(f"The {self.name} backend could not load {self.source.name}: "
                                       f"{first[:300]}.") from None
            self.loaded = True
        return self

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, C, H, W] -> float32 logits [N, classes]."""
        if not self.loaded:
            raise ToolkitError(f"{self.name}: call load() (or use 'with') before infer().")
        self.validate(batch)
        if not self.static_shapes:
            return self._infer(batch)
        n = batch.shape[0]
        bucket = next(b for b in self.buckets if b >= n)
        if bucket == n:
            return self._infer(batch)
        padded = np.zeros((bucket, *batch.shape[1:]), np.float32)
        padded[:n] = batch
        return self._infer(padded)[:n]

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
        self.check_tensor(batch)
        if not 1 <= batch.shape[0] <= self.max_batch:
            raise InvalidInput(f"Batch size {batch.shape[0]} is outside 1..{self.max_batch}.")
        if not np.isfinite(batch).all():
            raise InvalidInput("Input contains NaN or Inf values.")

    def check_tensor(self, batch: np.ndarray) -> None:
        """Type, dtype and shape [N, C, H, W], whatever N: what a caller that splits batches checks once."""
        c, h, w = self.spec.chw
        if not isinstance(batch, np.ndarray):
            raise InvalidInput(f"Input must be a numpy array, not {type(batch).__name__}.")
        if batch.dtype != np.float32:
            raise InvalidInput(f"Input dtype must be float32, not {batch.dtype}.")
        if batch.ndim != 4 or batch.shape[1:] != (c, h, w):
            raise InvalidInput(f"Input shape must be [N, {c}, {h}, {w}], not {list(batch.shape)}.")

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


def bucket_sizes(max_batch: int, buckets: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The batch sizes a static-shape backend prepares: the given ones, or powers of two, always
    ending at ``max_batch`` so that every batch up to it has a bucket."""
    if max_batch < 1:
        raise InvalidInput(f"The batch limit must be at least 1, not {max_batch}.")
    if buckets is None:
        sizes = {1 << i for i in range(max_batch.bit_length()) if 1 << i < max_batch}
    else:
        if any(not isinstance(b, int) or b < 1 for b in buckets):
            raise InvalidInput(f"Batch buckets must be positive integers, not {list(buckets)}.")
        sizes = {b for b in buckets if b < max_batch}
    return tuple(sorted(sizes | {max_batch}))
