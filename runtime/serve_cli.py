"""`resnet-edge serve` and `resnet-edge loadtest`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from resnet_edge.cli_util import cli_errors, make_console
from resnet_edge.errors import InvalidInput, MissingDependency
from runtime.cli import _ints, _seconds

console = make_console()
Opt = typer.Option


@cli_errors
def serve_cmd(
    artifacts_dir: Annotated[Path, typer.Argument(help="Directory with manifest.json.")] = Path("artifacts"),
    backend: Annotated[str, Opt(help="auto (fastest that passes parity here), onnxruntime, openvino, torch, tensorrt.")] = "auto",
    precision: Annotated[str, Opt(help="fp32, fp16, bf16, int8 or int8-cpu (with an explicit --backend).")] = "fp32",
    host: Annotated[str, Opt(help="Bind address; 127.0.0.1 keeps the server local.")] = "127.0.0.1",
    port: Annotated[int, Opt()] = 8000,
    grpc_port: Annotated[Optional[int], Opt(help="Also serve KServe v2 over gRPC on this port (same host).")] = None,
    model_name: Annotated[Optional[str], Opt(help="Model name in the KServe v2 URLs (default: the manifest's, e.g. "
                                                  "resnet18).")] = None,
    max_batch_size: Annotated[int, Opt(help="Largest merged batch, and the largest request batch.")] = 64,
    max_queue_delay_us: Annotated[int, Opt(help="Extra wait for more requests (0: merge only what is queued).")] = 0,
    max_queue: Annotated[int, Opt(help="Queued requests before new ones get 503 + Retry-After.")] = 1024,
    request_timeout: Annotated[str, Opt(help="Per-request timeout.")] = "30s",
    max_body_mb: Annotated[float, Opt(help="Largest accepted request body.")] = 32.0,
    body_timeout: Annotated[str, Opt(help="A request body must arrive whole within this, else 408.")] = "30s",
    max_buffer_mb: Annotated[float, Opt(help="Request bodies being read on all connections together; past it, "
                                             "503 + Retry-After.")] = 256.0,
    max_connections: Annotated[int, Opt(help="Open connections (and requests in progress) before new requests get "
                                             "503.")] = 1024,
    api_key: Annotated[Optional[str], Opt(help="Require 'Authorization: Bearer KEY' (or set RESNET_EDGE_API_KEY).")] = None,
    threads: Annotated[int, Opt(help="Backend threads (0: library default).")] = 0,
    log_level: Annotated[str, Opt(help="debug logs one JSON line per request; errors are always logged.")] = "info",
) -> None:
    """Serve the artifacts over the KServe v2 / Triton HTTP protocol, with dynamic batching."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401

        if grpc_port is not None:
            import grpc  # noqa: F401
            import tritonclient.grpc  # noqa: F401
    except ImportError:
        raise MissingDependency("Serving needs starlette, uvicorn, grpcio and tritonclient, which the runtime's own install "
                                "brings: pip install resnet-edge (pip install . in a checkout).") from None
    from runtime.serving.server import ServeConfig, serve

    raise typer.Exit(serve(ServeConfig(
        artifacts=artifacts_dir, backend=backend, precision=precision, model_name=model_name, host=host, port=port,
        grpc_port=grpc_port,
        max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us, max_queue=max_queue,
        request_timeout_s=_seconds(request_timeout), max_body_mb=max_body_mb, body_timeout_s=_seconds(body_timeout),
        max_buffer_mb=max_buffer_mb, max_connections=max_connections, api_key=api_key, threads=threads,
        log_level=log_level)))


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
                                                  "default: Fashion-MNIST's test set, for a model that reads it).")] = None,
) -> None:
    """Drive a KServe v2 server at each concurrency level; report throughput, latency and errors. Images are
    prepared as the server's model metadata says."""
    from resnet_edge.atomic import atomic_write_text
    from runtime.loadtest import LoadTestConfig, results_dicts, run_loadtest

    try:
        rates = tuple(float(r) for r in rate.split(",")) if rate else ()
    except ValueError:
        raise InvalidInput(f"--rate must be comma-separated numbers, not '{rate}'.") from None
    cfg = LoadTestConfig(url=url.rstrip("/"), model=model, concurrency=_ints(concurrency, "--concurrency"),
                         rates=rates, protocol=protocol, grpc_url=grpc_url,
                         duration_s=_seconds(duration), batch=batch, binary=binary, api_key=api_key,
                         server_pid=server_pid, data_dir=str(data_dir) if data_dir else None,
                         artifacts=str(artifacts) if artifacts else None)
    what = "rate {} req/s" if rates else "concurrency {}"
    results = run_loadtest(cfg, progress=lambda c: console.print(f"[dim]{what.format(c)} for {cfg.duration_s:g}s[/]"))
    payload = "raw gRPC tensors" if protocol == "grpc" else f"{'binary' if binary else 'JSON'} tensors"
    table = Table(title=f"loadtest {url} ({payload}, batch {batch}, {'open loop' if rates else 'closed loop'})",
                  title_justify="left")
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
                                                "open_loop": bool(rates), "levels": rows}, indent=2))
    if csv_out:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=[k for k in rows[0] if k != "error_kinds"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(csv_out, buf.getvalue())
    if any(r.errors for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
    app.command("loadtest")(loadtest_cmd)
