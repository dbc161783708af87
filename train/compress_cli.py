"""`resnet-edge compress`: thin over ``train.compress``."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from resnet_edge.atomic import atomic_write_text
from resnet_edge.cli_util import cli_errors, make_console
from resnet_edge.errors import InvalidInput

console = make_console()
Opt = typer.Option


def _ratios(text: str) -> tuple[float, ...]:
    try:
        ratios = tuple(float(r) for r in text.split(",") if r.strip())
    except ValueError:
        raise InvalidInput(f"--ratio takes numbers in (0, 1), comma-separated, not '{text}'.") from None
    if not ratios:
        raise InvalidInput("--ratio needs at least one number in (0, 1).")
    return ratios


@cli_errors
def compress_cmd(
    ckpt: Annotated[Path, typer.Argument(help="The trained checkpoint to compress (our basic-block ResNets).")],
    out: Annotated[Path, Opt("--out", help="Where best.pt goes (one sub-folder a ratio when several are given).")],
    ratio: Annotated[str, Opt(help="Share of channels pruned, in (0, 1); several, comma-separated (0.3,0.5,0.7); "
                                   "0 with --depth 10 for depth alone.")] = "0.5",
    depth: Annotated[Optional[int], Opt(help="10: a ResNet-10 student (one block a stage), with the ratio.")] = None,
    epochs: Annotated[int, Opt(help="Distillation epochs.")] = 4,
    lr: Annotated[float, Opt(help="Peak learning rate of the fine-tuning's one-cycle schedule.")] = 0.05,
    teacher: Annotated[Optional[Path], Opt(help="Distil from this checkpoint (default: the one compressed).")] = None,
    temperature: Annotated[float, Opt(help="Distillation temperature.")] = 4.0,
    alpha: Annotated[float, Opt(help="Weight of the distillation term against the hard labels' (1 - alpha); 0: "
                                     "hard labels alone.")] = 0.5,
    global_pruning: Annotated[bool, Opt("--global/--uniform", help="One global ranking, or every group alike.")] = False,
    batch_size: Annotated[Optional[int], Opt(help="Batch size (default: the teacher's).")] = None,
    limit_train: Annotated[Optional[int], Opt(help="Only the first N training images (smoke runs, tests).")] = None,
    limit_test: Annotated[Optional[int], Opt(help="Validate and test on the first N images only.")] = None,
    qat: Annotated[str, Opt(help="Quantization-aware fine-tuning after the distillation (INT8 rounding in the "
                                 "loop, the same distillation loss): on; auto (only when the student with export's "
                                 "INT8 rounding simulated misses the int8 tolerance row on the validation split; the "
                                 "simulation is optimistic); off.")] = "on",
    qat_epochs: Annotated[int, Opt(help="Quantization-aware fine-tuning epochs.")] = 1,
    resume: Annotated[bool, Opt("--resume", help="Continue from OUT/last.pt (or OUT/qat/last.pt).")] = False,
) -> None:
    """Prune channels (Torch-Pruning's dependency graph) and distil from the teacher: a smaller checkpoint out."""
    from train.checkpoint import Checkpoint
    from train.compress import CompressConfig, compress

    ratios = _ratios(ratio)
    base = CompressConfig(depth=depth, epochs=epochs, lr=lr, temperature=temperature, alpha=alpha,
                          global_pruning=global_pruning, batch_size=batch_size, limit_train=limit_train,
                          limit_test=limit_test, qat=qat, qat_epochs=qat_epochs)
    configs = [replace(base, ratio=r).validate() for r in ratios]  # every ratio checked before anything is written
    if teacher is not None and not teacher.is_file():
        raise InvalidInput(f"--teacher {teacher} does not exist.")
    rows = []
    for cc in configs:
        where = out if len(configs) == 1 else out / f"ratio{cc.ratio:g}{'-d10' if cc.depth == 10 else ''}"
        t0 = time.perf_counter()
        result = compress(ckpt, where, cc, distill_from=teacher, resume=resume, console=console)
        rec = Checkpoint.read(where / "best.pt").compression
        rows.append({"ratio": cc.ratio, "depth": rec.depth, "out": str(where / "best.pt"),
                     "params": rec.params, "macs": rec.macs, "teacher_params": rec.teacher_params,
                     "teacher_macs": rec.teacher_macs, "teacher_test_accuracy": rec.teacher_test_accuracy,
                     "best_epoch": result.best_epoch, "validation_accuracy": result.best_acc,
                     "test_accuracy": result.test_acc, "seconds": time.perf_counter() - t0, "qat_epochs": rec.qat_epochs,
                     "int8_simulated_agreement": rec.int8_simulated_agreement,
                     "int8_simulated_agreement_after": rec.int8_simulated_agreement_after})
    console.print(_table(rows))
    if len(rows) > 1:
        atomic_write_text(out / "compress.json", json.dumps(rows, indent=2))
        console.print(f"results: {out / 'compress.json'}")


def _table(rows: list[dict]) -> Table:
    t = Table(title="compressed checkpoints (test accuracy read once, after the epoch was chosen on validation)")
    for c in ("checkpoint", "depth", "ratio", "params", "MACs", "test acc", "vs teacher", "INT8 sim. agreement",
              "wall s"):
        t.add_column(c, justify="left" if c == "checkpoint" else "right")
    for r in rows:
        teacher = r["teacher_test_accuracy"]
        delta = "" if teacher is None else f"{(r['test_accuracy'] - teacher) * 100:+.2f} pt"
        t.add_row(r["out"], str(r["depth"]), f"{r['ratio']:g}",
                  f"{r['params'] / 1e6:.2f}M ({r['params'] / r['teacher_params']:.0%})",
                  f"{r['macs'] / 1e6:.1f}M ({r['macs'] / r['teacher_macs']:.0%})", f"{r['test_accuracy']:.2%}", delta,
                  _agreement(r), f"{r['seconds']:.0f}")
    return t


def _agreement(r: dict) -> str:
    before, after = r["int8_simulated_agreement"], r["int8_simulated_agreement_after"]
    if before is None:
        return "not checked"
    return f"{before:.2%}" + (f" -> {after:.2%} (QAT {r['qat_epochs']} ep)" if after is not None else "")


def register(app: typer.Typer) -> None:
    app.command("compress")(compress_cmd)
