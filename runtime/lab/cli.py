"""`resnet-edge bench` and `resnet-edge loadtest`: the lab's commands."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from resnet_edge.cli_util import cli_errors, make_console
from resnet_edge.errors import InvalidInput
from runtime.cli import _ints, _progress, _seconds

console = make_console()
Opt = typer.Option


def _peer_calibration(arts, data_dir):
    """Training images for the INT8 peers to calibrate on; None (no INT8 peers) where the dataset is absent."""
    from resnet_edge.errors import DataError
    from runtime.preprocess import load_calibration_inputs

    try:
        return load_calibration_inputs(arts.spec, arts.manifest.evaluation.calibration_indices, data_dir=data_dir)
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
    device: Annotated[str, Opt(help="cpu, cuda, or vulkan (ncnn on a Vulkan GPU; --peers: the same files on "
                                    "ncnn's CPU path).")] = "cpu",
    gpu_index: Annotated[int, Opt(help="Which Vulkan device, with --device vulkan.")] = 0,
    compile_peer: Annotated[str, Opt(help="On CUDA, precisions of the torch.compile max-autotune peers (comma-separated, "
                                          "or none): each compiles for minutes per batch size.")] = "fp16",
    json_out: Annotated[Optional[Path], Opt("--json", help="Write results as JSON.")] = None,
    csv_out: Annotated[Optional[Path], Opt("--csv", help="Write results as CSV.")] = None,
    plot: Annotated[Optional[Path], Opt("--plot", help="Write latency/throughput vs batch as PNG.")] = None,
    data_dir: Annotated[Optional[Path], Opt(help="Directory with the Fashion-MNIST IDX files.")] = None,
    summary: Annotated[bool, Opt("--summary", help="Also check every artifact on the golden set and print one row "
                                                   "per artifact on its own runtime, against the peers (implies "
                                                   "--peers); written to --summary-dir as .md, .csv, .json, .png.")
                       ] = False,
    summary_dir: Annotated[Path, Opt(help="Where --summary writes summary.md/.csv/.json/.png.")] = Path("reports"),
    pareto_with: Annotated[Optional[str], Opt(help="Compressed models' artifact folders, comma-separated: bench them "
                                                   "with ARTIFACTS_DIR (the teacher's) in one interleaved run, each "
                                                   "format on its own runtime, against OpenVINO + NNCF INT8 of each "
                                                   "model, and write pareto.md/.csv/.json/.png to --summary-dir.")] = None,
) -> None:
    """Latency (min/mean/p50/p90/p95/p99/max) and throughput per backend, precision and batch size."""
    from runtime.formats import parse_precisions
    from runtime.lab.bench import BenchConfig, run_bench
    from runtime.lab.peers import peer_variants
    from runtime.lab.report import bench_table, speedup_table, write_bench_csv, write_bench_json, write_bench_plot
    from runtime.preprocess import eval_inputs
    from runtime.spec import load_artifacts
    from runtime.variants import parse_backends, plan

    if rounds < 1 or accuracy_images < 0 or threads < 0:
        raise InvalidInput("--rounds must be at least 1; --accuracy-images and --threads must not be negative.")
    compiled = () if compile_peer.strip() == "none" else tuple(p.strip() for p in compile_peer.split(",") if p.strip())
    if not set(compiled) <= {"fp32", "fp16", "bf16"}:
        raise InvalidInput(f"--compile-peer takes fp32, fp16, bf16 or none, not '{compile_peer}'.")
    cfg = BenchConfig(batches=_ints(batch, "--batch"), warmup_s=_seconds(warmup), duration_s=_seconds(duration),
                      iterations=iterations, roofline=roofline, rounds=rounds, accuracy_images=accuracy_images)
    from runtime.vulkan import check_device

    check_device(device)
    arts = load_artifacts(artifacts_dir)
    if pareto_with is not None:
        return _pareto(arts, pareto_with, cfg, threads, data_dir, summary_dir)
    wanted = set(parse_precisions(precision)) or None
    peers = peers or summary
    with _progress() as bar:
        task = bar.add_task("preparing")
        # INT8 peers where INT8 is benched (on CUDA the peers are PyTorch's): an FP32/FP16 run has no use for them
        int8_peers = peers and not device.startswith(("cuda", "vulkan")) and (wanted is None or any(
            p.split("-")[0] == "int8" for p in wanted))
        calib = _peer_calibration(arts, data_dir) if int8_peers else None
        if int8_peers:
            bar.update(task, description="quantizing the INT8 peers")
        if device == "vulkan":  # no other Vulkan runtime runs here: the peers are the same files on the CPU
            extra = (_cpu_twins(arts, threads), []) if peers else None
        else:
            extra = peer_variants(arts, threads=threads, calibration=calib, device=device,
                                  compile_precisions=compiled) if peers else None
        variants, skipped = plan(arts, parse_backends(backend), device=device, precisions=wanted,
                                 threads=threads, extra=extra, gpu_index=gpu_index)
        x, labels = eval_inputs(arts, max(accuracy_images, max(cfg.batches)), data_dir)
        result = run_bench(arts, variants, cfg, x, labelled=(x, labels),
                           progress=lambda d: bar.update(task, description=f"bench: {d}"))
        if summary:
            rows = _summary_rows(arts, variants, result, lambda d: bar.update(task, description=f"parity: {d}"))
    result.skipped = skipped
    console.print(bench_table(result))
    if device == "vulkan":
        from runtime.vulkan import device as vulkan_device

        console.print(escape(vulkan_device(gpu_index).where()), highlight=False)
    sp = speedup_table(result)
    if sp is not None:
        console.print(sp)
    for line in skipped:
        console.print(f"[yellow]skipped:[/] {escape(line)}", highlight=False)
    for path, writer in ((json_out, write_bench_json), (csv_out, write_bench_csv), (plot, write_bench_plot)):
        if path:
            console.print(f"wrote {writer(result, path)}")
    if summary:
        _write_summary(rows, result, summary_dir)


def _pareto(arts, pareto_with: str, cfg, threads: int, data_dir, out_dir: Path) -> None:
    from runtime.lab.pareto import pareto_bench, pareto_markdown, write_pareto
    from runtime.lab.report import header
    from runtime.preprocess import eval_inputs
    from runtime.spec import load_artifacts

    others = [load_artifacts(Path(p.strip())) for p in pareto_with.split(",") if p.strip()]
    if not others:
        raise InvalidInput("--pareto-with needs at least one artifact folder besides ARTIFACTS_DIR.")
    with _progress() as bar:
        task = bar.add_task("quantizing the NNCF INT8 peers")
        calib = _peer_calibration(arts, data_dir)
        x, labels = eval_inputs(arts, max(cfg.accuracy_images, max(cfg.batches)), data_dir)
        result, rows = pareto_bench([arts, *others], cfg, x, labels, threads=threads, calibration=calib,
                                    progress=lambda d: bar.update(task, description=f"bench: {d}"))
    console.print(pareto_markdown(rows), markup=False, highlight=False)
    meta = {"machine": header(result), "largest_batch": max(result.config.batches),
            "speedup": "the teacher's OpenVINO + NNCF INT8 p50 over this row's: above 1 is this row faster",
            "bench": result.to_dict()}
    for path in write_pareto(rows, out_dir, meta):
        console.print(f"wrote {path}")


def _summary_rows(arts, variants, result, progress):
    """The golden-set parity of every artifact on its own runtime, then the summary rows."""
    from runtime import backends
    from runtime.formats import FORMATS
    from runtime.lab.summary import build_summary, primary_variants
    from runtime.parity import choose_reference, run_parity

    report = run_parity(arts, primary_variants(variants), choose_reference(arts, use="golden"), progress=progress)
    not_run = {a.format: reason for a in arts.items
               if (reason := backends.unavailable_reason(FORMATS[a.format].backends[0]))}
    return build_summary(arts, variants, result, report, not_run)


def _write_summary(rows, result, out_dir: Path) -> None:
    from runtime.lab.report import header
    from runtime.lab.summary import summary_table, write_summary

    title = f"every artifact on its own runtime, parity on the golden set; {header(result)}"
    console.print(summary_table(rows, title))
    meta = {"machine": header(result), "largest_batch": max(result.config.batches),
            "speedup": "peer p50 / ours p50: above 1 is ours faster"}
    written = [write_summary(rows, out_dir / f"summary{ext}", meta) for ext in (".md", ".csv", ".json", ".png")]
    console.print("wrote " + ", ".join(map(str, written)))


@cli_errors
def loadtest_cmd(
    url: Annotated[str, typer.Argument(help="Server base URL, e.g. http://127.0.0.1:8000")],
    model: Annotated[Optional[str], Opt(help="Model name (default: the one model the server lists).")] = None,
    concurrency: Annotated[str, Opt(help="Comma-separated concurrency levels (closed loop).")] = "1,4,16,64",
    rate: Annotated[Optional[str], Opt(help="Comma-separated request rates per second: open loop, Poisson "
                                            "arrivals, instead of the concurrency levels.")] = None,
    protocol: Annotated[str, Opt(help="http or grpc.")] = "http",
    grpc_url: Annotated[Optional[str], Opt(help="HOST:PORT of the server's gRPC endpoint (with --protocol grpc).")] = None,
    duration: Annotated[str, Opt(help="Time per level.")] = "10s",
    batch: Annotated[int, Opt(help="Images per request.")] = 1,
    binary: Annotated[bool, Opt("--binary/--json-payload", help="Binary tensor extension or JSON tensors.")] = True,
    api_key: Annotated[Optional[str], Opt(help="Bearer token.")] = None,
    server_pid: Annotated[Optional[int], Opt(help="Report the server's resident memory before/after each level.")] = None,
    json_out: Annotated[Optional[Path], Opt("--json", help="Write results as JSON.")] = None,
    csv_out: Annotated[Optional[Path], Opt("--csv", help="Write results as CSV.")] = None,
    data_dir: Annotated[Optional[Path], Opt(help="Directory with the Fashion-MNIST IDX files.")] = None,
    artifacts: Annotated[Optional[Path], Opt(help="Send the golden set's images of these artifacts (any model; "
                                                  "default: Fashion-MNIST's test set for a model that reads it, else "
                                                  "synthetic inputs from the model's metadata).")] = None,
    synthetic: Annotated[bool, Opt("--synthetic", help="Synthetic inputs of the model's shape and value range, from "
                                                       "its metadata alone, as perf_analyzer sends.")] = False,
) -> None:
    """Drive a KServe v2 server at each concurrency level; report throughput, latency and errors. Images are
    prepared as the server's model metadata says."""
    from resnet_edge.atomic import atomic_write_text
    from runtime.lab.loadtest import LoadTestConfig, results_dicts, run_loadtest

    try:
        rates = tuple(float(r) for r in rate.split(",")) if rate else ()
    except ValueError:
        raise InvalidInput(f"--rate must be comma-separated numbers, not '{rate}'.") from None
    cfg = LoadTestConfig(url=url.rstrip("/"), model=model, concurrency=_ints(concurrency, "--concurrency"),
                         rates=rates, protocol=protocol, grpc_url=grpc_url,
                         duration_s=_seconds(duration), batch=batch, binary=binary, api_key=api_key,
                         server_pid=server_pid, data_dir=str(data_dir) if data_dir else None,
                         artifacts=str(artifacts) if artifacts else None, synthetic=synthetic)
    what = "rate {} req/s" if rates else "concurrency {}"
    results = run_loadtest(cfg, progress=lambda c: console.print(f"[dim]{what.format(c)} for {cfg.duration_s:g}s[/]"))
    payload = "raw gRPC tensors" if protocol == "grpc" else f"{'binary' if binary else 'JSON'} tensors"
    table = Table(title=f"loadtest {url} ({payload}, batch {batch}, {'open loop' if rates else 'closed loop'}; "
                        f"inputs: {results[0].inputs})", title_justify="left")
    first = ["offered req/s", "peak in flight"] if rates else ["concurrency"]
    for col in (*first, "requests", "errors", "req/s", "img/s", "p50 ms", "p90 ms", "p99 ms", "health p99 ms",
                "server RSS MB"):
        table.add_column(col, justify="right")
    for r in results:
        rss = f"{r.rss_start_mb:.0f} -> {r.rss_end_mb:.0f}" if r.rss_start_mb and r.rss_end_mb else ""
        err = f"[red]{r.errors}[/] {r.error_kinds}" if r.errors else "0"
        lead = [f"{r.rate:g}", str(r.concurrency)] if rates else [str(r.concurrency)]
        table.add_row(*lead, str(r.requests), err, f"{r.throughput_rps:,.1f}", f"{r.images_per_s:,.1f}",
                      f"{r.p50_ms:.3f}", f"{r.p90_ms:.3f}", f"{r.p99_ms:.3f}",
                      f"{r.health_p99_ms:.3f}" if r.health_p99_ms is not None else "", rss)
    console.print(table)
    rows = results_dicts(results)
    if json_out:
        atomic_write_text(json_out, json.dumps({"url": url, "protocol": protocol, "binary": binary, "batch": batch,
                                                "open_loop": bool(rates), "inputs": results[0].inputs,
                                                "levels": rows}, indent=2))
    if csv_out:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=[k for k in rows[0] if k != "error_kinds"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(csv_out, buf.getvalue())
    if any(r.errors for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_cmd)
    app.command("loadtest")(loadtest_cmd)


def _cpu_twins(arts, threads: int) -> list:
    """The ncnn files on ncnn's CPU path, as the peers of a Vulkan bench."""
    import dataclasses

    from runtime.variants import plan

    found, _ = plan(arts, ["ncnn"], device="cpu", threads=threads)
    return [dataclasses.replace(v, label=f"peer: {v.label} cpu", peer=True) for v in found]
