"""`resnet-edge loadtest`: a perf_analyzer-like load generator for KServe v2 servers, over HTTP or gRPC.

Closed loop (``--concurrency``): each level runs N workers, each on its own keep-alive HTTP/1.1 connection
(a lean asyncio client, so the generator itself adds little latency) or its own gRPC channel, sending real
images (the artifacts' golden set, or Fashion-MNIST's test set) prepared as the server's model metadata says
(input shape, datatype and preprocessing), and checking every response. Open loop (``--rate``): requests arrive as a Poisson
process at a fixed rate whatever the server does, and each latency counts from the request's scheduled
arrival, so a server that falls behind shows it (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from resnet_edge.errors import InvalidInput
from runtime.lab.load_client import GrpcSender, HttpSender, encode_requests, grpc_requests, model_metadata
from runtime.lab.load_inputs import request_images
from runtime.lab.probe import HealthProbe


@dataclass(frozen=True)
class LoadResult:
    concurrency: int  # closed loop: workers; open loop: the most requests in flight at once
    requests: int
    errors: int
    seconds: float
    throughput_rps: float
    images_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    error_kinds: dict[str, int] = field(default_factory=dict)
    rss_start_mb: float | None = None
    rss_end_mb: float | None = None
    rate: float | None = None  # open loop: the offered request rate
    protocol: str = "http"
    health_p99_ms: float | None = None  # GET /v2/health/ready every 20 ms during the level, from its own process
    inputs: str = ""  # what was sent: real images (which) or synthetic ones


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS"))
    except (OSError, StopIteration):
        return None


def _result(protocol, concurrency, latencies, errors, seconds, batch, rss_start, server_pid, rate=None,
            health=None) -> LoadResult:
    ms = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
    n_err = sum(errors.values())
    return LoadResult(concurrency, len(latencies) + n_err, n_err, seconds, len(latencies) / seconds,
                      len(latencies) * batch / seconds, float(np.percentile(ms, 50)), float(np.percentile(ms, 90)),
                      float(np.percentile(ms, 99)), float(ms.mean()), errors, rss_start, rss_mb(server_pid),
                      rate=rate, protocol=protocol,
                      health_p99_ms=float(np.percentile(health, 99) * 1e3) if health else None)


async def run_level(make_sender, protocol: str, payloads, concurrency: int, duration_s: float, batch: int,
                    server_pid: int | None = None, health_url: str | None = None) -> LoadResult:
    """Closed loop: ``concurrency`` workers, each sending its next request as soon as the last returns."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    rss_start = rss_mb(server_pid)

    async def worker(offset: int) -> None:
        sender = make_sender()
        i = offset
        try:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                kind = await sender.send(payloads[i % len(payloads)])
                i += concurrency
                if kind is None:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[kind] = errors.get(kind, 0) + 1
        finally:
            await sender.close()

    probe = HealthProbe(health_url) if health_url else None
    t0 = time.perf_counter()
    stop_at = t0 + duration_s
    try:
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    finally:
        health = probe.finish() if probe else None
    seconds = time.perf_counter() - t0
    return _result(protocol, concurrency, latencies, errors, seconds, batch, rss_start, server_pid, health=health)


async def run_rate(make_sender, protocol: str, payloads, rate: float, duration_s: float, batch: int,
                   server_pid: int | None = None, seed: int = 0) -> LoadResult:
    """Open loop: Poisson arrivals at ``rate`` per second; each request gets an idle sender or a new one."""
    rng = np.random.default_rng(seed)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    idle: list = []
    senders: list = []
    in_flight = peak = 0
    rss_start = rss_mb(server_pid)

    async def one(i: int, scheduled: float) -> None:
        nonlocal in_flight
        sender = idle.pop() if idle else None
        if sender is None:
            sender = make_sender()
            senders.append(sender)
        kind = await sender.send(payloads[i % len(payloads)])
        idle.append(sender)
        in_flight -= 1
        if kind is None:
            latencies.append(time.perf_counter() - scheduled)  # from the arrival, not from the send
        else:
            errors[kind] = errors.get(kind, 0) + 1

    t0 = time.perf_counter()
    next_at, tasks, i = t0, [], 0
    while next_at < t0 + duration_s:
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        in_flight += 1
        peak = max(peak, in_flight)
        tasks.append(asyncio.create_task(one(i, next_at)))
        i += 1
        next_at += rng.exponential(1.0 / rate)
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - t0
    for sender in senders:
        await sender.close()
    return _result(protocol, peak, latencies, errors, seconds, batch, rss_start, server_pid, rate=rate)


@dataclass
class LoadTestConfig:
    url: str
    model: str | None = None  # None: the one model the server's repository index lists
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    rates: tuple[float, ...] = ()  # open-loop levels in requests/s; when given, instead of the concurrency levels
    protocol: str = "http"  # http | grpc
    grpc_url: str | None = None  # host:port of the gRPC endpoint
    duration_s: float = 10.0
    batch: int = 1
    binary: bool = True
    api_key: str | None = None
    server_pid: int | None = None
    data_dir: str | None = None
    artifacts: str | None = None  # send its golden set's images (else Fashion-MNIST's test set, where it fits)
    synthetic: bool = False  # synthetic inputs from the metadata even where real images could be had


def run_loadtest(cfg: LoadTestConfig, progress=None) -> list[LoadResult]:
    if not cfg.url.startswith("http://"):
        raise InvalidInput(f"URL must start with http://, not '{cfg.url}'.")
    if cfg.protocol not in ("http", "grpc"):
        raise InvalidInput(f"--protocol must be http or grpc, not '{cfg.protocol}'.")
    if cfg.protocol == "grpc" and not cfg.grpc_url:
        raise InvalidInput("--protocol grpc needs --grpc-url HOST:PORT (the server's --grpc-port).")
    if any(r <= 0 for r in cfg.rates):
        raise InvalidInput("--rate must be positive requests per second.")
    auth = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    meta = asyncio.run(model_metadata(cfg.url, cfg.model, auth))  # over HTTP: it also proves the server is up
    (inp,), (out,) = meta["inputs"], meta["outputs"]
    model = meta["name"]
    images, source = request_images(meta, cfg.artifacts, cfg.data_dir, 256 * cfg.batch, cfg.synthetic)
    classes = out["shape"][-1]
    if cfg.protocol == "grpc":
        payloads = grpc_requests(images, cfg.batch, model, inp["name"], out["name"])

        def make_sender():
            return GrpcSender(cfg.grpc_url, auth, cfg.batch, classes)
    else:
        payloads = encode_requests(images, cfg.batch, inp["name"], out["name"], cfg.binary)

        def make_sender():
            return HttpSender(cfg.url, model, auth, cfg.batch, classes)
    results = []
    for level in cfg.rates or cfg.concurrency:
        if progress:
            progress(level)
        if cfg.rates:
            run = run_rate(make_sender, cfg.protocol, payloads, level, cfg.duration_s, cfg.batch, cfg.server_pid)
        else:
            run = run_level(make_sender, cfg.protocol, payloads, level, cfg.duration_s, cfg.batch, cfg.server_pid,
                            cfg.url)
        results.append(replace(asyncio.run(run), inputs=source))
    return results


def results_dicts(results: list[LoadResult]) -> list[dict]:
    return [asdict(r) for r in results]
