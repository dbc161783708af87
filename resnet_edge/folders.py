"""Image-folder datasets, as torchvision's ``ImageFolder`` lays them out: ``DIR/<class name>/*.png|jpg|jpeg|webp``,
optionally split into ``DIR/train/<class>/...`` and ``DIR/val/<class>/...``. In numpy and Pillow, with no torch.

Class names are the folder names, sorted. Every image is decoded to the model's channels (``L`` or ``RGB``) and
brought to its source size by the resize policy (``resnet_edge.images.fit_source``), in a thread pool (Pillow
releases the GIL while it decodes and resizes, so every core is busy), with a progress bar.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_edge.errors import DataError
from resnet_edge.images import MAX_PIXELS, fit_source

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class FolderSplit:
    paths: tuple[Path, ...]
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class ImageFolder:
    root: Path
    classes: tuple[str, ...]
    train: FolderSplit | None  # None: DIR holds class folders only (no split folders)
    val: FolderSplit  # the evaluation split: its split folder, or every image when there is none
    val_name: str | None = None  # that folder's name (val, valid, validation or test); None: no split folders
    validation: FolderSplit | None = None  # train/ + val/ + test/: val/ selects the model, test/ evaluates it
    validation_name: str | None = None


TRAIN_NAME = "train"
EVAL_NAMES = ("val", "valid", "validation", "test")  # torchvision's, Kaggle's and Hugging Face's split folder names


def _classes(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _split(root: Path, classes: list[str]) -> FolderSplit:
    paths, labels = [], []
    for i, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        paths += found
        labels += [i] * len(found)
    return FolderSplit(tuple(paths), np.asarray(labels, np.int64))


def _split_layout(root: Path, top: list[str]) -> tuple[str | None, str | None]:
    """(evaluation folder, validation folder) of a DIR/train + DIR/<eval> layout, (None, None) for class folders
    only; a layout that mixes split folders with class folders, or is ambiguous, is one sentence."""
    names = ", ".join(f"{n}/" for n in (TRAIN_NAME, *EVAL_NAMES))
    splits = [d for d in top if d in (TRAIN_NAME, *EVAL_NAMES)]
    if not splits:
        return None, None
    others = [d for d in top if d not in splits]
    evals = [d for d in EVAL_NAMES if d in splits]
    if splits == [TRAIN_NAME] and not others:
        raise DataError(f"{root} has train/ but no val/, valid/, validation/ or test/ beside it; add one, or put the "
                        "class folders directly in DIR to hold out a seeded 10% for evaluation.")
    if TRAIN_NAME not in splits or not evals or others:
        what = (f"a class folder '{others[0]}' beside its split folder(s) {', '.join(f'{d}/' for d in splits)}"
                if others and TRAIN_NAME in splits and evals else
                f"a folder '{splits[0]}', a split folder name, among its class folders")
        raise DataError(f"{root} has {what}; a split dataset is DIR/train/<class>/... with one of DIR/val/, valid/, "
                        f"validation/ or test/ (split folder names, {names}, are never class names).")
    held = [d for d in evals if d != "test"]
    if len(held) > 1:
        raise DataError(f"{root} has both {held[0]}/ and {held[1]}/; keep one validation folder (and test/ if you "
                        "have one).")
    if "test" in evals:  # train/ + val/ + test/: val/ chooses the epoch, test/ reports
        return "test", (held[0] if held else None)
    return held[0], None


def scan(root: Path | str) -> ImageFolder:
    """The folder's classes and images, or one sentence saying what is wrong with it.

    ``DIR/<class>/...`` (no split), or ``DIR/train/<class>/...`` with ``val/``, ``valid/``, ``validation/`` or
    ``test/`` beside it (with both a validation folder and ``test/``, the validation folder selects the model
    and ``test/`` evaluates it)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a directory of class folders.")
    eval_name, validation_name = _split_layout(root, _classes(root))
    train = validation = None
    if eval_name is not None:
        classes = _classes(root / TRAIN_NAME)
        for name in filter(None, (eval_name, validation_name)):
            extra = sorted(set(_classes(root / name)) - set(classes))
            if extra:
                raise DataError(f"{root / name} has class folder '{extra[0]}', which {root / TRAIN_NAME} lacks.")
        train, val = _split(root / TRAIN_NAME, classes), _split(root / eval_name, classes)
        validation = _split(root / validation_name, classes) if validation_name else None
    else:
        classes = _classes(root)
        val = _split(root, classes)
    if len(classes) < 2:
        raise DataError(f"{root} has {len(classes)} class folder(s); an image folder needs at least two "
                        "(DIR/<class name>/*.png|jpg|jpeg|webp).")
    for name, split in ((TRAIN_NAME, train), (eval_name or "class", val), (validation_name, validation)):
        if split is not None and len(split) == 0:
            raise DataError(f"{root} has no {'/'.join(EXTENSIONS)} images in its {name} class folders.")
    return ImageFolder(root, tuple(classes), train, val, eval_name, validation, validation_name)


def load_image(path: Path, size: int, resize: int | None, channels: int) -> np.ndarray:
    """One file -> uint8 [S, S] (1 channel) or [S, S, 3], or one sentence naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise DataError(f"{path} is {img.width}x{img.height}; images over {MAX_PIXELS:,} pixels are refused.")
            img = fit_source(img.convert("L" if channels == 1 else "RGB"), size, resize)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path} cannot be decoded as an image ({type(exc).__name__}).") from None
    except ValueError as exc:
        raise DataError(f"{path} {exc}.") from None


def detect_channels(split: FolderSplit, sample: int = 64) -> int:
    """3 if any of the first ``sample`` images has colour, else 1."""
    from PIL import Image

    for p in split.paths[:sample]:
        try:
            with Image.open(p) as img:
                if img.mode not in ("1", "L", "LA", "I", "I;16", "F"):
                    return 3
        except OSError:
            continue  # load_image names a broken file when it meets it
    return 1


def decode_all(paths: tuple[Path, ...], size: int, resize: int | None, channels: int,
               progress: Callable[[int], None] | None = None, workers: int | None = None) -> np.ndarray:
    """Every file, decoded in a thread pool: uint8 [N, S, S] or [N, S, S, 3]. ``progress(k)`` after each k."""
    shape = (len(paths), size, size) + ((3,) if channels == 3 else ())
    out = np.empty(shape, np.uint8)

    def one(i: int) -> None:
        out[i] = load_image(paths[i], size, resize, channels)

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        for _ in pool.map(one, range(len(paths))):
            if progress:
                progress(1)
    return out


def fingerprint(split: FolderSplit, images: np.ndarray) -> str:
    """sha256 over the decoded images and their labels: what the data really was, recorded in checkpoints."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(split.labels.tobytes())
    return h.hexdigest()


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 [N, H, W] or [N, H, W, C] scaled to [0, 1], in chunks (no float copy
    of the whole set)."""
    c = 1 if images.ndim == 3 else images.shape[-1]
    total, sq, n = np.zeros(c), np.zeros(c), 0
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].reshape(-1, c).astype(np.float64) / 255.0
        total += x.sum(0)
        sq += (x * x).sum(0)
        n += x.shape[0]
    mean = total / max(n, 1)
    std = np.sqrt(np.maximum(sq / max(n, 1) - mean * mean, 1e-12))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
