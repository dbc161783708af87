"""`make export`: checkpoint in; verified ONNX (FP32/FP16/INT8), engines, manifest and Triton repo out.

Everything is built in a staging directory and evaluated on the full test set before
anything in the output directory changes. The commit removes the old manifest first and
writes the new one last, so an interrupted export never leaves a manifest that names a
missing or different file.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from export import quantize, tensorrt
from export.edge_steps import check_requested
from export.folder import claim, commit
from export.onnx import DEFAULT_OPSET, _check_opset
from export.parity import ParityResult
from export.source import ExportSource
from export.steps import Build, plan_steps
from resnet_edge.errors import AccuracyRegression, InvalidInput, MissingDependency
from runtime.contract import (
    ArtifactRow,
    Decisions,
    Evaluation,
    Golden,
    Manifest,
    Reference,
    Skipped,
    Source,
)
from runtime.formats import EXPORT_PRECISIONS, FORMATS

PRECISIONS = EXPORT_PRECISIONS
FASHION_MNIST_TRAIN = 60_000



@dataclass(frozen=True)
class ExportConfig:
    checkpoint: Path = Path("checkpoints/best.pt")
    out: Path = Path("artifacts")
    opset: int = DEFAULT_OPSET
    calib_size: int = 1000
    calib_method: quantize.CalibMethod = quantize.CalibMethod.PERCENTILE
    cpu_int8_variant: bool = True  # also try asymmetric uint8 activations; kept only if measurably better
    trt: bool | None = None  # None: build engines where possible, else skip with a notice
    trt_profile: tensorrt.Profile = field(default_factory=tensorrt.Profile)
    trt_rtx: bool | None = None  # None: TensorRT-RTX engines wherever it is installed (no GPU needed to build them)
    rtx_capabilities: tuple[str, ...] = tensorrt.RTX_DEFAULT_CAPABILITIES
    aoti: bool | None = None  # None: AOTInductor packages where CUDA is present; True: also a CPU one without it
    precisions: tuple[str, ...] = PRECISIONS  # the variants to build; fp32 always (the others are made from it)
    limit: int | None = None  # evaluate on the first N test images only (recorded in the manifest)
    workspace_mb: int = 1024
    triton_repo: Path | None = None
    max_batch_size: int = 64
    queue_delay_us: int = 100
    data_dir: Path | None = None
    data: Path | None = None  # an image folder: calibration from its train/ split, gates on its val/ (or every image)
    seed: int = 0
    heldout_size: int = 2000  # training images, disjoint from calibration, that decide optional variants
    formats: tuple[str, ...] | None = None  # edge formats to build (None: every one whose converter is installed)
    int8_quantizer: str = "auto"  # OpenVINO IR INT8: ort | nncf | auto (the held-out split chooses)
    vulkan: bool = True  # ncnn files also checked on Vulkan device 0 where one is here (export.edge_steps.vulkan_check)


def _check_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe-"):
            pass
    except OSError as exc:
        raise InvalidInput(f"Output directory {out} is not writable ({exc.strerror}).") from None


def _validate(cfg: ExportConfig) -> None:
    _check_opset(cfg.opset)
    if cfg.calib_size < quantize.MIN_CALIBRATION:
        raise InvalidInput(f"A calibration set of {cfg.calib_size} images is too small; use at least "
                           f"{quantize.MIN_CALIBRATION} (default 1000).")
    if cfg.data is None and cfg.calib_size + cfg.heldout_size > FASHION_MNIST_TRAIN:  # a folder's are counted on load
        raise InvalidInput(f"--calib-size {cfg.calib_size} leaves fewer than {cfg.heldout_size} of Fashion-MNIST's "
                           f"{FASHION_MNIST_TRAIN} training images for the held-out split; use at most "
                           f"{FASHION_MNIST_TRAIN - cfg.heldout_size}.")
    if cfg.max_batch_size < 1:
        raise InvalidInput("--max-batch-size must be at least 1.")
    unknown = [p for p in cfg.precisions if p not in PRECISIONS]
    if unknown or "fp32" not in cfg.precisions:
        raise InvalidInput(f"--precision takes fp32, fp16 and int8, and always fp32 (the others are made from it); "
                           f"not '{','.join(cfg.precisions)}'.")
    if cfg.limit is not None and not 1 <= cfg.limit <= 10_000:
        raise InvalidInput("--limit must be between 1 and 10000 test images.")
    for lib, wanted, flag in ((tensorrt.TENSORRT, cfg.trt, "--trt"), (tensorrt.TENSORRT_RTX, cfg.trt_rtx, "--trt-rtx")):
        if wanted and (reason := tensorrt.unavailable_reason(lib)):
            raise MissingDependency(f"{flag} was asked for, but: {reason}")
        engines = wanted or (wanted is None and tensorrt.unavailable_reason(lib) is None)
        if engines and cfg.max_batch_size > cfg.trt_profile.max_batch:
            raise InvalidInput(f"--max-batch-size {cfg.max_batch_size} exceeds the TensorRT profile's largest batch "
                               f"{cfg.trt_profile.max_batch}; raise --trt-batch or pass {flag.replace('--', '--no-')}.")
    check_requested(cfg.formats)
    _check_output_dir(cfg.out)


def _heldout_size(cfg: ExportConfig, int8: bool) -> int:
    """How many held-out training images export's decisions need: the whole split for the INT8 ones (the uint8 CPU
    variant, OpenVINO's INT8 quantizer), and a few for ncnn's winograd timing, which an FP32/FP16-only export
    also takes."""
    from export.ncnn import WINOGRAD_IMAGES

    def wanted(fmt: str) -> bool:
        return cfg.formats is None or fmt in cfg.formats

    if int8 and (cfg.cpu_int8_variant or (cfg.int8_quantizer == "auto" and wanted("openvino"))):
        return cfg.heldout_size
    return WINOGRAD_IMAGES if wanted("ncnn") else 0


def run_export(cfg: ExportConfig, console: Console | None = None) -> Manifest:
    """Build every artifact in a staging directory, verify each against the PyTorch reference, then commit them with
    the manifest; returns the manifest that was written."""
    console = console or Console(stderr=True)
    _validate(cfg)
    src = ExportSource.load(cfg.checkpoint)
    skipped: list[Skipped] = []
    steps = plan_steps(cfg, skipped)
    int8 = "int8" in cfg.precisions

    def load_data(console=None) -> None:
        src.load_data(data_dir=cfg.data_dir, folder=cfg.data, limit=cfg.limit, calib_size=cfg.calib_size if int8 else 0,
                      heldout_size=_heldout_size(cfg, int8), seed=cfg.seed,
                      console=console)

    if cfg.data is not None:  # an image folder decodes with its own progress bar, before the export's
        load_data(console)
    with claim(cfg.out) as staging:
        with Progress(TextColumn("[bold]{task.description:<38}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("loading Fashion-MNIST" if cfg.data is None else "PyTorch FP32 reference + BN folding",
                                total=len(steps) + 1)
            if cfg.data is None:
                load_data()
                bar.update(task, description="PyTorch FP32 reference + BN folding")
            src.reference()
            golden = src.write_golden(staging)
            reference = src.write_reference(staging)
            build = Build(cfg, src, staging, skipped=skipped, decisions=dict(src.notes))
            bar.advance(task)
            for description, step in steps:
                bar.update(task, description=description)
                step(build)
                bar.advance(task)
            bar.update(task, description="done")
        console.print(results_table(build.rows, src.fold, cfg.out, f"{len(src.labels):,} images of {src.evaluated}"))
        for s in skipped:
            what = {"tensorrt": "TensorRT engines", "tensorrt_rtx": "TensorRT-RTX engines",
                    "aoti": "AOTInductor packages"}.get(s.format, s.format)
            what = FORMATS[what].title if what in FORMATS else what
            console.print(f"[yellow]skipped {what}:[/] {escape(s.reason)}")
        failures = [r for r in build.rows if r.status == "fail"]
        if failures:
            detail = "; ".join(f"{r.path}: {', '.join(r.failures)}" for r in failures)
            raise AccuracyRegression(f"Export failed the tolerance table against PyTorch and wrote nothing: {detail}.")
        manifest = _manifest(cfg, src, build, golden, reference)
        commit(staging, cfg.out, manifest)
    if cfg.triton_repo is not None:
        from export.triton import write_triton_repo

        dirs = write_triton_repo(manifest, cfg.out, cfg.triton_repo, max_batch_size=cfg.max_batch_size,
                                 queue_delay_us=cfg.queue_delay_us)
        console.print(f"Triton model repository: {cfg.triton_repo}/ ({len(dirs)} models)")
    return manifest


def _manifest(cfg: ExportConfig, src: ExportSource, build: Build, golden: Golden, reference: Reference) -> Manifest:
    s = src.state
    return Manifest(
        model=src.model_entry(), preprocessing=src.preprocessing(), io=src.io(),
        source=Source(checkpoint=str(cfg.checkpoint), sha256=src.sha256, test_accuracy=src.fold.ref_accuracy,
                      epoch=s.epoch, train_reported_test_accuracy=s.metrics.test_acc, data_sha256=s.data_sha256),
        artifacts=tuple(build.rows), golden=golden, reference=reference, fold=src.fold,
        evaluation=Evaluation(src.evaluated, len(src.labels), cfg.limit, tuple(cfg.precisions),
                              src.data.calibration_indices),
        skipped=tuple(build.skipped), decisions=Decisions(**build.decisions), tools=src.tools)


def results_table(rows: list[ArtifactRow], fold: ParityResult, out: Path | None = None,
                  evaluated: str = "the 10k Fashion-MNIST test images") -> Table:
    table = Table(title=f"exported artifacts{f' in {out}/' if out else ''} ({evaluated}; ONNX "
                        "on ONNX Runtime CPU, torch programs eager, every other format on its own runtime)")
    for col, just in (("artifact", "left"), ("precision", "left"), ("size MB", "right"), ("test acc", "right"),
                      ("Δacc vs PyTorch", "right"), ("max |Δlogit|", "right"), ("top-1 agreement", "right"),
                      ("status", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    table.add_row("PyTorch checkpoint (BN folded)", "fp32", "", f"{fold.ref_accuracy:.2%}",
                  f"{fold.delta_acc_pt:+.2f} pt", f"{fold.max_abs:.2e}", f"{fold.top1_agreement:.2%}", "reference")
    for r in rows:
        p = r.parity
        label = r.precision.value + (f" ({r.activations}, {r.target})" if r.activations else "")
        if p is None:  # built and checked (parse, layers, targets), not run: no numbers to show
            status = f"[yellow]{escape(r.built_note)}[/]"
            table.add_row(r.path, label, f"{r.size_bytes / 1e6:.1f}", "", "", "", "", status)
            continue
        status = "[green]ok[/]" if r.status == "ok" else f"[red]FAIL: {escape('; '.join(r.failures))}[/]"
        table.add_row(r.path, label, f"{r.size_bytes / 1e6:.1f}", f"{r.test_accuracy:.2%}",
                      f"{p.delta_acc_pt:+.2f} pt", f"{p.max_abs:.2e}", f"{p.top1_agreement:.2%}", status)
    return table
