"""`resnet-edge serve`: pick a verified variant, load it off the event loop, serve with uvicorn,
drain on SIGTERM (in-flight requests finish, new ones get 503) and exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_edge.errors import InvalidInput, ToolkitError
from runtime.predict import Predictor
from runtime.select import choose_variant
from runtime.serving.app import ServerState, create_app
from runtime.serving.batcher import DynamicBatcher
from runtime.serving.metrics import Metrics
from runtime.serving.probes import http_protocol
from runtime.spec import Artifacts, load_artifacts
from runtime.variants import Variant

log = logging.getLogger("resnet_edge.serve")
API_KEY_ENV = "RESNET_EDGE_API_KEY"


@dataclass(frozen=True)
class ServeConfig:
    artifacts: Path = Path("artifacts")
    backend: str = "auto"
    precision: str = "fp32"  # fp32 | fp16 | bf16 | int8 | int8-cpu ; ignored by auto
    model_name: str | None = None  # None: the manifest's model name (resnet18, resnet50, ...)
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = None  # KServe v2 over gRPC as well, on the same host; off unless given
    max_batch_size: int = 64
    max_queue_delay_us: int = 0  # as Triton: no added wait; requests queued behind a running batch still merge
    max_queue: int = 1024
    request_timeout_s: float = 30.0
    max_body_mb: float = 32.0
    body_timeout_s: float = 30.0  # a request body must arrive whole within this (408)
    max_buffer_mb: float = 256.0  # request bodies being read on every connection together (503 past it)
    max_connections: int = 1024  # open connections (and requests in progress) before new requests get 503
    head_timeout_s: float = 10.0  # a request head must arrive whole within this (408, closed)
    idle_timeout_s: float = 5.0  # a kept-alive connection with no new request is closed after this
    max_url_kb: float = 8.0  # the request line (414 past it)
    max_header_kb: float = 64.0  # the request line and headers together (431 past it)
    api_key: str | None = None  # prefer RESNET_EDGE_API_KEY: a flag shows in ps
    allowed_hosts: tuple[str, ...] = ()  # Host names answered besides the loopback ones (bound to loopback); "*": any
    threads: int = 0
    device: str = "cpu"  # or vulkan: ncnn on Vulkan device gpu_index
    gpu_index: int = 0
    drain_timeout_s: float = 30.0
    log_level: str = "info"
    probe_lane: bool = True  # health probes answered by the HTTP protocol itself (runtime.serving.probes)
    deliver_slice: int = 8  # requests answered per event-loop turn when a batch finishes (runtime.serving.batcher)


def build(cfg: ServeConfig) -> tuple[object, ServerState, Variant, Artifacts]:
    if not 1 <= cfg.max_batch_size <= 4096:
        raise InvalidInput("--max-batch-size must be in 1..4096.")
    numbers = (cfg.request_timeout_s, cfg.max_body_mb, cfg.body_timeout_s, cfg.max_buffer_mb, cfg.drain_timeout_s,
               cfg.head_timeout_s, cfg.idle_timeout_s, cfg.max_url_kb, cfg.max_header_kb)
    if (cfg.max_queue < 1 or cfg.max_queue_delay_us < 0 or cfg.max_connections < 1
            or not all(math.isfinite(v) and v > 0 for v in numbers)):
        raise InvalidInput("--max-queue, --max-queue-delay-us, --request-timeout, --max-body-mb, --body-timeout, "
                           "--max-buffer-mb, --drain-timeout, --head-timeout, --idle-timeout, --max-url-kb, "
                           "--max-header-kb and --max-connections must be positive (finite) numbers.")
    for what, port in (("--port", cfg.port), ("--grpc-port", cfg.grpc_port)):
        if port is not None:
            _check_port(what, cfg.host, port)
    api_key, allowed = _api_key(cfg), allowed_hosts(cfg)
    arts = load_artifacts(cfg.artifacts)
    variant = choose_variant(arts, cfg)
    predictor = Predictor(arts, variant, max_batch=cfg.max_batch_size, load=False)  # loaded off the event loop
    metrics = Metrics(cfg.max_batch_size)
    batcher = DynamicBatcher(predictor.logits, max_batch_size=cfg.max_batch_size,
                             max_queue_delay_us=cfg.max_queue_delay_us, max_queue=cfg.max_queue,
                             on_batch=metrics.on_batch, deliver_slice=cfg.deliver_slice)
    state = ServerState(spec=arts.spec, model_name=cfg.model_name or arts.spec.name,
                        platform=f"resnet-edge/{variant.label}", batcher=batcher, metrics=metrics,
                        max_batch_size=cfg.max_batch_size, max_body_bytes=int(cfg.max_body_mb * 2**20),
                        request_timeout_s=cfg.request_timeout_s, api_key=api_key, allowed_hosts=allowed,
                        body_timeout_s=cfg.body_timeout_s, max_buffered_bytes=int(cfg.max_buffer_mb * 2**20),
                        max_connections=cfg.max_connections, head_timeout_s=cfg.head_timeout_s,
                        max_url_bytes=int(cfg.max_url_kb * 1024), max_head_bytes=int(cfg.max_header_kb * 1024))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        grpc_server = None
        if cfg.grpc_port is not None:
            from runtime.serving.grpc_service import start_grpc

            grpc_server = await start_grpc(state, cfg.host, cfg.grpc_port)
        loader = asyncio.create_task(_load(predictor, state, arts))
        yield
        loader.cancel()
        if grpc_server is not None:
            await grpc_server.stop(cfg.drain_timeout_s)  # in-flight calls finish, new ones are refused
        try:  # the batcher answers what it holds; a backend stuck in a batch cannot hold the exit past the drain
            await asyncio.wait_for(batcher.stop(), cfg.drain_timeout_s)
        except TimeoutError:
            log.warning("the batcher did not finish within --drain-timeout %.3g s; exiting without it", cfg.drain_timeout_s)
        predictor.close()

    return create_app(state, lifespan), state, variant, arts


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _check_port(what: str, host: str, port: int) -> None:
    """One sentence for a port that is out of range or taken, before anything starts (grpcio and uvicorn would
    each report it their own way, mid-start-up)."""
    import socket

    if not 0 <= port <= 65535:
        raise InvalidInput(f"{what} {port} is not a TCP port (0-65535).")
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InvalidInput(f"--host {host} does not resolve ({exc.strerror or exc}).") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise InvalidInput(f"Cannot listen on {host}:{port} ({what}): {exc.strerror or exc}.") from None


def _api_key(cfg: ServeConfig) -> str | None:
    """The key requests must carry: the flag, else RESNET_EDGE_API_KEY, else none. An empty key would switch
    authentication off while looking like it is on: refused."""
    env = os.environ.get(API_KEY_ENV)
    if cfg.api_key is not None and not cfg.api_key.strip():
        raise InvalidInput("--api-key is empty, which would switch authentication off; give a key (better: set "
                           f"{API_KEY_ENV}, which ps does not show), or leave both out to serve without one.")
    if cfg.api_key is None and env is not None and not env.strip():
        raise InvalidInput(f"{API_KEY_ENV} is set but empty, which would switch authentication off; give it a key "
                           "or unset it.")
    if cfg.api_key is not None:
        log.warning("--api-key shows in the process list (ps); prefer the %s environment variable", API_KEY_ENV)
    key = cfg.api_key or env
    if key is None and not is_loopback(cfg.host):
        log.warning("serving on %s, a non-loopback address, without an API key: anyone who can reach it can use it "
                    "(set %s)", cfg.host, API_KEY_ENV)
    return key


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(cfg: ServeConfig) -> frozenset[str] | None:
    """The Host names a request may give: on a loopback address, the loopback names and --allowed-hosts (DNS
    rebinding, runtime.serving.hosts.host_allowed); on any other, any name unless --allowed-hosts lists some."""
    from runtime.serving.hosts import LOOPBACK_NAMES

    extra = {h.strip().lower().strip("[]") for h in cfg.allowed_hosts if h.strip()}
    if "*" in extra:
        return None
    if is_loopback(cfg.host):
        return LOOPBACK_NAMES | extra
    return frozenset(extra) if extra else None


async def _load(predictor: Predictor, state: ServerState, arts: Artifacts) -> None:
    """Load and warm up off the event loop; until then /ready and infer answer 503. A backend that
    cannot load is logged with its cause and stops the server, which then exits non-zero."""
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    try:
        backend = predictor.backend
        await loop.run_in_executor(None, predictor.load)
        if getattr(backend, "fell_back", False):
            raise InvalidInput(f"{backend.describe()}: the device asked for is not used, so the server does not start.")
        # Every shape the backend will ever run is compiled (static backends do so in load) and run once.
        for n in backend.buckets if backend.static_shapes else sorted({1, state.max_batch_size}):
            await loop.run_in_executor(None, backend.infer, np.zeros((n, *arts.spec.chw), np.float32))
        state.buckets = backend.buckets if backend.static_shapes else ()
    except ToolkitError as exc:
        log.error("cannot serve: %s", exc)
    except Exception:
        log.exception("cannot serve: the backend failed to load")
    else:
        # Everything allocated so far (the libraries, the model) lives as long as the server: moving it out of
        # the collector's sight keeps full collections from pausing every in-flight request for tens of ms.
        gc.collect()
        gc.freeze()
        _signal_stack()
        state.ready = True
        log.info("ready: %s loaded and warmed up in %.2f s", predictor.backend.describe(), time.perf_counter() - t0)
        return
    state.failed = True
    if state.on_fatal is not None:
        state.on_fatal()


def _signal_stack() -> None:
    """Give the main thread an alternate signal stack large enough for this CPU's register state.

    Python installs its signal handlers with SA_ONSTACK, and a library loaded by now can leave the main
    thread a small alternate stack: on an AVX-512 CPU, the first SIGTERM then overflowed it while the
    dynamic linker saved the vector registers, and the server died with SIGSEGV instead of draining.
    faulthandler allocates a stack sized from sysconf(_SC_SIGSTKSZ), and tracebacks on a crash come along."""
    import faulthandler

    faulthandler.enable()


def serve(cfg: ServeConfig) -> int:
    import uvicorn

    if cfg.log_level.lower() not in LOG_LEVELS:
        raise InvalidInput(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not '{cfg.log_level}'.")
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app, state, variant, arts = build(cfg)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # our own SIGTERM/SIGINT handling: drain first, then stop
            yield

    # limit_concurrency: uvicorn's own bound on open connections and requests in progress; past it, 503.
    http = http_protocol(state, lane=cfg.probe_lane)
    server = Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False,
                                   proxy_headers=False, lifespan="on", http=http,
                                   limit_concurrency=cfg.max_connections, timeout_keep_alive=cfg.idle_timeout_s,
                                   timeout_graceful_shutdown=int(cfg.drain_timeout_s)))

    async def drain(signum: int) -> None:
        if state.draining:  # a second signal: the operator does not want to wait
            log.warning("second signal: exiting at once, %d request(s) unanswered", state.inflight)
            logging.shutdown()
            os._exit(128 + signum)
        state.draining = True
        log.info("draining: %d request(s) in flight; new requests get 503", state.inflight)
        deadline = time.perf_counter() + cfg.drain_timeout_s
        while state.inflight > 0 and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        server.should_exit = True

    def fatal() -> None:
        server.should_exit = True

    state.on_fatal = fatal

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: asyncio.ensure_future(drain(s)))
        auth = "bearer token required" if state.api_key else "no auth"
        grpc_note = f" and grpc://{cfg.host}:{cfg.grpc_port}" if cfg.grpc_port is not None else ""
        log.info("serving %s (%s) on http://%s:%d%s, %s", state.model_name, variant.label, cfg.host, cfg.port,
                 grpc_note, auth)
        await server.serve()

    _run(main())
    return 1 if state.failed else 0


def _run(coro) -> None:
    """On uvloop where it is installed (uvicorn[standard], a runtime dependency, brings it): an event loop in C
    carries each request at a fraction of asyncio's cost, which is what keeps health checks prompt under load."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
