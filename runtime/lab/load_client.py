"""loadtest's clients: a lean keep-alive HTTP/1.1 connection, the HTTP and gRPC senders, the request encoders and
the response check, and the model's metadata read over HTTP."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import numpy as np

from resnet_edge.errors import InvalidInput


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


def check_response(status: int, headers: dict[str, str], body: bytes, batch: int, classes: int) -> str | None:
    """None if the response is a correct inference result; else a short error kind."""
    if status != 200:
        return f"http {status}"
    n = int(headers.get("inference-header-content-length", len(body)))
    try:
        out = json.loads(body[:n])["outputs"][0]
    except (ValueError, KeyError, IndexError):
        return "bad response"
    return None if out.get("shape") == [batch, classes] else "wrong shape"


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
            return check_response(status, hdrs, data, self.batch, self.classes)
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


async def get_json(url: str, method: str, path: str, auth: dict[str, str], body: bytes = b"") -> dict:
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


async def model_metadata(url: str, model: str | None, auth: dict[str, str]) -> dict:
    """The model's metadata; without a name, the one model the server's repository index lists."""
    if model is None:
        try:
            index = await get_json(url, "POST", "/v2/repository/index", auth)
        except InvalidInput as exc:
            if "answered 404" not in str(exc):
                raise
            raise InvalidInput(f"{url} has no model repository index (a KServe server has none); pass --model "
                               "NAME.") from None
        names = [m.get("name") for m in index if isinstance(m, dict)] if isinstance(index, list) else []
        if len(names) != 1:
            raise InvalidInput(f"{url} serves {len(names)} models ({', '.join(map(str, names))}); pass --model NAME.")
        model = names[0]
    return await get_json(url, "GET", f"/v2/models/{model}", auth)


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
