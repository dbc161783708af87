"""`resnet-edge loadtest`: a perf_analyzer-like load generator for KServe v2 servers.

Each concurrency level runs N workers, each on its own keep-alive HTTP/1.1 connection (a lean
asyncio client, so the generator itself adds little latency), sending real Fashion-MNIST test
images as JSON or binary tensors and checking every response.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import numpy as np

from train.errors import InvalidInput


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
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


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                      ) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        hdrs: dict[str, str] = {}
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            k, _, v = line.decode("latin-1").partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while (size := int((await self.reader.readuntil(b"\r\n")).strip(), 16)) > 0:
                data += await self.reader.readexactly(size + 2)
                data = data[:-2]
            await self.reader.readuntil(b"\r\n")
        else:
            data = await self.reader.readexactly(int(hdrs.get("content-length", "0")))
        if hdrs.get("connection", "").lower() == "close":
            await self.close()
        return status, hdrs, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
            self.writer = self.reader = None


def encode_requests(images: np.ndarray, batch: int, input_name: str, output_name: str, binary: bool,
                    ) -> list[tuple[bytes, dict[str, str]]]:
    """Pre-encoded infer requests over the given images, ``batch`` images each."""
    out = []
    for i in range(0, len(images) - batch + 1, batch):
        x = np.ascontiguousarray(images[i:i + batch], dtype="<f4")
        inp = {"name": input_name, "shape": list(x.shape), "datatype": "FP32"}
        if binary:
            raw = x.tobytes()
            head = json.dumps({"inputs": [{**inp, "parameters": {"binary_data_size": len(raw)}}],
                               "outputs": [{"name": output_name, "parameters": {"binary_data": True}}]}).encode()
            out.append((head + raw, {"Inference-Header-Content-Length": str(len(head)),
                                     "Content-Type": "application/octet-stream"}))
        else:
            body = json.dumps({"inputs": [{**inp, "data": x.ravel().tolist()}],
                               "outputs": [{"name": output_name}]}).encode()
            out.append((body, {"Content-Type": "application/json"}))
    return out


def _check(status: int, headers: dict[str, str], body: bytes, batch: int, classes: int) -> str | None:
    """None if the response is a correct inference result; else a short error kind."""
    if status != 200:
        return f"http {status}"
    n = int(headers.get("inference-header-content-length", len(body)))
    try:
        out = json.loads(body[:n])["outputs"][0]
    except (ValueError, KeyError, IndexError):
        return "bad response"
    return None if out.get("shape") == [batch, classes] else "wrong shape"


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS"))
    except (OSError, StopIteration):
        return None


async def run_level(url: str, model: str, payloads, concurrency: int, duration_s: float, batch: int,
                    classes: int, auth: dict[str, str], server_pid: int | None = None) -> LoadResult:
    parts = urlsplit(url)
    path = f"/v2/models/{model}/infer"
    latencies: list[float] = []
    errors: dict[str, int] = {}
    rss_start = rss_mb(server_pid)
    stop_at = time.perf_counter() + duration_s

    async def worker(offset: int) -> None:
        conn = Connection(parts.hostname or "127.0.0.1", parts.port or 80)
        i = offset
        try:
            while time.perf_counter() < stop_at:
                body, headers = payloads[i % len(payloads)]
                i += concurrency
                t0 = time.perf_counter()
                try:
                    status, hdrs, data = await conn.request("POST", path, body, {**headers, **auth})
                    kind = _check(status, hdrs, data, batch, classes)
                except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
                    kind = type(exc).__name__
                    await conn.close()
                if kind is None:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[kind] = errors.get(kind, 0) + 1
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    seconds = time.perf_counter() - t0
    ms = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
    n_err = sum(errors.values())
    return LoadResult(concurrency, len(latencies) + n_err, n_err, seconds, len(latencies) / seconds,
                      len(latencies) * batch / seconds, float(np.percentile(ms, 50)), float(np.percentile(ms, 90)),
                      float(np.percentile(ms, 99)), float(ms.mean()), errors, rss_start, rss_mb(server_pid))


async def _metadata(url: str, model: str, auth: dict[str, str]) -> dict:
    parts = urlsplit(url)
    conn = Connection(parts.hostname or "127.0.0.1", parts.port or 80)
    try:
        status, _, body = await conn.request("GET", f"/v2/models/{model}", headers=auth)
    except (ConnectionError, OSError) as exc:
        raise InvalidInput(f"Cannot reach {url} ({exc.strerror or type(exc).__name__}).") from None
    finally:
        await conn.close()
    if status != 200:
        raise InvalidInput(f"{url} answered {status} for model '{model}': {body.decode(errors='replace')[:200]}")
    return json.loads(body)


@dataclass
class LoadTestConfig:
    url: str
    model: str = "resnet18"
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    duration_s: float = 10.0
    batch: int = 1
    binary: bool = True
    api_key: str | None = None
    server_pid: int | None = None
    data_dir: str | None = None


def run_loadtest(cfg: LoadTestConfig, progress=None) -> list[LoadResult]:
    from train.data import load_fashion_mnist, pixel_stats, to_input

    if not cfg.url.startswith("http://"):
        raise InvalidInput(f"URL must start with http://, not '{cfg.url}'.")
    auth = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    meta = asyncio.run(_metadata(cfg.url, cfg.model, auth))
    (inp,), (out,) = meta["inputs"], meta["outputs"]
    data = load_fashion_mnist(cfg.data_dir)
    mean, std = pixel_stats(data.train.images)
    images = to_input(data.test.images[: 256 * cfg.batch], mean, std, inp["shape"][-1]).numpy()
    payloads = encode_requests(images, cfg.batch, inp["name"], out["name"], cfg.binary)
    results = []
    for c in cfg.concurrency:
        if progress:
            progress(c)
        results.append(asyncio.run(run_level(cfg.url, cfg.model, payloads, c, cfg.duration_s, cfg.batch,
                                             out["shape"][-1], auth, cfg.server_pid)))
    return results


def results_dicts(results: list[LoadResult]) -> list[dict]:
    return [asdict(r) for r in results]
