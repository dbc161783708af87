"""A request's two waits: its body, read within the size, time and memory limits; its answer, abandoned at once
when the client goes."""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

from runtime.serving.errors import BodyTimeout, ClientGone, Overloaded, PayloadTooLarge
from runtime.serving.state import ServerState


async def read_body(request: Request, state: ServerState) -> bytes:
    """The request body, refused with 413 past the limit, 408 if it does not arrive whole within
    ``body_timeout_s`` (a client trickling it holds no handler forever), and 503 while the bodies being read
    on every connection together are over ``max_buffered_bytes`` (N connections x the body limit is no
    longer unbounded memory). An oversized body is read and discarded (up to a cap, never buffered) so that
    ordinary clients can read the 413 instead of a broken pipe."""
    declared = request.headers.get("content-length")
    limit = state.max_body_bytes
    chunks, size, held = [], 0, 0
    try:
        with state.watchdog.deadline(state.body_timeout_s) as expired:
            try:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size <= limit:
                        chunks.append(chunk)
                        held += len(chunk)
                        state.buffered += len(chunk)
                        if state.buffered > state.max_buffered_bytes:
                            raise Overloaded("The server is reading too many request bodies at once; retry shortly.")
                    elif size > max(4 * limit, 64 << 20):
                        break
            except asyncio.CancelledError:
                if expired():
                    raise BodyTimeout(f"The request body did not arrive within {state.body_timeout_s:g} s.") from None
                raise
    except ClientDisconnect:
        raise ClientGone("The client disconnected before its body arrived.") from None
    finally:
        request.scope["resnet_edge.held"] = held  # released by the endpoint once the response is made
    if size > limit:
        total = int(declared) if declared and declared.isdigit() else size
        raise PayloadTooLarge(f"The body of {total} bytes is over the {limit}-byte limit.")
    return b"".join(chunks)


async def until_disconnected(receive) -> bool:
    """True once the client has gone: after the body is read, ASGI's receive() waits for the disconnect. A server
    that answers with the body again instead (no disconnect to wait for) gets False at once, not a busy loop."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return True
        if not message.get("more_body", False):
            return False


async def submit(request: Request, state: ServerState, batch) -> object:
    """Queue ``batch`` with the batcher and wait for its logits, or for the client to disconnect: then the
    wait is cancelled, which cancels the queued work (the batcher drops it before inference), and the request
    ends at once rather than holding a place in flight (and a drain) for an answer nobody reads. The watch
    starts once the request has waited a tick of the server's watchdog (``runtime.serving.watchdog``)."""
    with state.watchdog.watch(lambda: until_disconnected(request.receive)) as gone:
        try:
            return await state.plane.infer(batch)
        except asyncio.CancelledError:
            if gone():
                raise ClientGone("The client disconnected before its answer; its queued work was dropped.") from None
            raise
