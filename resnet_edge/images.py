"""Model input from uint8 images, in numpy: the one preprocessing implementation of the toolkit.

The runtime (predict, serve, parity, bench), export's evaluation and calibration, and training's evaluation
transform all call :func:`to_input`. It scales to [0, 1], resizes bilinearly when the model's input size
differs from the stored image size (half-pixel centres, no antialiasing: what ``torch.nn.functional.interpolate``
does with ``mode="bilinear", align_corners=False``, which training used and the manifest records), and
normalises with the manifest's mean and std. A test holds it to the torch path within 1e-6.
"""

from __future__ import annotations

import numpy as np

MAX_PIXELS = 40_000_000  # refused before decoding, and before any resize step allocates its output


def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of a 1-D bilinear resize, as PyTorch computes them (align_corners=False)."""
    scale = np.float32(n_in) / np.float32(n_out)  # in float32, then the source position in double, as ATen does
    src = np.maximum(np.float64(scale) * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5, 0).astype(np.float32)
    lo = np.minimum(src.astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    w = (src - lo).astype(np.float32)
    return lo, hi, w


def resize_bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """float32 [..., H, W] -> [..., size, size], bilinear with half-pixel centres and no antialiasing."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    # Along W first, then H: PyTorch's order of operations, so that results agree to float32 rounding.
    lo, hi, wx = _taps(w, size)
    cols = x[..., lo] * (1 - wx) + x[..., hi] * wx
    lo, hi, wy = _taps(h, size)
    return (cols[..., lo, :] * (1 - wy)[:, None] + cols[..., hi, :] * wy[:, None]).astype(np.float32, copy=False)


def to_input(images: np.ndarray, mean, std, image_size: int) -> np.ndarray:
    """uint8 [N, H, W] (gray) or [N, H, W, C] -> normalised float32 [N, C, S, S].

    ``mean`` and ``std`` are per channel (a sequence) or one number for every channel."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        images = images.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"expected uint8 images [N, H, W] or [N, H, W, C], not shape {list(images.shape)}")
    x = images.astype(np.float32) / np.float32(255.0)
    x = resize_bilinear(x, image_size)
    c = x.shape[1]
    m = np.asarray(mean, np.float32).reshape(-1)
    s = np.asarray(std, np.float32).reshape(-1)
    if m.size not in (1, c) or s.size not in (1, c):
        raise ValueError(f"mean/std have {m.size}/{s.size} values for {c} channels")
    return np.ascontiguousarray((x - m.reshape(1, -1, 1, 1)) / s.reshape(1, -1, 1, 1), dtype=np.float32)


def fit_source(img, size: int, resize: int | None = None):
    """A PIL image -> the ``size`` x ``size`` source image a model's data is made of, by its resize policy:
    ``resize`` None stretches the image to the square (Fashion-MNIST's own images are that square already);
    otherwise the shorter side is resized to ``resize`` and the centre ``size`` x ``size`` is cropped, as
    torchvision's ``Resize(resize)`` + ``CenterCrop(size)`` do. Bilinear throughout.

    Every intermediate image is bounded by ``MAX_PIXELS`` before Pillow allocates it: a 1x20,000 image whose
    shorter side goes to 256 would otherwise ask for 256x5,120,000 pixels (~4.9 GB in RGB). The ValueError
    reads as a predicate of "the image" ("is 1x20000 and would be ...")."""
    from PIL import Image

    bilinear = Image.Resampling.BILINEAR
    if resize is None:
        return img if img.size == (size, size) else img.resize((size, size), bilinear, reducing_gap=None)
    w, h = img.size
    if min(w, h) != resize:  # torchvision: the shorter side becomes ``resize``, the longer keeps the aspect
        nw, nh = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
        if nw * nh > MAX_PIXELS:
            raise ValueError(f"is {w}x{h} and would be {nw}x{nh} after resizing its shorter side to {resize}, over "
                             f"the {MAX_PIXELS:,}-pixel limit")
        img = img.resize((nw, nh), bilinear, reducing_gap=None)
        w, h = nw, nh
    if (w, h) == (size, size):
        return img
    if w < size or h < size:
        raise ValueError(f"is {w}x{h} after resizing and cannot be centre-cropped to {size}x{size}")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def policy_text(size: int, resize: int | None) -> str:
    """The resize policy in words, as the manifest and the CLI show it."""
    if resize is None:
        return f"resize to {size}x{size} (bilinear)"
    return f"resize the shorter side to {resize} (bilinear), then centre-crop {size}x{size}"


def eval_batch(image_size: int, cap: int = 1000) -> int:
    """Images per inference batch when evaluating many: 1,000 at 28 px, fewer as the input grows (62 at 224 px),
    so that a large model's activations stay within a few GB."""
    return max(1, min(cap, 3_200_000 // (image_size * image_size)))
