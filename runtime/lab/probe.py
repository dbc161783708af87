"""The health checker of a load test: GET /v2/health/ready from a process of its own while a level runs."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from resnet_edge.errors import InvalidInput


def _probe(url: str, every_s: float, started, stop, out) -> None:
    """The health checker's process: GET /v2/health/ready on its own keep-alive connection every
    ``every_s`` until told to stop; sends back the latencies of the 200 answers."""
    import http.client

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=10)
    seen: list[float] = []
    started.set()
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            conn.request("GET", "/v2/health/ready")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                seen.append(time.perf_counter() - t0)
        except (OSError, http.client.HTTPException):
            conn.close()
        stop.wait(every_s)
    conn.close()
    out.send(seen)


class HealthProbe:
    """Polls /v2/health/ready every 20 ms while a level runs, as a liveness checker would: from a process
    of its own, so that what it measures is the server's event loop, not the load generator's (whose loop
    is as busy as the server's and whose GIL it would otherwise share)."""

    def __init__(self, url: str, every_s: float = 0.02) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.started, self.stop = ctx.Event(), ctx.Event()
        self.recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_probe, args=(url, every_s, self.started, self.stop, send), daemon=True)
        self.proc.start()
        if not self.started.wait(60):
            self.proc.kill()
            raise InvalidInput("The health probe process did not start.")

    def finish(self) -> list[float]:
        self.stop.set()
        seen = self.recv.recv() if self.recv.poll(30) else []
        self.proc.join(10)
        return seen
