"""Image -> model input, exactly as training prepared it. The server uses the same code.

Any PNG, JPEG or .npy of any size, RGB or gray, becomes the 28x28 uint8 grayscale image
Fashion-MNIST is made of (PIL antialiased resize), then goes through the training
pipeline's own ``to_input`` (scale to [0, 1], resize to the model's input size, normalise
with the manifest's mean/std).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from runtime.spec import ModelSpec
from train.data import load_fashion_mnist, to_input
from train.errors import InvalidInput

MAX_PIXELS = 40_000_000  # refuse decompression bombs before decoding


def decode(data: bytes, name: str = "image") -> np.ndarray:
    """Bytes of a PNG/JPEG/.npy -> uint8 [H, W] grayscale."""
    if data[:6] == b"\x93NUMPY":
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            raise InvalidInput(f"{name} is not a readable .npy array ({exc}).") from None
        return _array_to_gray(arr, name)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise InvalidInput(f"{name} is {img.width}x{img.height}; images over {MAX_PIXELS:,} pixels are refused.")
            img.load()
            return np.asarray(img.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InvalidInput(f"{name} cannot be decoded as PNG, JPEG or .npy ({type(exc).__name__}).") from None


def _array_to_gray(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # HWC RGB(A) -> luma, as PIL's "L" does
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    elif arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InvalidInput(f"{name} has shape {list(arr.shape)}; expected [H, W], [1, H, W] or [H, W, 3].")
    if not np.isfinite(arr).all():
        raise InvalidInput(f"{name} contains NaN or Inf values.")
    if arr.dtype != np.uint8:  # floats in [0, 1] or any range of ints
        arr = arr * 255.0 if arr.dtype.kind == "f" and arr.max() <= 1.0 else arr
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return arr


def to_source_size(gray: np.ndarray, size: int = 28) -> np.ndarray:
    if gray.shape == (size, size):
        return gray
    from PIL import Image

    return np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None))


def preprocess(images: list[np.ndarray], spec: ModelSpec) -> np.ndarray:
    """uint8 grayscale images of any size -> float32 [N, C, H, W] model input."""
    batch = torch.from_numpy(np.stack([to_source_size(g, spec.source_size) for g in images]))
    return to_input(batch, spec.mean[0], spec.std[0], spec.image_size).numpy()


def load_image_files(paths: list[Path], spec: ModelSpec) -> np.ndarray:
    return preprocess([decode(Path(p).read_bytes(), str(p)) for p in paths], spec)


def load_test_inputs(spec: ModelSpec, limit: int | None = None, data_dir: Path | None = None):
    """The real test set as model inputs and labels (first ``limit`` images)."""
    test = load_fashion_mnist(data_dir).test.subset(limit)
    return to_input(test.images, spec.mean[0], spec.std[0], spec.image_size).numpy(), test.labels.numpy()


def load_calibration_inputs(spec: ModelSpec, n: int = 300, data_dir: Path | None = None, seed: int = 0) -> np.ndarray:
    """``n`` training images as model inputs: the first of the seeded permutation the export's INT8
    calibration draws from, so that peers calibrate on images our export calibrated on too."""
    train_split = load_fashion_mnist(data_dir).train
    idx = torch.randperm(len(train_split), generator=torch.Generator().manual_seed(seed))[:n]
    return to_input(train_split.images[idx], spec.mean[0], spec.std[0], spec.image_size).numpy()
