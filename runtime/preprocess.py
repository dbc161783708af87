"""Image -> model input, exactly as training prepared it, in numpy and Pillow (no torch).

Any PNG, JPEG, WebP or .npy of any size, RGB or gray, is decoded to the model's channels (``L`` for a 1-channel
model, ``RGB`` for a 3-channel one) and brought to the source image the model's data is made of by the manifest's
resize policy (``resnet_edge.images.fit_source``: Fashion-MNIST's 28x28 by a bilinear resize; an image-folder
model's shorter-side resize and centre crop), optionally inverted (gray models only), then goes through the
toolkit's one ``to_input`` (``resnet_edge.images``: scale to [0, 1], resize to the model's input size, normalise
with the manifest's per-channel mean/std). Predict, the server, parity and bench all come through here.

Inversion: Fashion-MNIST shows light garments on a black background; a product photo is usually a dark
object on a light one. ``invert="auto"`` inverts an image whose border (the outer 2 pixels of the 28x28
image) is on average brighter than mid-grey; ``"yes"`` and ``"no"`` force it.

Transparency: a PNG or WebP with transparent pixels is composited on the background the model was trained on
(``ModelSpec.background``: Fashion-MNIST's black, after any inversion; an image-folder model's mean colour), not on
whatever colour the transparent pixels happen to hold. ``invert="auto"`` judges a cutout as shown on a white page
(a shop's transparent product image is a product photo without its page), so a cutout with a transparent border
is inverted, and its background still ends up black.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from resnet_edge import fmnist
from resnet_edge.errors import InvalidInput
from resnet_edge.images import MAX_PIXELS, fit_source, to_input
from runtime.spec import ModelSpec

INVERT_CHOICES = ("auto", "yes", "no")
BORDER = 2


FORMATS = ("PNG", "JPEG", "WEBP")  # what predict and /v1/classify decode (besides .npy); Pillow knows many more,
# EPS among them, which runs Ghostscript where it is installed: none of those is opened


def decode(data: bytes, name: str = "image", channels: int = 1) -> np.ndarray:
    """Bytes of a PNG/JPEG/WebP/.npy -> uint8 [H, W] grayscale, or [H, W, 3] RGB for ``channels=3``."""
    if data[:6] == b"\x93NUMPY":
        return to_channels(_npy(data, name), name, channels)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            return from_pil(img, name, channels)
    except UnidentifiedImageError:
        raise InvalidInput(f"{name} cannot be decoded as an image: it is not a PNG, JPEG, WebP or .npy file.") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # ValueError: a text chunk
        raise InvalidInput(f"{name} cannot be decoded as an image ({type(exc).__name__}).") from None  # past limit


def _npy(data: bytes, name: str) -> np.ndarray:
    """An .npy file's array, its header read and checked before any memory is taken: a shape it declares must
    fit the bytes that follow and the pixel limit, its dtype must be numbers."""
    from numpy.lib import format as npy

    f = io.BytesIO(data)
    try:
        version = npy.read_magic(f)
        header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = header(f, max_header_size=10_000)
    except (ValueError, SyntaxError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"{name} is not a readable .npy array ({str(exc)[:120]}).") from None
    if dtype.kind not in "biuf" or dtype.hasobject:
        raise InvalidInput(f"{name} holds {dtype}; expected numbers.")
    count = int(np.prod(shape, dtype=object))
    if count > 4 * MAX_PIXELS or count * dtype.itemsize != len(data) - f.tell():
        raise InvalidInput(f"{name} declares shape {list(shape)[:8]} of {dtype}, which the {len(data) - f.tell():,} "
                           "bytes that follow do not hold (or over the pixel limit).")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=f.tell())
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def from_pil(img, name: str = "image", channels: int = 1) -> np.ndarray:
    """A PIL image (not yet decoded is fine) -> uint8 [H, W] grayscale (or [H, W, 3] RGB for ``channels=3``),
    refusing decompression bombs, turned upright by its EXIF orientation, 16-bit samples scaled (not clipped) to 8
    bits. An image with transparent pixels keeps its alpha as a last channel ([H, W, 2] or [H, W, 4]) for
    :func:`to_source` to composite on the model's background."""
    from PIL import ImageOps

    if img.width * img.height > MAX_PIXELS:
        raise InvalidInput(f"{name} is {img.width}x{img.height}; images over {MAX_PIXELS:,} pixels are refused.")
    img.load()
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16-bit gray: PIL's "L" would clip it at 255
        return to_channels(np.asarray(img).astype(np.uint16 if img.mode != "I" else np.int32), name, channels)
    if "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info:
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.uint8)
        if alpha.min() < 255:
            color = np.asarray(rgba.convert("RGB" if channels == 3 else "L"), dtype=np.uint8)
            return np.dstack([color, alpha])
        img = rgba
    return np.asarray(img.convert("RGB" if channels == 3 else "L"), dtype=np.uint8)


