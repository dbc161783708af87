"""Fashion-MNIST from its IDX files, held in memory and batched as tensors.

There are no downloads: the files come from Debian's ``dataset-fashion-mnist``
package, a directory the user names, or a torchvision-style ``FashionMNIST/raw``.
Every batch is built with tensor indexing, never a per-sample Python loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from resnet_edge import fmnist, folders
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


@dataclass(frozen=True)
class FashionMNIST:
    train: Split
    test: Split
    sha256: str
    source: str
    class_names: tuple[str, ...] = CLASS_NAMES
    channels = 1
    source_size = 28  # the stored images' size; the resize policy: stretch to it (they are 28x28 already)
    source_resize = None

    def stats(self) -> tuple[float, float]:
        """Mean and std of training pixels scaled to [0, 1]."""
        return pixel_stats(self.train.images)


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

    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the training images scaled to [0, 1]."""
        return folders.channel_stats(self.train.images.numpy())


def load_image_folder(root: Path | str, size: int, resize: int | None = None, channels: int | None = None, *,
                      holdout: float = 0.1, seed: int = 0, console=None) -> FolderData:
    """``root`` decoded at ``size`` (see ``resnet_edge.images.fit_source`` for ``resize``). With train/ and
    val/ subfolders those are the splits; otherwise a seeded ``holdout`` fraction is the evaluation split
    (``holdout=1`` evaluates on every image: ``eval`` and ``export`` of a folder without a split).
    ``channels`` None: 3 if the images have colour, else 1."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    found = folders.scan(root)
    first = found.train if found.train is not None else found.val
    channels = channels or folders.detect_channels(first)
    # The evaluation split comes in a seeded random order, so that its first N images (export --limit, a
    # subset) sample every class rather than the first class folders.
    pick = lambda s, idx: folders.FolderSplit(tuple(s.paths[i] for i in idx), s.labels[idx])  # noqa: E731
    rng = np.random.default_rng(seed)
    if found.train is not None:
        parts = {"train": found.train, "val": pick(found.val, rng.permutation(len(found.val)))}
    else:
        n = len(found.val)
        order = rng.permutation(n)
        k = n if holdout >= 1 else max(1, int(round(n * holdout)))
        parts = {"train": pick(found.val, np.sort(order[k:])), "val": pick(found.val, order[:k])}
    decoded = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=False) as bar:
        for name, split in parts.items():
            task = bar.add_task(f"decoding {name} images ({channels} ch, {size} px)", total=len(split))
            decoded[name] = folders.decode_all(split.paths, size, resize, channels,
                                               progress=lambda k, t=task: bar.advance(t, k))
    h = hashlib.sha256()
    for name, split in parts.items():
        h.update(folders.fingerprint(split, decoded[name]).encode())
    return FolderData(Split(torch.from_numpy(decoded["train"]), torch.from_numpy(parts["train"].labels)),
                      Split(torch.from_numpy(decoded["val"]), torch.from_numpy(parts["val"].labels)),
                      h.hexdigest(), str(Path(root)), found.classes, channels, size, resize)


def pixel_stats(images: torch.Tensor) -> tuple[float, float]:
    return fmnist.pixel_stats(images.numpy())


def load_fashion_mnist(data_dir: Path | str | None = None) -> FashionMNIST:
    """Load all 70k images as uint8 tensors; validates counts and label ranges."""
    a = fmnist.load_arrays(data_dir)
    return FashionMNIST(Split(torch.from_numpy(a.train_images), torch.from_numpy(a.train_labels)),
                        Split(torch.from_numpy(a.test_images), torch.from_numpy(a.test_labels)), a.sha256, a.source)


def folder_for_model(cfg, root: Path | str, console=None) -> FolderData:
    """An image folder decoded as a checkpoint's model was fed (its channels and resize policy), for evaluation:
    its val/ split, or every image when it has none. Its classes are the model's, by count and sorted order."""
    from resnet_edge.errors import InvalidInput

    data = load_image_folder(root, cfg.source_size, cfg.source_resize, cfg.in_channels, holdout=1.0, console=console)
    if len(data.class_names) != cfg.num_classes:
        raise InvalidInput(f"{root} has {len(data.class_names)} class folders but the model has {cfg.num_classes} "
                           "classes.")
    if console is not None and cfg.class_names and tuple(data.class_names) != tuple(cfg.class_names):
        console.print(f"{root}: class folders {', '.join(data.class_names[:3])}, ... are taken as the model's "
                      f"classes {', '.join(cfg.class_names[:3])}, ... in sorted order")
    return data


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
