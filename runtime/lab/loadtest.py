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
import json
import time
from dataclasses import asdict, dataclass, field, replace
from urllib.parse import urlsplit

import numpy as np

from resnet_edge.errors import InvalidInput
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


class HttpSender:
    """One keep-alive HTTP/1.1 connection sending pre-encoded infer requests."""

    def __init__(self, url: str, model: str, auth: dict[str, str], batch: int, classes: int) -> None:
        parts = urlsplit(url)
        self.conn = Connection(parts.hostname or "127.0.0.1", parts.port or 80)
        self.path, self.auth, self.batch, self.classes = f"/v2/models/{model}/infer", auth, batch, classes

    async def send(self, payload) -> str | None:
        body, headers = payload
        try:
            status, hdrs, data = await self.conn.request("POST", self.path, body, {**headers, **self.auth})
            return _check(status, hdrs, data, self.batch, self.classes)
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            await self.conn.close()
            return type(exc).__name__

    async def close(self) -> None:
        await self.conn.close()


class GrpcSender:
    """One gRPC channel sending pre-built ModelInferRequest messages (raw tensor contents)."""

    def __init__(self, target: str, auth: dict[str, str], batch: int, classes: int) -> None:
        import grpc
        from tritonclient.grpc import service_pb2_grpc as pb_grpc

        self.grpc, self.channel = grpc, grpc.aio.insecure_channel(target)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.metadata = tuple((k.lower(), v) for k, v in auth.items())
        self.batch, self.classes = batch, classes

    async def send(self, request) -> str | None:
        try:
            response = await self.stub.ModelInfer(request, metadata=self.metadata)
        except self.grpc.aio.AioRpcError as exc:
            return f"grpc {exc.code().name}"
        return None if list(response.outputs[0].shape) == [self.batch, self.classes] else "wrong shape"

    async def close(self) -> None:
        await self.channel.close()


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


async def _get(url: str, method: str, path: str, auth: dict[str, str], body: bytes = b"") -> dict:
    parts = urlsplit(url)
    conn = Connection(parts.hostname or "127.0.0.1", parts.port or 80)
    try:
        status, _, data = await conn.request(method, path, body, headers=auth)
    except (ConnectionError, OSError) as exc:
        raise InvalidInput(f"Cannot reach {url} ({exc.strerror or type(exc).__name__}).") from None
    finally:
        await conn.close()
    if status != 200:
        raise InvalidInput(f"{url}{path} answered {status}: {data.decode(errors='replace')[:200]}")
    try:
        return json.loads(data)
    except ValueError:
        raise InvalidInput(f"{url}{path} did not answer JSON.") from None


async def _metadata(url: str, model: str | None, auth: dict[str, str]) -> dict:
    """The model's metadata; without a name, the one model the server's repository index lists."""
    if model is None:
        try:
            index = await _get(url, "POST", "/v2/repository/index", auth)
        except InvalidInput as exc:
            if "answered 404" not in str(exc):
                raise
            raise InvalidInput(f"{url} has no model repository index (a KServe server has none); pass --model "
                               "NAME.") from None
        names = [m.get("name") for m in index if isinstance(m, dict)] if isinstance(index, list) else []
        if len(names) != 1:
            raise InvalidInput(f"{url} serves {len(names)} models ({', '.join(map(str, names))}); pass --model NAME.")
        model = names[0]
    return await _get(url, "GET", f"/v2/models/{model}", auth)


def request_images(meta: dict, artifacts: str | None, data_dir: str | None, n: int,
                   synthetic: bool = False) -> tuple[np.ndarray, str]:
    """``n`` inputs for the model its metadata describes, float32 [n, C, H, W], and a phrase saying what they are:
    the artifacts' golden set (``artifacts``), Fashion-MNIST's test set for a model that reads it, or, as
    perf_analyzer does, synthetic inputs of the right shape and value range from the metadata alone (random images
    through the model's own preprocessing; on a server without it, standard-normal values: what normalised images
    look like)."""
    from resnet_edge.errors import DataError
    from resnet_edge.images import to_input

    (inp,) = meta["inputs"]
    shape = inp.get("shape", [])
    if inp.get("datatype") != "FP32" or len(shape) != 4 or not all(isinstance(d, int) for d in shape) \
            or min(shape[1:]) < 1:
        raise InvalidInput(f"The model's input is {inp.get('datatype')} {shape}; loadtest sends FP32 [N, C, H, W] "
                           "tensors.")
    pre = (meta.get("parameters") or {}).get("preprocessing")
    pre = pre if isinstance(pre, dict) else None
    rng = np.random.default_rng(0)
    images, source = None, ""
    if artifacts is not None:
        from runtime.spec import load_artifacts

        images, source = load_artifacts(artifacts).golden()[0], f"the golden set of {artifacts}"
    elif synthetic or pre is None:
        pass
    elif (pre["channels"], pre["source_size"], pre.get("source_resize")) == (1, 28, None):
        from resnet_edge import fmnist

        try:
            images, source = fmnist.load_arrays(data_dir).test_images, "Fashion-MNIST's test set"
        except DataError:
            pass  # no dataset here: synthetic inputs, and the report says so
    if images is None:
        if pre is None:  # not a resnet-edge server: its metadata gives the shape, not the preprocessing
            x = rng.standard_normal((max(n, 1), *shape[1:]), dtype=np.float32)
            return x, f"synthetic: standard-normal FP32 {shape[1:]} (the server's metadata has no preprocessing)"
        size, channels = pre["source_size"], pre["channels"]
        images = rng.integers(0, 256, (max(n, 1), size, size) + ((3,) if channels == 3 else ()), dtype=np.uint8)
        source = (f"synthetic: random {channels}-channel {size} px images through the model's preprocessing "
                  "(pass --artifacts DIR for real ones)")
    channels = 3 if images.ndim == 4 else 1
    if pre is None or channels != pre["channels"] or images.shape[1] != pre["source_size"]:
        got = f"{channels}-channel {images.shape[1]} px"
        raise InvalidInput(f"The images are {got}; the model reads " + (
            f"{pre['channels']}-channel {pre['source_size']} px images (other artifacts?)." if pre else
            f"{shape[1:]} tensors and its metadata gives no preprocessing to prepare images with."))
    images = np.resize(images, (max(n, 1), *images.shape[1:])) if len(images) < n else images[:n]
    x = to_input(images, pre["mean"], pre["std"], pre["image_size"])
    if list(x.shape[1:]) != shape[1:]:
        raise InvalidInput(f"Prepared images are {list(x.shape[1:])}, the model's input is {shape[1:]}.")
    return x, source


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
    meta = asyncio.run(_metadata(cfg.url, cfg.model, auth))  # over HTTP: it also proves the server is up
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


def grpc_requests(images: np.ndarray, batch: int, model: str, input_name: str, output_name: str) -> list:
    """Pre-built ModelInferRequest messages with raw input contents, ``batch`` images each."""
    from tritonclient.grpc import service_pb2 as pb

    out = []
    for i in range(0, len(images) - batch + 1, batch):
        x = np.ascontiguousarray(images[i:i + batch], dtype="<f4")
        req = pb.ModelInferRequest(model_name=model)
        req.inputs.add(name=input_name, datatype="FP32", shape=list(x.shape))
        req.outputs.add(name=output_name)
        req.raw_input_contents.append(x.tobytes())
        out.append(req)
    return out


def results_dicts(results: list[LoadResult]) -> list[dict]:
    return [asdict(r) for r in results]
