"""`resnet-edge serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from resnet_edge.cli_util import cli_errors, make_console
from resnet_edge.errors import MissingDependency
from runtime.cli import _seconds

console = make_console()
Opt = typer.Option


@cli_errors
def serve_cmd(
    artifacts_dir: Annotated[Path, typer.Argument(help="Directory with manifest.json.")] = Path("artifacts"),
    backend: Annotated[str, Opt(help="auto (fastest that passes parity here), or a backend: onnxruntime, openvino, "
                                     "torch, tensorrt, tensorrt_rtx, litert, ncnn, executorch, aoti.")] = "auto",
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
    head_timeout: Annotated[str, Opt(help="A request's line and headers must arrive whole within this from its first "
                                          "byte (or from the connection's opening), else 408 and the connection "
                                          "closed.")] = "10s",
    idle_timeout: Annotated[str, Opt(help="A kept-alive connection that sends no new request is closed after "
                                          "this.")] = "5s",
    max_url_kb: Annotated[float, Opt(help="Longest request line; past it, 414 and closed.")] = 8.0,
    max_header_kb: Annotated[float, Opt(help="Request line and headers together; past it, 431 and closed (read "
                                             "before authentication, so kept small).")] = 64.0,
    drain_timeout: Annotated[str, Opt(help="On SIGTERM or Ctrl-C: how long requests in flight may take to be answered "
                                           "before the server exits anyway (a second signal exits at once).")] = "30s",
    max_connections: Annotated[int, Opt(help="Open connections (and requests in progress) before new requests get "
                                             "503.")] = 1024,
    api_key: Annotated[Optional[str], Opt(help="Require 'Authorization: Bearer KEY'. Prefer setting RESNET_EDGE_API_KEY: "
                                               "a flag shows in ps. An empty key is refused.")] = None,
    allowed_hosts: Annotated[str, Opt(help="Host header names answered besides localhost, 127.0.0.1 and ::1 when bound "
                                           "to a loopback address (others get 421: DNS rebinding); comma-separated, "
                                           "'*' for any. On another address: if given, only these.")] = "",
    threads: Annotated[int, Opt(help="Backend threads (0: library default).")] = 0,
    device: Annotated[str, Opt(help="cpu, or vulkan: ncnn's compute shaders on a Vulkan GPU (a server that cannot "
                                    "use the device does not start, and says why).")] = "cpu",
    gpu_index: Annotated[int, Opt(help="Which Vulkan device, with --device vulkan.")] = 0,
    log_level: Annotated[str, Opt(help="debug logs one JSON line per request; errors are always logged.")] = "info",
    probe_lane: Annotated[bool, Opt("--probe-lane/--no-probe-lane",
                                    help="Answer GET /v2/health/* in the HTTP protocol, ahead of queued requests "
                                         "(--no-probe-lane: through the app, as any route).")] = True,
    deliver_slice: Annotated[int, Opt(help="Requests answered per event-loop turn when a batch finishes (a tuning "
                                           "knob for A/B runs).", hidden=True)] = 8,
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
        max_buffer_mb=max_buffer_mb, max_connections=max_connections, api_key=api_key,
        drain_timeout_s=_seconds(drain_timeout), head_timeout_s=_seconds(head_timeout),
        idle_timeout_s=_seconds(idle_timeout), max_url_kb=max_url_kb, max_header_kb=max_header_kb,
        allowed_hosts=tuple(h for h in allowed_hosts.split(",") if h.strip()), threads=threads, device=device,
        gpu_index=gpu_index,
        log_level=log_level, probe_lane=probe_lane, deliver_slice=deliver_slice)))


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