def to_channels(arr: np.ndarray, name: str = "image", channels: int = 1) -> np.ndarray:
    """An array image ([H, W], [1, H, W], [H, W, 3|4]; uint8, other ints, or floats in [0, 1]) -> uint8 [H, W],
    or [H, W, 3] for ``channels=3`` (a gray array repeated into three channels)."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise InvalidInput(f"{name} has dtype {arr.dtype}; expected numbers.")
    if channels == 3 and arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return _as_uint8(arr[..., :3], name)
    if channels == 3:
        return np.repeat(to_channels(arr, name)[..., None], 3, axis=-1)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # HWC RGB(A) -> luma, as PIL's "L" does
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    elif arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    elif arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InvalidInput(f"{name} has shape {list(arr.shape)}; expected [H, W], [1, H, W] or [H, W, 3].")
    return _as_uint8(arr, name)


def _as_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    """[H, W] or [H, W, 3] numbers -> uint8: floats in [0, 1] are scaled by 255, everything is clipped."""
    if min(arr.shape) < 1:
        raise InvalidInput(f"{name} has shape {list(arr.shape)}; expected [H, W], [1, H, W] or [H, W, 3].")
    if arr.shape[0] * arr.shape[1] > MAX_PIXELS:
        raise InvalidInput(f"{name} has {arr.shape[0] * arr.shape[1]:,} pixels; images over {MAX_PIXELS:,} pixels "
                           "are refused.")
    if arr.dtype.kind not in "biuf":
        raise InvalidInput(f"{name} has dtype {arr.dtype}; expected numbers.")
    if not np.isfinite(arr).all():
        raise InvalidInput(f"{name} contains NaN or Inf values.")
    if arr.dtype.kind == "u" and arr.dtype.itemsize > 1:  # 16-bit (or wider) samples: their full range to 8 bits
        arr = arr.astype(np.float64) * (255.0 / np.iinfo(arr.dtype).max)
    if arr.dtype != np.uint8:  # floats in [0, 1] or any range of ints
        arr = arr * 255.0 if arr.dtype.kind == "f" and arr.max() <= 1.0 else arr
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return arr


def to_source_size(image: np.ndarray, size: int = 28, resize: int | None = None) -> np.ndarray:
    """uint8 [H, W] or [H, W, 3] -> [size, size(, 3)] by the resize policy (``resnet_edge.images.fit_source``)."""
    if image.shape[:2] == (size, size) and resize in (None, size):
        return image
    from PIL import Image

    try:
        return np.asarray(fit_source(Image.fromarray(image), size, resize))
    except ValueError as exc:
        raise InvalidInput(f"The image {exc}.") from None


def needs_inversion(gray: np.ndarray) -> bool:
    """A light background (the border brighter than mid-grey): the opposite of Fashion-MNIST's."""
    b = BORDER
    border = np.concatenate([gray[:b].ravel(), gray[-b:].ravel(), gray[b:-b, :b].ravel(), gray[b:-b, -b:].ravel()])
    return float(border.mean()) > 127.5


def check_invert(invert: str) -> str:
    if invert not in INVERT_CHOICES:
        raise InvalidInput(f"--invert must be one of {', '.join(INVERT_CHOICES)}, not '{invert}'.")
    return invert


