"""Fashion-MNIST from its IDX files, held in memory and batched as tensors.

There are no downloads: the files come from Debian's ``dataset-fashion-mnist``
package, a directory the user names, or a torchvision-style ``FashionMNIST/raw``.
Every batch is built with tensor indexing, never a per-sample Python loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from resnet_edge import fmnist, folders, splits
from resnet_edge.fmnist import CLASS_NAMES, locate, read_idx  # noqa: F401 - the dataset's API, re-exported for training
from resnet_edge.images import to_input as to_input_np


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 [N, H, W] (gray) or [N, H, W, C]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int | None) -> Split:
        return self if n is None or n >= len(self) else Split(self.images[:n], self.labels[:n])

    def take(self, idx: np.ndarray) -> Split:
        idx = torch.as_tensor(np.asarray(idx, np.int64))
        return Split(self.images[idx], self.labels[idx])


@dataclass(frozen=True)
class FashionMNIST:
    train: Split
    test: Split
    sha256: str
    source: str
    class_names: tuple[str, ...] = CLASS_NAMES
    validation: Split | None = None  # carved from the training images by with_validation
    split: dict[str, Any] | None = None  # what the checkpoint records of the split (resnet_edge.splits)
    channels = 1
    source_size = 28  # the stored images' size; the resize policy: stretch to it (they are 28x28 already)
    source_resize = None

    def stats(self) -> tuple[float, float]:
        """Mean and std of training pixels scaled to [0, 1]."""
        return pixel_stats(self.train.images)

    def with_validation(self, cap: int, seed: int) -> FashionMNIST:
        """The training images less a seeded validation split (a tenth, at most ``cap``; 0: none), which
        chooses the epoch, so that the test set is read only to report."""
        size = splits.validation_size(len(self.train), cap)
        record: dict[str, Any] = {"seed": seed, "evaluation": {"source": "the Fashion-MNIST test set (t10k)",
                                                               "n": len(self.test)}}
        if size == 0:
            return replace(self, split={**record, "validation": None})
        train_idx, val_idx = splits.carve(len(self.train), size, seed)
        record["validation"] = {"source": "carved from the Fashion-MNIST training images", "n": size,
                                "indices": val_idx.tolist(), "sha256": splits.digest(val_idx.tolist())}
        return replace(self, train=self.train.take(train_idx), validation=self.train.take(val_idx), split=record)


@dataclass(frozen=True)
class FolderData:
    """An image folder decoded into memory at its source size (``resnet_edge.folders``), shaped like
    :class:`FashionMNIST` so that training, evaluation and export take either."""

    train: Split
    test: Split
    sha256: str
    source: str
    class_names: tuple[str, ...]
    channels: int
    source_size: int
    source_resize: int | None
    validation: Split | None = None
    split: dict[str, Any] | None = None

    def with_validation(self, cap: int, seed: int) -> FolderData:
        return self  # load_image_folder carved it already, by file

    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the training images scaled to [0, 1]."""
        return folders.channel_stats(self.train.images.numpy())


def _pick(split: folders.FolderSplit, idx) -> folders.FolderSplit:
    return folders.FolderSplit(tuple(split.paths[i] for i in idx), split.labels[np.asarray(idx, np.int64)])


