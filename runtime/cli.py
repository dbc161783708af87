"""`resnet-edge parity` and `resnet-edge bench`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from resnet_edge.cli_util import cli_errors, make_console
from resnet_edge.errors import InvalidInput

console = make_console()
Opt = typer.Option


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InvalidInput(f"{what} must be comma-separated integers, not '{text}'.") from None
    if not values or min(values) < 1:
        raise InvalidInput(f"{what} must be positive, not '{text}'.")
    return values


def _seconds(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s)?\s*", text)
    if not m:
        raise InvalidInput(f"'{text}' is not a duration; use e.g. 2s or 500ms.")
    return float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)


def _progress():
    return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
                    console=make_console(stderr=True), transient=True)


@cli_errors
def parity_cmd(
    artifacts_dir: Annotated[Path, typer.Argument(help="Directory with manifest.json.")] = Path("artifacts"),
    backend: Annotated[str, Opt(help="Comma-separated backends, or all.")] = "all",
    checkpoint: Annotated[Optional[Path], Opt(help="Source checkpoint (default: the manifest's).")] = None,
    limit: Annotated[Optional[int], Opt(help="Use the first N test images (default all 10,000).")] = None,
    random: Annotated[int, Opt(help="Random inputs compared as well.")] = 256,
    precision: Annotated[str, Opt(help="Comma-separated precisions (fp32,fp16,bf16,int8), or all.")] = "all",
    device: Annotated[str, Opt(help="cpu or cuda for the torch and onnxruntime backends.")] = "cpu",
    json_out: Annotated[Optional[Path], Opt("--json", help="Write the report as JSON here.")] = None,
    data_dir: Annotated[Optional[Path], Opt(help="Directory with the Fashion-MNIST IDX files.")] = None,
    reference: Annotated[str, Opt(help="golden: the golden set in ARTIFACTS_DIR (no torch needed); checkpoint: "
                                       "PyTorch on the checkpoint over the test set; auto: checkpoint where "
                                       "torch, checkpoint and data are here, else golden; or a file "
                                       "--save-outputs wrote (on any machine).")] = "auto",
    save_outputs: Annotated[Optional[Path], Opt(help="Save the reference run (images, labels, logits) here, to "
                                                     "compare with on another machine (--reference FILE).")] = None,
) -> None:
    """Compare every artifact on every available backend with the PyTorch FP32 reference."""
    from resnet_edge.atomic import atomic_write_text
    from runtime.formats import parse_precisions
    from runtime.parity import choose_reference, run_parity
    from runtime.report import parity_json, parity_table
    from runtime.spec import load_artifacts
    from runtime.variants import parse_backends, plan

    arts = load_artifacts(artifacts_dir)
    wanted = set(parse_precisions(precision)) or None
    with _progress() as bar:
        task = bar.add_task("reference run")
        ref = choose_reference(arts, use=reference, checkpoint=checkpoint, limit=limit, data_dir=data_dir)
        variants, skipped = plan(arts, parse_backends(backend), checkpoint=ref.checkpoint or checkpoint, device=device,
                                 precisions=wanted)
        if save_outputs:
            ref.run.save(save_outputs)
        report = run_parity(arts, variants, ref, n_random=random,
                            progress=lambda label: bar.update(task, description=f"parity: {label}"))
    report.skipped = skipped
    console.print(parity_table(report))
    for line in skipped:
        console.print(f"[yellow]skipped:[/] {escape(line)}", highlight=False)
    if json_out:
        atomic_write_text(json_out, parity_json(report))
    if not report.passed:
        failed = ", ".join(r.variant for r in report.rows if not r.passed)
        console.print(f"[bold red]parity failed:[/] {failed}")
        raise typer.Exit(1)
    console.print(f"[bold green]all {len(report.rows)} variants within tolerance[/]")


def _peer_calibration(arts, data_dir):
    """Training images for the INT8 peers to calibrate on; None (no INT8 peers) where the dataset is absent."""
    from resnet_edge.errors import DataError
    from runtime.preprocess import load_calibration_inputs

    try:
        return load_calibration_inputs(arts.spec, data_dir=data_dir)
    except DataError as exc:
        console.print(f"[yellow]no INT8 peers:[/] they calibrate on training images, and {escape(str(exc))}")
        return None


@cli_errors
def bench_cmd(
    artifacts_dir: Annotated[Path, typer.Argument(help="Directory with manifest.json.")] = Path("artifacts"),
    backend: Annotated[str, Opt(help="Comma-separated backends, or all.")] = "all",
    precision: Annotated[str, Opt(help="Comma-separated precisions (fp32,fp16,bf16,int8), or all.")] = "all",
    batch: Annotated[str, Opt(help="Comma-separated batch sizes.")] = "1,8,64",
    warmup: Annotated[str, Opt(help="Warm-up time per point.")] = "0.5s",
    duration: Annotated[str, Opt(help="Measurement time per point.")] = "2s",
    iterations: Annotated[Optional[int], Opt(help="Measure this many calls instead of a duration.")] = None,
    peers: Annotated[bool, Opt("--peers", help="Add what users would run instead, per precision class: PyTorch eager, "
                                                "default ONNX Runtime and OpenVINO (FP32); ONNX Runtime quantize_static "
                                                "defaults and OpenVINO + NNCF (INT8).")] = False,
    roofline: Annotated[bool, Opt("--roofline", help="Measure GEMM peaks and report achieved GFLOP/s against them.")] = False,
    threads: Annotated[int, Opt(help="Threads per backend, peers included (0: each library's default).")] = 0,
    rounds: Annotated[int, Opt(help="Interleaved rounds: every variant takes a turn in each.")] = 5,
    accuracy_images: Annotated[int, Opt(help="Test images each variant classifies for its accuracy (0: skip).")] = 10_000,
    device: Annotated[str, Opt(help="cpu or cuda.")] = "cpu",
    compile_peer: Annotated[str, Opt(help="On CUDA, precisions of the torch.compile max-autotune peers (comma-separated, "
                                          "or none): each compiles for minutes per batch size.")] = "fp16",
    checkpoint: Annotated[Optional[Path], Opt(help="Source checkpoint for the torch backend.")] = None,
    json_out: Annotated[Optional[Path], Opt("--json", help="Write results as JSON.")] = None,
    csv_out: Annotated[Optional[Path], Opt("--csv", help="Write results as CSV.")] = None,
    plot: Annotated[Optional[Path], Opt("--plot", help="Write latency/throughput vs batch as PNG.")] = None,
    data_dir: Annotated[Optional[Path], Opt(help="Directory with the Fashion-MNIST IDX files.")] = None,
) -> None:
    """Latency (min/mean/p50/p90/p95/p99/max) and throughput per backend, precision and batch size."""
    from runtime.bench import BenchConfig, run_bench
    from runtime.preprocess import eval_inputs
    from runtime.report import bench_table, speedup_table, write_bench_csv, write_bench_json, write_bench_plot
    from runtime.spec import load_artifacts
    from runtime.variants import parse_backends, plan

    if rounds < 1 or accuracy_images < 0 or threads < 0:
        raise InvalidInput("--rounds must be at least 1; --accuracy-images and --threads must not be negative.")
    compiled = () if compile_peer.strip() == "none" else tuple(p.strip() for p in compile_peer.split(",") if p.strip())
    if not set(compiled) <= {"fp32", "fp16", "bf16"}:
        raise InvalidInput(f"--compile-peer takes fp32, fp16, bf16 or none, not '{compile_peer}'.")
    cfg = BenchConfig(batches=_ints(batch, "--batch"), warmup_s=_seconds(warmup), duration_s=_seconds(duration),
                      iterations=iterations, roofline=roofline, rounds=rounds, accuracy_images=accuracy_images)
    arts = load_artifacts(artifacts_dir)
    ckpt = checkpoint or arts.checkpoint
    wanted = None if precision == "all" else {p.strip() for p in precision.split(",")}
    with _progress() as bar:
        task = bar.add_task("preparing")
        int8_peers = peers and not device.startswith("cuda")  # on CUDA the peers are PyTorch's
        calib = _peer_calibration(arts, data_dir) if int8_peers else None
        if int8_peers:
            bar.update(task, description="quantizing the INT8 peers")
        variants, skipped = plan(arts, parse_backends(backend), checkpoint=ckpt, device=device, peers=peers,
                                 precisions=wanted, threads=threads, peer_calibration=calib,
                                 compile_precisions=compiled)
        x, labels = eval_inputs(arts, max(accuracy_images, max(cfg.batches)), data_dir)
        result = run_bench(arts, variants, cfg, x, labelled=(x, labels),
                           progress=lambda d: bar.update(task, description=f"bench: {d}"))
    result.skipped = skipped
    console.print(bench_table(result))
    sp = speedup_table(result)
    if sp is not None:
        console.print(sp)
    for line in skipped:
        console.print(f"[yellow]skipped:[/] {escape(line)}", highlight=False)
    for path, writer in ((json_out, write_bench_json), (csv_out, write_bench_csv), (plot, write_bench_plot)):
        if path:
            console.print(f"wrote {writer(result, path)}")


def register(app: typer.Typer) -> None:
    app.command("parity")(parity_cmd)
    app.command("bench")(bench_cmd)
