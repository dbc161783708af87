"""Serving errors and the one table from exception to HTTP status."""

from __future__ import annotations

from resnet_edge.errors import ArtifactMismatch, InvalidInput, ToolkitError
from runtime.serving.batcher import QueueFull, RequestTimeout, ShuttingDown


class NotFound(ToolkitError):
    """Unknown model, version or route."""


class Unauthorized(ToolkitError):
    """Missing or wrong bearer token."""


class PayloadTooLarge(ToolkitError):
    """The request body is over --max-body-mb."""


class NotReady(ToolkitError):
    """The model is still loading."""


class BodyTimeout(ToolkitError):
    """The request body did not arrive within --body-timeout."""


class Overloaded(ToolkitError):
    """Too many request bodies are being read at once (--max-buffer-mb)."""


class ClientGone(ToolkitError):
    """The client disconnected before its answer (nginx's 499: nobody reads it, the metrics count it)."""


STATUS: dict[type[ToolkitError], int] = {
    InvalidInput: 400,
    Unauthorized: 401,
    NotFound: 404,
    BodyTimeout: 408,
    PayloadTooLarge: 413,
    ClientGone: 499,
    NotReady: 503,
    Overloaded: 503,
    QueueFull: 503,
    ShuttingDown: 503,
    RequestTimeout: 504,
    ArtifactMismatch: 500,
    ToolkitError: 500,
}


def status_of(exc: ToolkitError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500
