"""What every front end of the server shares: its settings and counters, and the data plane over them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from runtime.serving.batcher import DynamicBatcher
from runtime.serving.dataplane import DataPlane
from runtime.serving.metrics import Metrics
from runtime.serving.watchdog import Watchdog
from runtime.spec import ModelSpec


@dataclass
class ServerState:
    spec: ModelSpec
    model_name: str
    platform: str
    batcher: DynamicBatcher
    metrics: Metrics
    max_batch_size: int
    max_body_bytes: int
    request_timeout_s: float
    api_key: str | None = None
    allowed_hosts: frozenset[str] | None = None  # Host header names answered (None: any); see host_allowed
    body_timeout_s: float = 30.0  # a body must arrive whole within this, or the request gets 408
    max_buffered_bytes: int = 256 << 20  # request bodies being read, all connections together; past it, 503
    buffered: int = 0
    ready: bool = False
    draining: bool = False
    inflight: int = 0
    failed: bool = False  # the backend could not load: the server exits non-zero
    max_connections: int = 1024  # uvicorn's limit_concurrency; past it, new requests get 503 and readiness says so
    connections: int = 0  # open HTTP connections (runtime.serving.probes keeps the count)
    head_timeout_s: float = 10.0  # a request head (line and headers) must arrive whole within this, else 408
    max_url_bytes: int = 8 << 10  # the request line; past it, 414
    max_head_bytes: int = 64 << 10  # the request line and headers together; past it, 431
    buckets: tuple[int, ...] = ()  # the batch sizes a static-shape backend runs; batches are padded to them
    on_fatal: Callable[[], None] | None = None
    watchdog: Watchdog = field(default_factory=Watchdog)  # body deadlines and disconnect watches, one timer
    plane: DataPlane = field(init=False, repr=False)  # what HTTP and gRPC both serve (runtime.serving.dataplane)

    def __post_init__(self) -> None:
        self.plane = DataPlane(self)
