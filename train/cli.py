"""`resnet-edge train` and `resnet-edge eval`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from resnet_edge.cli_util import cli_errors, make_console
from resnet_edge.errors import InvalidInput
from train.config import TrainConfig, preset

console = make_console()
Opt = typer.Option


@cli_errors
def train_cmd(
    preset_name: Annotated[str, Opt("--preset", help="quick (>=90% in <5 min on 2 CPU cores) or full (95% target).")] = "quick",
    out: Annotated[Path, Opt("--out", help="Directory for last.pt and best.pt.")] = Path("checkpoints"),
    epochs: Annotated[Optional[int], Opt(help="Override the preset's epochs.")] = None,
    batch_size: Annotated[Optional[int], Opt(help="Global batch size (split across DDP ranks).")] = None,
    lr: Annotated[Optional[float], Opt(help="Peak learning rate (SGD, Nesterov momentum).")] = None,
    schedule: Annotated[Optional[str], Opt(help="onecycle or cosine.")] = None,
    label_smoothing: Annotated[Optional[float], Opt()] = None,
    weight_decay: Annotated[Optional[float], Opt()] = None,
    seed: Annotated[Optional[int], Opt()] = None,
    device: Annotated[Optional[str], Opt(help="auto (cuda if present, else cpu), cpu or cuda[:N].")] = None,
    threads: Annotated[Optional[int], Opt(help="CPU threads; 0 uses every core.")] = None,
    channels_last: Annotated[Optional[bool], Opt("--channels-last/--no-channels-last")] = None,
    amp: Annotated[Optional[str], Opt(help="auto, none, bf16 or fp16 (CUDA only).")] = None,
    depth: Annotated[Optional[int], Opt(help="18, 34, 50, 101 or 152 (torchvision's layouts).")] = None,
    stem: Annotated[Optional[str], Opt(help="imagenet (7x7/2 + max-pool) or small (3x3/1).")] = None,
    image_size: Annotated[Optional[int], Opt(help="Input size; 28 native, 96 the classic resized recipe.")] = None,
    crop_padding: Annotated[Optional[int], Opt(help="Padding of the random crop; 0 disables it.")] = None,
    hflip: Annotated[Optional[bool], Opt("--hflip/--no-hflip", help="Random horizontal flips.")] = None,
    erase_prob: Annotated[Optional[float], Opt(help="Random-erasing probability.")] = None,
    limit_train: Annotated[Optional[int], Opt(help="Train on the first N images only (smoke runs).")] = None,
    limit_test: Annotated[Optional[int], Opt(help="Validate and evaluate on the first N images only.")] = None,
    val_size: Annotated[Optional[int], Opt(help="Validation images carved from the training images to choose the "
                                                "best epoch (a tenth at most; default 5000); 0 keeps the last epoch.")] = None,
    data_dir: Annotated[Optional[Path], Opt(help="Directory with the four IDX files.")] = None,
    data: Annotated[Optional[Path], Opt("--data", help="An image folder (DIR/<class>/*.png|jpg|jpeg|webp, optionally "
                                                       "DIR/train and DIR/val) instead of Fashion-MNIST.")] = None,
    arch: Annotated[Optional[str], Opt(help="resnet18, resnet34, resnet50, resnet101 or resnet152 (sets --depth).")] = None,
    resize: Annotated[Optional[int], Opt(help="With --data: resize the shorter side to this, then centre-crop "
                                              "--image-size (default: the image size).")] = None,
    channels: Annotated[Optional[int], Opt(help="With --data: 1 (gray) or 3 (RGB); default 3 if the images have colour.")] = None,
    init: Annotated[Optional[Path], Opt(help="Start from this checkpoint's weights (e.g. from 'resnet-edge import'); "
                                             "a different class count gets a new head.")] = None,
    resume: Annotated[bool, Opt("--resume", help="Continue from OUT/last.pt.")] = False,
) -> None:
    """Train ResNet on Fashion-MNIST or an image folder: best.pt is the epoch best on a validation split carved from
    the training images (the test set is scored once, at the end)."""
    from train.checkpoint import Checkpoint
    from train.engine import train

    depth = _arch_depth(arch, depth)
    if data is None and (resize is not None or channels is not None):
        raise InvalidInput("--resize and --channels apply to an image folder; pass --data DIR.")
    if channels not in (None, 1, 3):
        raise InvalidInput(f"--channels must be 1 or 3, not {channels}.")

    if init is not None and not init.is_file():
        raise InvalidInput(f"--init {init} does not exist.")
    overrides = dict(epochs=epochs, batch_size=batch_size, lr=lr, schedule=schedule,
                     label_smoothing=label_smoothing, weight_decay=weight_decay, seed=seed, device=device,
                     threads=threads, channels_last=channels_last, amp=amp, depth=depth, stem=stem,
                     image_size=image_size, crop_padding=crop_padding, hflip=hflip, erase_prob=erase_prob,
                     limit_train=limit_train, limit_test=limit_test, val_size=val_size)
    if resume and (out / "last.pt").is_file():
        saved = Checkpoint.read(out / "last.pt").train_config or TrainConfig()
        given = {k: v for k, v in overrides.items() if v is not None}
        cfg = preset(saved.preset, **{**saved.to_dict(), **given})
    else:
        cfg = preset(preset_name, **overrides)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"Cannot create output directory {out}: {exc.strerror}.") from None
    if resize is not None and resize < cfg.image_size:
        raise InvalidInput(f"--resize {resize} is smaller than the image size {cfg.image_size}; the centre crop "
                           "would not fit.")
    folder = None
    if data is not None:
        from train.data import load_image_folder

        folder = load_image_folder(data, cfg.image_size, resize or cfg.image_size, channels, seed=cfg.seed,
                                   validation=cfg.val_size, console=console)
        s = folder.split
        held = f", {s['validation']['n']} for validation ({s['validation']['source']})" if s["validation"] else ""
        console.print(f"{data}: {len(folder.class_names)} classes, {len(folder.train)} training images{held}, "
                      f"{len(folder.test)} for evaluation ({s['evaluation']['source']}), {folder.channels} channel(s)")
    result = train(cfg, out, data_dir=data_dir, data=folder, resume=resume, init=init)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 reports
        chosen = (f"epoch {result.best_epoch}, validation accuracy {result.best_acc:.2%}" if cfg.val_size
                  else f"the last epoch, {result.best_epoch}")
        console.print(f"[bold green]test accuracy {result.test_acc:.2%}[/] of best.pt ({chosen}) after "
                      f"{result.train_seconds:.0f}s of training; checkpoints in {out}/")


@cli_errors
def eval_cmd(
    ckpt: Annotated[Path, typer.Argument(help="Checkpoint to evaluate.")] = Path("checkpoints/best.pt"),
    data_dir: Annotated[Optional[Path], Opt(help="Directory with the four IDX files.")] = None,
    data: Annotated[Optional[Path], Opt("--data", help="Evaluate on an image folder instead of the Fashion-MNIST test "
                                                       "set: the images the checkpoint held out (its split folder, or "
                                                       "the share it recorded).")] = None,
    plot: Annotated[Optional[Path], Opt(help="Write the confusion matrix as a PNG here.")] = None,
    json_out: Annotated[Optional[Path], Opt("--json", help="Write the report as JSON here.")] = None,
    device: Annotated[str, Opt()] = "auto",
) -> None:
    """Overall and per-class test accuracy and the confusion matrix of a checkpoint."""
    from resnet_edge.atomic import atomic_write_text
    from train.checkpoint import Checkpoint
    from train.engine import resolve_device
    from train.evaluate import plot_confusion, predict, report
    from train.heldout import evaluation_data

    state = Checkpoint.read(ckpt)
    model = state.model(ckpt)
    cfg = model.config
    dataset = evaluation_data(cfg, state.split, data_dir=data_dir, folder=data, console=console)
    logits = predict(model.to(resolve_device(device)), dataset.test, mean=cfg.mean, std=cfg.std,
                     image_size=cfg.image_size, device=resolve_device(device))
    rep = report(logits, dataset.test.labels, dataset.class_names)
    console.print(_confusion_table(rep))
    console.print(f"[bold]test accuracy {rep.accuracy:.2%}[/]  loss {rep.loss:.4f}  ({rep.n} images: "
                  f"{dataset.description}; {ckpt})")
    if plot:
        console.print(f"confusion matrix plot: {plot_confusion(rep, plot, f'{ckpt.name}: {rep.accuracy:.2%}')}")
    if json_out:
        atomic_write_text(json_out, json.dumps({
            "checkpoint": str(ckpt), "accuracy": rep.accuracy, "loss": rep.loss, "images": rep.n,
            "evaluated_on": dataset.description,
            "per_class": dict(zip(rep.class_names, rep.per_class.tolist())),
            "confusion": rep.confusion.tolist()}, indent=2))


def _arch_depth(arch: str | None, depth: int | None) -> int | None:
    if arch is None:
        return depth
    from train.importer import ARCHS as names

    if arch not in names:
        raise InvalidInput(f"--arch must be one of {', '.join(names)}, not '{arch}'.")
    if depth is not None and depth != names[arch]:
        raise InvalidInput(f"--arch {arch} and --depth {depth} disagree; pass one of them.")
    return names[arch]


def _confusion_table(rep) -> Table:
    table = Table(title="confusion matrix (rows: true class, columns: predicted)")
    table.add_column("class")
    for i in range(len(rep.class_names)):
        table.add_column(str(i), justify="right")
    table.add_column("acc", justify="right")
    for i, name in enumerate(rep.class_names):
        cells = [f"[bold]{c}[/]" if i == j else (str(c) if c else "[dim]0[/]") for j, c in enumerate(rep.confusion[i])]
        table.add_row(f"{i} {name}", *cells, f"{rep.per_class[i]:.1%}")
    return table


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InvalidInput(f"{what} must be comma-separated numbers, not '{text}'.") from None


@cli_errors
def import_cmd(
    weights: Annotated[Path, typer.Argument(help="A torchvision ResNet state_dict (.pt/.pth), plain or wrapped.")],
    arch: Annotated[str, Opt(help="resnet18, resnet34, resnet50, resnet101 or resnet152.")],
    num_classes: Annotated[int, Opt(help="Classes of the weights' head.")],
    image_size: Annotated[int, Opt(help="Input size the model expects (e.g. 224).")],
    out: Annotated[Path, Opt(help="The project checkpoint to write.")],
    channels: Annotated[int, Opt(help="Input channels.")] = 3,
    mean: Annotated[Optional[str], Opt(help="Per-channel mean, e.g. 0.485,0.456,0.406 (ImageNet's for 3 channels).")] = None,
    std: Annotated[Optional[str], Opt(help="Per-channel std, e.g. 0.229,0.224,0.225 (ImageNet's for 3 channels).")] = None,
    classes: Annotated[Optional[Path], Opt(help="A file with one class name a line, in the head's order.")] = None,
    data: Annotated[Optional[Path], Opt(help="An image-folder dataset: its class folders, sorted, name the classes.")] = None,
    resize: Annotated[Optional[int], Opt(help="Resize the shorter side to this, then centre-crop --image-size "
                                              "(default: torchvision's 256/224 ratio, e.g. 256 for 224).")] = None,
) -> None:
    """Turn a torchvision ResNet state_dict into a checkpoint that export, parity, bench and serve take."""
    from resnet_edge.images import policy_text
    from train.importer import import_weights

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"Cannot create {out.parent}: {exc.strerror}.") from None
    done = import_weights(weights, arch=arch, num_classes=num_classes, image_size=image_size, out=out,
                          channels=channels, mean=_floats(mean, "--mean"), std=_floats(std, "--std"), classes=classes,
                          data=data, resize=resize)
    cfg = done["config"]
    console.print(f"[bold green]imported[/] {done['tensors']} tensors as {arch} ({cfg.in_channels} channels, "
                  f"{cfg.num_classes} classes, {cfg.image_size} px; images: "
                  f"{policy_text(cfg.source_size, cfg.source_resize)}) into {out}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
    app.command("import")(import_cmd)
