"""The data plane: what the HTTP and gRPC front ends both serve, written once (as KServe's ``DataPlane`` with its
REST and gRPC front ends).

Authorisation, model lookup, readiness, server and model metadata, the repository index, inference through the
dynamic batcher, the in-flight count and the drain's refusal, and the metrics of every call live here. A front end
only translates: its request into these calls, their results into its messages, and a ``ToolkitError`` into its
status through the one table (``runtime.serving.errors.status_of``; gRPC maps that status to a code).
"""

from __future__ import annotations

import contextlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from resnet_edge import __version__
from runtime.serving.errors import NotFound, NotReady, ShuttingDown, Unauthorized
from runtime.serving.protocol import shown

VERSION = "1"
EXTENSIONS = ("binary_tensor_data", "classification")


class DataPlane:
    def __init__(self, state) -> None:
        self.state = state  # runtime.serving.app.ServerState

    # -- access ---------------------------------------------------------------------------------
    def authorize(self, header: str | None, where: str = "'Authorization: Bearer <api key>'") -> None:
        """Check a bearer token (the value of an Authorization header or gRPC metadata entry)."""
        key = self.state.api_key
        if key is None:
            return
        header = header or ""
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not token:
            raise Unauthorized(f"This server needs {where}.")
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise Unauthorized("The bearer token is wrong.")

    def model(self, name: str, version: str | None) -> None:
        """The one model this server serves, by name and (optionally) version."""
        state = self.state
        if name != state.model_name:
            raise NotFound(f"Unknown model {shown(name)}; this server serves '{state.model_name}'.")
        if version not in (None, "", VERSION):
            raise NotFound(f"Unknown version {shown(version)} of model {shown(name)}; available: {VERSION}.")

    @property
    def ready(self) -> bool:
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        """Why the server cannot take work now (readiness says not-ready, with this reason), or None. Besides loading
        and draining: every connection slot taken, the request queue full, or the backend stuck in one batch for
        longer than a request may take (a load balancer should send traffic elsewhere meanwhile)."""
        state = self.state
        if not state.ready:
            return "the model is still loading"
        if state.draining:
            return "the server is shutting down"
        if state.connections >= state.max_connections:
            return f"every connection slot is taken ({state.connections} of {state.max_connections})"
        batcher = state.batcher
        if batcher.depth >= batcher.max_queue:
            return f"the request queue is full ({batcher.max_queue} requests)"
        since = batcher.running_since
        if since is not None and time.perf_counter() - since > state.request_timeout_s:
            return (f"the backend has been running one batch for {time.perf_counter() - since:.0f} s, longer than a "
                    f"request may take ({state.request_timeout_s:g} s)")
        return None

    # -- metadata -------------------------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        return {"name": "resnet-edge", "version": __version__, "extensions": list(EXTENSIONS)}

    def model_metadata(self) -> dict[str, Any]:
        """KServe v2 model metadata, with the batch limits and the preprocessing a generic client needs."""
        state, s = self.state, self.state.spec
        return {"name": state.model_name, "versions": [VERSION], "platform": state.platform,
                "inputs": [{"name": s.input_name, "datatype": "FP32", "shape": [-1, *s.chw]}],
                "outputs": [{"name": s.output_name, "datatype": "FP32", "shape": [-1, s.num_classes]}],
                "parameters": {"max_batch_size": state.max_batch_size, "batch_buckets": list(state.buckets),
                               "preprocessing": preprocessing(s)}}

    def repository_index(self) -> list[dict[str, str]]:
        return [{"name": self.state.model_name, "version": VERSION, "state": "READY" if self.ready else "UNAVAILABLE"}]

    # -- inference ------------------------------------------------------------------------------
    def require_loaded(self) -> None:
        """The one check every infer path makes before reading or parsing anything: 503 while loading."""
        if not self.state.ready:
            raise NotReady("The model is still loading; retry shortly.")

    async def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits for ``batch`` from the dynamic batcher, within the request timeout."""
        self.require_loaded()
        return await self.state.batcher.submit(batch, self.state.request_timeout_s)

    # -- accounting -----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def call(self, *, counted: bool) -> AsyncIterator[None]:
        """Around every call: a counted one is in flight for its duration (the drain waits for it) and is refused
        while the server drains."""
        state = self.state
        if counted:
            state.inflight += 1
        try:
            if counted and state.draining:
                raise ShuttingDown("The server is shutting down and accepts no new requests.")
            yield
        finally:
            if counted:
                state.inflight -= 1

    def record(self, endpoint: str, code: int | str, started: float) -> float:
        """Count a finished call in the metrics; returns its duration in seconds."""
        seconds = time.perf_counter() - started
        self.state.metrics.request(endpoint, code, seconds)
        return seconds


def preprocessing(spec) -> dict[str, Any]:
    """What a client must do to an image before sending it as the input tensor: the manifest's preprocessing, in
    model metadata's ``parameters`` (as Triton's model config carries parameters), so that a generic client
    (``resnet-edge loadtest``) can feed any model."""
    return {"channels": spec.channels, "image_size": spec.image_size, "mean": list(spec.mean), "std": list(spec.std),
            "scale": 1 / 255, "layout": "NCHW", "resize": spec.resize, "source_size": spec.source_size,
            "source_resize": spec.source_resize, "color": "RGB" if spec.channels == 3 else "L"}