def relative(paths, root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def load_image_folder(root: Path | str, size: int, resize: int | None = None, channels: int | None = None, *,
                      validation: int = splits.VALIDATION_MAX, seed: int = 0, console=None) -> FolderData:
    """``root`` decoded at ``size`` for training (see ``resnet_edge.images.fit_source`` for ``resize``).

    The evaluation split is its split folder (``folders.scan``), or a seeded 10% held out of a folder without
    one. The validation split that chooses the epoch is its validation folder (train/ + val/ + test/), or a
    seeded tenth (at most ``validation``; 0: none) carved from the training images. The record of both goes
    into the checkpoint (``FolderData.split``), which ``eval`` and ``export`` follow.
    ``channels`` None: 3 if the images have colour, else 1."""
    root = Path(root)
    found = folders.scan(root)
    first = found.train if found.train is not None else found.val
    channels = channels or folders.detect_channels(first)
    record: dict[str, Any] = {"seed": seed}
    # The evaluation split comes in a seeded random order, so that its first N images (export --limit, a
    # subset) sample every class rather than the first class folders.
    if found.train is not None:
        train, test = found.train, _pick(found.val, splits.permutation(len(found.val), seed))
        record["evaluation"] = {"source": f"{found.val_name}/", "n": len(test),
                                "sha256": splits.digest(sorted(relative(test.paths, root)))}
    else:
        train_idx, test_idx = splits.holdout(len(found.val), splits.HOLDOUT, seed)
        train, test = _pick(found.val, train_idx), _pick(found.val, test_idx)
        files = relative(test.paths, root)
        record["evaluation"] = {"source": f"a seeded {splits.HOLDOUT:.0%} held out of the class folders",
                                "n": len(test), "files": files, "sha256": splits.digest(files)}
    val = found.validation
    if val is not None:
        record["validation"] = {"source": f"{found.validation_name}/", "n": len(val)}
    elif (n_val := splits.validation_size(len(train), validation)) > 0:
        train_idx, val_idx = splits.carve(len(train), n_val, seed)
        train, val = _pick(train, train_idx), _pick(train, val_idx)
        files = relative(val.paths, root)
        record["validation"] = {"source": "carved from the training images", "n": n_val, "files": files,
                                "sha256": splits.digest(files)}
    else:
        record["validation"] = None
    parts = {"train": train, "validation": val, "evaluation": test}
    decoded = _decode_parts({k: v for k, v in parts.items() if v is not None}, size, resize, channels, console)
    h = hashlib.sha256()
    for name, split in parts.items():
        if split is not None:
            h.update(folders.fingerprint(split, decoded[name]).encode())
    to_split = lambda name: Split(torch.from_numpy(decoded[name]), torch.from_numpy(parts[name].labels))  # noqa: E731
    return FolderData(to_split("train"), to_split("evaluation"), h.hexdigest(), str(root), found.classes, channels,
                      size, resize, to_split("validation") if val is not None else None, record)


def _decode_parts(parts: dict[str, folders.FolderSplit], size: int, resize: int | None, channels: int,
                  console=None) -> dict[str, np.ndarray]:
    """Each split's images decoded under one progress bar per split."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    decoded = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=False) as bar:
        for name, split in parts.items():
            task = bar.add_task(f"decoding {name} images ({channels} ch, {size} px)", total=len(split))
            decoded[name] = folders.decode_all(split.paths, size, resize, channels,
                                               progress=lambda k, t=task: bar.advance(t, k))
    return decoded


def pixel_stats(images: torch.Tensor) -> tuple[float, float]:
    return fmnist.pixel_stats(images.numpy())


def load_fashion_mnist(data_dir: Path | str | None = None) -> FashionMNIST:
    """Load all 70k images as uint8 tensors; validates counts and label ranges."""
    a = fmnist.load_arrays(data_dir)
    return FashionMNIST(Split(torch.from_numpy(a.train_images), torch.from_numpy(a.train_labels)),
                        Split(torch.from_numpy(a.test_images), torch.from_numpy(a.test_labels)), a.sha256, a.source)


# --------------------------------------------------------------------------- batching


@dataclass(frozen=True)
class Augment:
    """Augmentation applied to a whole uint8 batch at once."""

    crop_padding: int = 2
    hflip: bool = True
    erase_prob: float = 0.0  # random erasing (Zhong et al.), used by the full preset


def augment_batch(images: torch.Tensor, aug: Augment, gen: torch.Generator) -> torch.Tensor:
    """Padded random crop, horizontal flip and optional random erasing on uint8 [B, H, W] or [B, H, W, C]."""
    if images.ndim == 4:  # channels last: the same crop, flip and box for every channel of an image
        return _augment_nchw(images.permute(0, 3, 1, 2), aug, gen).permute(0, 2, 3, 1).contiguous()
    return _augment_nchw(images.unsqueeze(1), aug, gen).squeeze(1)


def _augment_nchw(images: torch.Tensor, aug: Augment, gen: torch.Generator) -> torch.Tensor:
    b, c, h, w = images.shape
    out = images
    if aug.crop_padding > 0:
        p = aug.crop_padding
        padded = F.pad(images, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (b, 1), generator=gen)
        ox = torch.randint(0, 2 * p + 1, (b, 1), generator=gen)
        rows = (oy + torch.arange(h)).unsqueeze(2)
        cols = (ox + torch.arange(w)).unsqueeze(1)
        out = padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None],
                     rows[:, None], cols[:, None]]
    if aug.hflip:
        flip = torch.rand(b, generator=gen) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
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
        out = out.masked_fill(box[:, None], 0)
    return out


def to_input(images: torch.Tensor, mean: float, std: float, image_size: int) -> torch.Tensor:
    """uint8 [B, H, W] or [B, H, W, C] -> normalised float32 [B, C, S, S], exactly as the model was trained.

    Resizing (when ``image_size`` differs from the stored 28) is bilinear without antialiasing; the manifest
    records this. On the CPU this is the toolkit's one numpy implementation (``resnet_edge.images``), which
    the runtime, export and evaluation use too; images already on a GPU take the same arithmetic in torch
    (a test holds the two within 1e-6).
    """
    if images.device.type == "cpu":
        return torch.from_numpy(to_input_np(images.numpy(), mean, std, image_size))
    return to_input_torch(images, mean, std, image_size)


def to_input_torch(images: torch.Tensor, mean, std, image_size: int) -> torch.Tensor:
    if isinstance(mean, (tuple, list)) or isinstance(std, (tuple, list)):  # per channel
        mean = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    x = (images.permute(0, 3, 1, 2) if images.ndim == 4 else images.unsqueeze(1)).to(torch.float32).div_(255.0)
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
