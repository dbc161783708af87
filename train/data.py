"""Fashion-MNIST from its IDX files, held in memory and batched as tensors.

There are no downloads: the files come from Debian's ``dataset-fashion-mnist``
package, a directory the user names, or a torchvision-style ``FashionMNIST/raw``.
Every batch is built with tensor indexing, never a per-sample Python loop.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from train.errors import DataError

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
class Split:
    images: torch.Tensor  # uint8 [N, 28, 28]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int | None) -> Split:
        return self if n is None or n >= len(self) else Split(self.images[:n], self.labels[:n])


@dataclass(frozen=True)
class FashionMNIST:
    train: Split
    test: Split
    sha256: str
    source: str
    class_names: tuple[str, ...] = CLASS_NAMES

    def stats(self) -> tuple[float, float]:
        """Mean and std of training pixels scaled to [0, 1]."""
        return pixel_stats(self.train.images)


def pixel_stats(images: torch.Tensor) -> tuple[float, float]:
    x = images.to(torch.float64) / 255.0
    return round(float(x.mean()), 6), round(float(x.std()), 6)


def load_fashion_mnist(data_dir: Path | str | None = None) -> FashionMNIST:
    """Load all 70k images as uint8 tensors; validates counts and label ranges."""
    paths = locate(data_dir)
    arrays = {key: read_idx(path) for key, path in paths.items()}
    digest = hashlib.sha256()
    for key in FILES:
        digest.update(paths[key].read_bytes())
    splits = {}
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
        splits[split] = Split(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))
    return FashionMNIST(splits["train"], splits["test"], digest.hexdigest(), str(paths["train_images"].parent))


# --------------------------------------------------------------------------- batching


@dataclass(frozen=True)
class Augment:
    """Augmentation applied to a whole uint8 batch at once."""

    crop_padding: int = 2
    hflip: bool = True
    erase_prob: float = 0.0  # random erasing (Zhong et al.), used by the full preset


def augment_batch(images: torch.Tensor, aug: Augment, gen: torch.Generator) -> torch.Tensor:
    """Padded random crop, horizontal flip and optional random erasing on [B, H, W] uint8."""
    b, h, w = images.shape
    out = images
    if aug.crop_padding > 0:
        p = aug.crop_padding
        padded = F.pad(images, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (b, 1), generator=gen)
        ox = torch.randint(0, 2 * p + 1, (b, 1), generator=gen)
        rows = (oy + torch.arange(h)).unsqueeze(2)
        cols = (ox + torch.arange(w)).unsqueeze(1)
        out = padded[torch.arange(b)[:, None, None], rows, cols]
    if aug.hflip:
        flip = torch.rand(b, generator=gen) < 0.5
        out = torch.where(flip[:, None, None], out.flip(-1), out)
    if aug.erase_prob > 0:
        area = torch.empty(b).uniform_(0.02, 0.25, generator=gen) * h * w
        ratio = torch.exp(torch.empty(b).uniform_(-1.2, 1.2, generator=gen))
        eh = (area * ratio).sqrt().clamp(1, h).long()
        ew = (area / ratio).sqrt().clamp(1, w).long()
        y0 = (torch.rand(b, generator=gen) * (h - eh + 1)).long()
        x0 = (torch.rand(b, generator=gen) * (w - ew + 1)).long()
        ys, xs = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
        box = (ys >= y0[:, None, None]) & (ys < (y0 + eh)[:, None, None])
        box = box & (xs >= x0[:, None, None]) & (xs < (x0 + ew)[:, None, None])
        box = box & (torch.rand(b, generator=gen) < aug.erase_prob)[:, None, None]
        out = out.masked_fill(box, 0)
    return out


def to_input(images: torch.Tensor, mean: float, std: float, image_size: int) -> torch.Tensor:
    """uint8 [B, H, W] -> normalised float32 [B, 1, S, S], exactly as the model was trained.

    Resizing (when ``image_size`` differs from the stored 28) is bilinear without
    antialiasing; the manifest records this so the runtime can do the same.
    """
    x = images.unsqueeze(1).to(torch.float32).div_(255.0)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x.sub_(mean).div_(std)


def augment_seed(seed: int, rank: int) -> int:
    """A well-mixed seed per (epoch seed, rank) pair for the augmentation generator."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0] >> 1)


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    mean: float,
    std: float,
    image_size: int = 28,
    shuffle: bool = False,
    seed: int = 0,
    augment: Augment | None = None,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (inputs, labels) batches; with ``world_size > 1`` each rank gets its shard.

    The order depends only on ``seed`` (every rank shuffles alike, then takes its shard);
    augmentation depends on ``seed`` and ``rank``, so ranks draw different crops and flips.
    A resumed epoch therefore sees the same batches as an uninterrupted one.
    """
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(augment_seed(seed, rank))
    n = len(split)
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    if world_size > 1:
        usable = (n // world_size) * world_size
        order = order[:usable][rank::world_size]
    device = torch.device(device)
    stop = len(order) - (len(order) % batch_size if drop_last else 0)
    for start in range(0, stop, batch_size):
        idx = order[start: start + batch_size]
        images = split.images[idx]
        if augment is not None:
            images = augment_batch(images, augment, aug_gen)
        if device.type == "cuda":
            images = images.pin_memory().to(device, non_blocking=True)
        yield to_input(images, mean, std, image_size), split.labels[idx].to(device, non_blocking=True)
