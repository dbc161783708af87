"""The images ``eval`` and ``export`` read, by the split the checkpoint recorded (``resnet_edge.splits``).

Evaluation reads the held-out part only; INT8 calibration reads training images only; export's decisions
(the uint8 CPU variant) read the validation split, which the model never trained on. Only the images used are
decoded: a folder of 100,000 training images costs its evaluation images and a few thousand others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnet_edge import folders, splits
from resnet_edge.errors import DataError, InvalidInput
from train.data import Split, _decode_parts, _pick, load_fashion_mnist, relative

NO_RECORD = ("the checkpoint records no split (it was imported, or trained by an older resnet-edge) and the folder "
             "has no split folders, so every image is evaluated, some of which it may have been trained on")


@dataclass(frozen=True)
class EvaluationData:
    test: Split  # the evaluation images, in a seeded order (the first N sample every class)
    calibration: Split  # training images for INT8 calibration (empty unless asked for)
    heldout: Split  # images the model never trained on, for export's decisions (empty unless asked for)
    class_names: tuple[str, ...]
    description: str  # which images are evaluated, in words, for the manifest and the CLI
    notes: dict[str, str] = field(default_factory=dict)  # where calibration and held-out images came from
    calibration_indices: tuple[int, ...] = ()  # Fashion-MNIST: the training images calibration drew, in order


def evaluation_data(mcfg, record: dict[str, Any] | None, *, data_dir: Path | None = None, folder: Path | None = None,
                    limit: int | None = None, calib_size: int = 0, heldout_size: int = 0, seed: int = 0,
                    console=None) -> EvaluationData:
    """Fashion-MNIST's test set (or ``folder``'s evaluation part) and, when asked, calibration and held-out
    training images, following the checkpoint's split ``record``."""
    if folder is not None:
        return _folder(mcfg, record, Path(folder), limit, calib_size, heldout_size, seed, console)
    data = load_fashion_mnist(data_dir)
    validation = np.asarray(((record or {}).get("validation") or {}).get("indices", []), np.int64)
    n = len(data.train)
    notes = {}
    if len(validation):
        drawn = splits.draw(n, calib_size, seed, exclude=validation)
        held = splits.permutation(len(validation), seed)[:heldout_size]
        held = validation[held]
        notes["heldout"] = f"{len(held)} images of the validation split the checkpoint records (never trained on)"
    else:
        drawn = splits.draw(n, calib_size + heldout_size, seed)
        drawn, held = drawn[:calib_size], drawn[calib_size:]
        notes["heldout"] = (f"{len(held)} training images disjoint from calibration (the checkpoint records no "
                            "validation split)")
    notes["calibration"] = f"{len(drawn)} Fashion-MNIST training images (seed {seed}), none of them validation images"
    test = data.test.subset(limit)
    return EvaluationData(test, data.train.take(drawn), data.train.take(held), data.class_names,
                          "the Fashion-MNIST test set", notes, tuple(int(i) for i in drawn))


def _folder(mcfg, record, root: Path, limit, calib_size, heldout_size, seed, console) -> EvaluationData:
    found = folders.scan(root)
    if len(found.classes) != mcfg.num_classes:
        raise InvalidInput(f"{root} has {len(found.classes)} class folders but the model has {mcfg.num_classes} "
                           "classes.")
    if console is not None and mcfg.class_names and tuple(found.classes) != tuple(mcfg.class_names):
        console.print(f"{root}: class folders {', '.join(found.classes[:3])}, ... are taken as the model's "
                      f"classes {', '.join(mcfg.class_names[:3])}, ... in sorted order")
    every = [s for s in (found.train, found.val, found.validation) if s is not None]
    index = {rel: (s, i) for s in every for i, rel in enumerate(relative(s.paths, root))}
    evaluation = (record or {}).get("evaluation") or {}
    notes: dict[str, str] = {}
    if evaluation.get("files"):  # a seeded share held out at training: exactly those files
        test = _files(root, evaluation["files"], index, "evaluation")
        chosen = set(evaluation["files"])
        pool = _pick(found.val, [i for i, rel in enumerate(relative(found.val.paths, root)) if rel not in chosen])
        description = f"the {len(test)} images of the image folder {root} held out at training (recorded in the checkpoint)"
    elif found.train is not None:
        test, pool = found.val, found.train
        description = f"the image folder {root}'s {found.val_name}/ split"
        recorded = evaluation.get("sha256")
        if recorded and recorded != splits.digest(sorted(relative(test.paths, root))):
            notes["evaluation"] = f"{root / found.val_name}/ differs from the one the checkpoint was trained beside"
    else:
        test = pool = found.val
        description = f"every image of the image folder {root} ({NO_RECORD})"
        notes["evaluation"] = NO_RECORD
        if console is not None:
            console.print(f"[yellow]{root}: {NO_RECORD}[/]")
    test = _pick(test, splits.permutation(len(test), seed))
    if limit is not None:
        test = _pick(test, range(min(limit, len(test))))
    validation = ((record or {}).get("validation") or {}).get("files")
    if validation:  # carved from the training images at training: never trained on, never calibrated on
        held = _files(root, validation, index, "validation")
        skip = set(validation)
        pool = _pick(pool, [i for i, rel in enumerate(relative(pool.paths, root)) if rel not in skip])
        notes["heldout"] = "the validation split the checkpoint records (never trained on)"
    elif found.validation is not None:  # train/ + val/ + test/
        held = found.validation
        notes["heldout"] = f"{root / found.validation_name}/ (never trained on)"
    else:
        held = None
        notes["heldout"] = "images disjoint from calibration (the checkpoint records no validation split)"
    if held is None and heldout_size:  # both from one pool: half at most for calibration, so that some are held out
        calib_size = min(calib_size, len(pool) // 2)
    drawn = splits.draw(len(pool), calib_size + (heldout_size if held is None else 0), seed)
    calib = _pick(pool, drawn[:calib_size])
    held = _pick(pool, drawn[calib_size:]) if held is None else _pick(held, splits.permutation(len(held), seed)[:heldout_size])
    if pool is found.val and found.train is None and not evaluation.get("files"):
        notes["calibration"] = "drawn from the evaluation images: the folder has no training split the checkpoint records"
    else:
        notes["calibration"] = f"{len(calib)} training images of {root} (seed {seed}), none of them evaluated"
    parts = {"evaluation": test, "calibration": calib, "held-out": held}
    decoded = _decode_parts({k: v for k, v in parts.items() if len(v)}, mcfg.source_size, mcfg.source_resize,
                            mcfg.in_channels, console)
    shape = (0, mcfg.source_size, mcfg.source_size) + ((3,) if mcfg.in_channels == 3 else ())
    as_split = lambda k: Split(torch.from_numpy(decoded.get(k, np.empty(shape, np.uint8))),  # noqa: E731
                               torch.from_numpy(parts[k].labels))
    return EvaluationData(as_split("evaluation"), as_split("calibration"), as_split("held-out"), found.classes,
                          description, notes)


def _files(root: Path, files: list[str], index: dict, what: str) -> folders.FolderSplit:
    """The recorded files as a split, in the recorded order, or one sentence naming the first missing."""
    missing = [f for f in files if f not in index]
    if missing:
        raise DataError(f"{root} lacks {missing[0]} (and {len(missing) - 1} more), one of the {len(files)} {what} "
                        "images the checkpoint recorded; evaluate on the folder the model was trained on.")
    return folders.FolderSplit(tuple(root / f for f in files),
                               np.asarray([index[f][0].labels[index[f][1]] for f in files], np.int64))
