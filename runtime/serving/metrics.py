"""Prometheus metrics: requests by status, latency, queue time, inference time, batch sizes."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from runtime.serving.batcher import BatchStats

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    def __init__(self, max_batch_size: int) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("resnet_edge_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("resnet_edge_request_duration_seconds", "Request latency in the server",
                                 ["endpoint"], buckets=_LATENCY, registry=r)
        self.queue = Histogram("resnet_edge_queue_duration_seconds", "Time a request waited for its batch",
                               buckets=_LATENCY, registry=r)
        self.inference = Histogram("resnet_edge_inference_duration_seconds", "Backend time per batch",
                                   buckets=_LATENCY, registry=r)
        buckets = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, max_batch_size})
        self.batch = Histogram("resnet_edge_batch_size", "Images per executed batch",
                               buckets=[b for b in buckets if b <= max_batch_size], registry=r)
        self.depth = Gauge("resnet_edge_queue_depth", "Requests waiting for a batch", registry=r)

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def on_batch(self, stats: BatchStats, waits: list[float]) -> None:
        self.inference.observe(stats.infer_s)
        self.batch.observe(stats.batch_size)
        for w in waits:
            self.queue.observe(w)

    def exposition(self, depth: int) -> tuple[bytes, str]:
        self.depth.set(depth)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
