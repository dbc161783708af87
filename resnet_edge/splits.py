"""Which images train a model, which choose its epoch and which evaluate it: the split, recorded in the checkpoint.

Training carves a seeded validation split out of the training images and chooses ``best.pt`` on it; the test
split (Fashion-MNIST's t10k, a folder's ``val/`` or ``test/``, or a seeded share held out of a folder without
split folders) is read only to report the accuracy of what was chosen. The checkpoint records both (seed, count,
the validation indices or files, and for a held-out share its files), and ``eval``, ``export``, the golden set
and INT8 calibration read the record: evaluation on the held-out part only, calibration and export's decisions
on training images that are neither.

Every draw comes from one seeded permutation of the training images: validation is its tail and INT8
calibration its head, so that the two never meet and bench's peers calibrate on the images export did.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

VALIDATION_SHARE = 10  # a tenth of the training images ...
VALIDATION_MAX = 5000  # ... and at most this many (Fashion-MNIST: 5,000 of its 60,000)
HOLDOUT = 0.1  # the evaluation share of a folder without split folders


def permutation(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)


def validation_size(n: int, cap: int = VALIDATION_MAX) -> int:
    """Validation images carved from ``n`` training images: a tenth, at most ``cap`` (0: none)."""
    return min(cap, n // VALIDATION_SHARE)


def carve(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, validation indices), both sorted: validation is the tail of the seeded permutation."""
    order = permutation(n, seed)
    return np.sort(order[: n - size]), np.sort(order[n - size:])


def holdout(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices sorted, evaluation indices in a seeded order) of a folder without split folders."""
    order = permutation(n, seed)
    k = max(1, int(round(n * share)))
    return np.sort(order[k:]), order[:k]


def draw(n: int, k: int, seed: int, exclude: Iterable[int] = ()) -> np.ndarray:
    """The first ``k`` of the seeded permutation of ``n`` training images that are not in ``exclude`` (the
    validation split): INT8 calibration images, and with ``k`` beyond them export's held-out images."""
    order = permutation(n, seed)
    skip = np.fromiter(exclude, np.int64)
    if len(skip):
        order = order[~np.isin(order, skip)]
    return order[:k]


def digest(items: Sequence) -> str:
    """sha256 of a list of indices or relative paths, as recorded beside them."""
    return hashlib.sha256("\n".join(str(i) for i in items).encode()).hexdigest()
