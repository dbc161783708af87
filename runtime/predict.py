"""Classify images with verified artifacts: ``runtime.load(ARTIFACTS) -> Predictor``, no torch needed.

    import runtime

    with runtime.load("artifacts") as model:                  # backend="auto": fastest that passes parity here
        for top in model.predict(["shoe.png", pil_image, uint8_array], k=3):
            print(top)                                         # [Prediction(label='Sneaker', index=7, probability=0.97), ...]
        logits = model.logits(batch)                           # a preprocessed float32 [N, C, H, W] batch

The Predictor owns one backend. It splits inputs larger than its batch limit, pads to the backend's batch
buckets, and computes softmax and top-k; the server runs its requests through one too.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np

from resnet_edge.errors import InvalidInput
from runtime.preprocess import INVERT_CHOICES, check_invert, decode, from_pil, preprocess, read_file, to_channels
from runtime.spec import Artifacts, ModelSpec, load_artifacts
from runtime.variants import Variant


class Prediction(NamedTuple):
    label: str
    index: int
    probability: float


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, k: int, class_names: tuple[str, ...]) -> list[list[Prediction]]:
    """Per row of logits, the ``k`` most probable classes, most probable first (ties: lower index first)."""
    if not 1 <= k <= len(class_names):
        raise InvalidInput(f"k must be in 1..{len(class_names)}, not {k}.")
    probs = softmax(logits)
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return [[Prediction(class_names[i], int(i), float(p[i])) for i in row] for p, row in zip(probs, order)]


def to_gray_image(image: Any, name: str | None = None, channels: int = 1) -> np.ndarray:
    """A file path, PIL image or array (H×W, H×W×C, or 1×H×W) -> uint8 grayscale [H, W], or RGB [H, W, 3] for a
    3-channel model."""
    if isinstance(image, (str, Path)):
        return decode(read_file(Path(image)), str(image), channels)
    if isinstance(image, np.ndarray):
        return to_channels(image, name or "the array", channels)
    if hasattr(image, "convert") and hasattr(image, "width"):  # a PIL image
        return from_pil(image, name or "the PIL image", channels)
    raise InvalidInput(f"Cannot classify a {type(image).__name__}; give file paths, PIL images or uint8 arrays.")


class Predictor:
    """One loaded variant: ``predict`` for images, ``logits`` for preprocessed batches. A context manager."""

    def __init__(self, arts: Artifacts, variant: Variant, *, max_batch: int = 64, load: bool = True) -> None:
        self.arts, self.variant, self.max_batch = arts, variant, max_batch
        self.backend = variant.create(arts, max_batch=max_batch)
        self.loaded = False
        if load:
            self.load()

    @property
    def spec(self) -> ModelSpec:
        return self.arts.spec

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    def load(self) -> Predictor:
        if not self.loaded:
            self.backend.load()
            self.loaded = True
        return self

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, C, H, W] model input -> float32 [N, classes], ``max_batch`` rows at a time."""
        batch = np.asarray(batch)
        self.backend.check_tensor(batch)  # once; each chunk's batch limit and values are checked by infer
        if not len(batch):
            return np.zeros((0, self.spec.num_classes), np.float32)
        self.load()
        return np.concatenate([self.backend.infer(np.ascontiguousarray(batch[i:i + self.max_batch]))
                               for i in range(0, len(batch), self.max_batch)])

    def prepare(self, images: Any, invert: str = "no") -> np.ndarray:
        """Images (see :func:`to_gray_image`; one or a list) -> the preprocessed float32 batch."""
        check_invert(invert)
        items = images if isinstance(images, (list, tuple)) else [images]
        return preprocess([to_gray_image(im, channels=self.spec.channels) for im in items], self.spec, invert)

    def predict(self, images: Any, k: int = 1, invert: str = "no") -> list[list[Prediction]]:
        """For each image (a path, a PIL image or a uint8 array; one or a list), its top ``k`` predictions as
        ``(label, index, probability)``. ``invert``: ``auto`` inverts images with a light background."""
        if not 1 <= k <= self.spec.num_classes:
            raise InvalidInput(f"k must be in 1..{self.spec.num_classes}, not {k}.")
        return top_k(self.logits(self.prepare(images, invert)), k, self.class_names)

    def describe(self) -> str:
        return self.variant.label

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Predictor:
        return self.load()

    def __exit__(self, *exc) -> None:
        self.close()


def load(artifacts: str | Path = "artifacts", backend: str = "auto", precision: str = "fp32", *, threads: int = 0,
         max_batch: int = 64, device: str = "cpu", gpu_index: int = 0) -> Predictor:
    """Verified artifacts -> a loaded :class:`Predictor`. ``backend``: auto (the fastest variant here that
    passes parity against the golden set or the reference program), onnxruntime, openvino, torch or tensorrt;
    ``precision`` (fp32, fp16, bf16, int8, int8-cpu) applies to an explicit backend; ``device="vulkan"`` runs ncnn
    on Vulkan device ``gpu_index``."""
    from runtime.select import choose_variant

    if not 1 <= max_batch <= 4096:
        raise InvalidInput("max_batch must be in 1..4096.")
    arts = load_artifacts(artifacts)
    choice = SimpleNamespace(backend=backend, precision=precision, threads=threads, max_batch_size=max_batch,
                             device=device, gpu_index=gpu_index)
    return Predictor(arts, choose_variant(arts, choice), max_batch=max_batch)


__all__ = ["INVERT_CHOICES", "Prediction", "Predictor", "load", "softmax", "top_k"]
