"""Fashion-MNIST from its IDX files, in numpy: the dataset every stage reads, with no torch.

There are no downloads: the files come from Debian's ``dataset-fashion-mnist`` package, a directory the user
names, or a torchvision-style ``FashionMNIST/raw``. ``train.data`` wraps these arrays as tensors for training;
the runtime and export read them as they are.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_edge.errors import DataError

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
EXPECTED = {"train": 60_000, "test": 10_000}
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
HOW_TO_GET = (
    "install Debian's package with 'apt-get install dataset-fashion-mnist', or put the four "
    "IDX files (train-images-idx3-ubyte[.gz] ...) in a directory and pass --data-dir DIR "
    "or set FASHION_MNIST_DIR"
)
_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzip-compressed or raw), checking magic, dimensions and size."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"Cannot read IDX file {path}: {exc}.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number).")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code not in _IDX_DTYPES or not 1 <= ndim <= 4:
        raise DataError(f"{path} has an unsupported IDX type 0x{dtype_code:02x} with {ndim} dims.")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its IDX header.")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) if dims else 0
    if len(raw) - header != expected:
        raise DataError(
            f"{path} holds {len(raw) - header} data bytes but its header {dims} needs {expected}."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def candidate_dirs(data_dir: Path | str | None = None) -> list[Path]:
    """Directories searched for the dataset, in order."""
    explicit = data_dir or os.environ.get("FASHION_MNIST_DIR")
    if explicit:
        return [Path(explicit)]
    return [Path("data/fashion-mnist"), Path("data/FashionMNIST/raw"), SYSTEM_DIR]


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def locate(data_dir: Path | str | None = None) -> dict[str, Path]:
    """Return the four IDX paths from the first directory that has all of them."""
    tried = candidate_dirs(data_dir)
    for directory in tried:
        found = {key: _find(directory, stem) for key, stem in FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    names = ", ".join(str(d) for d in tried)
    raise DataError(f"Fashion-MNIST not found (tried {names}); {HOW_TO_GET}.")


@dataclass(frozen=True)
class Arrays:
    """All 70k images as uint8 [N, 28, 28] and labels as int64 [N], validated."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    sha256: str
    source: str
    class_names: tuple[str, ...] = CLASS_NAMES


def load_arrays(data_dir: Path | str | None = None) -> Arrays:
    """Read and validate the four IDX files: counts, shapes and label ranges."""
    paths = locate(data_dir)
    arrays = {key: read_idx(path) for key, path in paths.items()}
    digest = hashlib.sha256()
    for key in FILES:
        digest.update(paths[key].read_bytes())
    out = {}
    for split, n in EXPECTED.items():
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{paths[f'{split}_images']} holds images of shape {images.shape[1:]}, not 28x28.")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(
                f"{split} split has {len(images)} images but {labels.shape[0]} labels; the files do not belong together."
            )
        if len(images) != n:
            raise DataError(f"{paths[f'{split}_images']} holds {len(images)} images; Fashion-MNIST has {n}.")
        if labels.max() >= len(CLASS_NAMES):
            raise DataError(f"{paths[f'{split}_labels']} has label {labels.max()}, outside 0-9.")
        out[f"{split}_images"], out[f"{split}_labels"] = images.copy(), labels.astype(np.int64)
    return Arrays(**out, sha256=digest.hexdigest(), source=str(paths["train_images"].parent))


def pixel_stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and std of uint8 pixels scaled to [0, 1], rounded to 6 digits (as the manifest records them)."""
    x = np.asarray(images, np.float64) / 255.0
    return round(float(x.mean()), 6), round(float(x.std(ddof=1)), 6)