def split_alpha(image: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """What :func:`from_pil` decoded -> (the colour image, its uint8 alpha or None where every pixel is opaque)."""
    if image.ndim == 3 and image.shape[-1] == channels + 1 and image.dtype == np.uint8:
        return image[..., :channels].squeeze(-1) if channels == 1 else image[..., :channels], image[..., channels]
    return image, None


def composite(image: np.ndarray, alpha: np.ndarray, background: tuple[int, ...]) -> np.ndarray:
    """uint8 colour over a uint8 background by a uint8 alpha, rounded back to uint8."""
    a = alpha.astype(np.float32)[..., None] / 255.0 if image.ndim == 3 else alpha.astype(np.float32) / 255.0
    bg = np.asarray(background, dtype=np.float32) if image.ndim == 3 else np.float32(background[0])
    return np.clip(np.rint(image * a + bg * (1.0 - a)), 0, 255).astype(np.uint8)


def to_source(image: np.ndarray, spec: ModelSpec, invert: str = "no") -> np.ndarray:
    """uint8 [H, W] (or [H, W, 3] for an RGB model; either with an alpha channel from :func:`from_pil`) of any size
    -> the uint8 source-size image the model's data is made of. Inversion applies to gray models only
    (Fashion-MNIST's light-on-dark convention); transparent pixels end up as the model's background."""
    check_invert(invert)
    image, alpha = split_alpha(image, spec.channels)
    if spec.channels == 3 and image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    elif spec.channels == 1 and image.ndim == 3:
        image = to_channels(image)
    flip = spec.channels == 1 and (invert == "yes" or (invert == "auto" and alpha is not None and needs_inversion(
        to_source_size(composite(image, alpha, (255,)), spec.source_size, spec.source_resize))))
    if alpha is not None:  # at full size, before any resampling mixes hidden colours into the edges
        bg = spec.background
        image = composite(image, alpha, tuple(255 - v for v in bg) if flip else bg)
    img = to_source_size(image, spec.source_size, spec.source_resize)
    if flip or (spec.channels == 1 and invert == "auto" and alpha is None and needs_inversion(img)):
        img = 255 - img
    return img


def preprocess(images: list[np.ndarray], spec: ModelSpec, invert: str = "no") -> np.ndarray:
    """uint8 images of any size (decoded for ``spec.channels``) -> float32 [N, C, H, W] model input."""
    batch = np.stack([to_source(g, spec, invert) for g in images])
    return to_input(batch, spec.mean, spec.std, spec.image_size)


def load_image_files(paths: list[Path], spec: ModelSpec, invert: str = "no") -> np.ndarray:
    return preprocess([decode(read_file(p), str(p), spec.channels) for p in paths], spec, invert)


def read_file(path: Path) -> bytes:
    """A file's bytes, or one sentence saying why not."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"{path} does not exist.") from None
    except IsADirectoryError:
        raise InvalidInput(f"{path} is a directory, not an image file.") from None
    except OSError as exc:
        raise InvalidInput(f"{path} cannot be read ({exc.strerror}).") from None


def load_test_inputs(spec: ModelSpec, limit: int | None = None, data_dir: Path | None = None):
    """The real test set as model inputs and labels (first ``limit`` images)."""
    a = fmnist.load_arrays(data_dir)
    images, labels = a.test_images[:limit], a.test_labels[:limit]
    return to_input(images, spec.mean, spec.std, spec.image_size), labels


def load_calibration_inputs(spec: ModelSpec, indices: tuple[int, ...], n: int = 300,
                            data_dir: Path | None = None) -> np.ndarray:
    """The training images export's INT8 calibration drew (``indices``, recorded in the manifest's evaluation), the
    first ``n`` of them, as model inputs: bench's INT8 peers calibrate on exactly the images ours did."""
    if not spec.reads_fashion_mnist:
        from resnet_edge.errors import DataError

        raise DataError(f"this model reads {spec.channels}-channel {spec.source_size} px images of its own folder, not "
                        "Fashion-MNIST's, and bench has no training images of it")
    if not indices:
        from resnet_edge.errors import DataError

        raise DataError("its manifest records no calibration images (exported by an older resnet-edge, or with "
                        "--precision fp32,fp16); re-export it")
    a = fmnist.load_arrays(data_dir)
    idx = np.asarray(indices[:n], np.int64)
    if idx.min() < 0 or idx.max() >= len(a.train_images):
        from resnet_edge.errors import DataError

        raise DataError(f"its manifest's calibration indices do not fit the {len(a.train_images):,} training images here")
    return to_input(a.train_images[idx], spec.mean, spec.std, spec.image_size)


def eval_inputs(arts, limit: int | None = None, data_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labelled model inputs: the real test set where the dataset is here, else the artifacts' golden set
    (an edge device has the artifacts but not the dataset)."""
    from resnet_edge.errors import DataError

    try:
        if not arts.spec.reads_fashion_mnist:  # an image-folder model: Fashion-MNIST's test set does not fit it
            raise DataError("not a Fashion-MNIST model")
        return load_test_inputs(arts.spec, limit, data_dir)
    except DataError:
        images, labels, _ = arts.golden()
        return to_input(images[:limit], arts.spec.mean, arts.spec.std, arts.spec.image_size), labels[:limit]
