"""The request pool: large bodies parsed and images decoded off the event loop, with a bounded queue.

Request bodies up to ``INLINE_BYTES`` are parsed on the event loop (tens of microseconds); larger ones, and every
image decode, go to a small pool of their own, so that no request stalls the others or the health checks, and none
waits behind a running inference (which has the default executor).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from starlette.requests import Request

from runtime.serving.errors import ClientGone, Overloaded

INLINE_BYTES = 64 << 10
_request_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="resnet-edge-request")
MAX_WAITING_DECODES = 32  # image decodes and large parses queued for the pool; past it, 503 (not an unbounded queue)
_waiting = 0


async def off_loop(fn: Callable, *args, request: Request | None = None):
    """``fn(*args)`` on the request pool: refused with 503 when the pool's queue is full, and skipped (499) when the
    client of ``request`` has gone by the time a worker is free for it."""
    global _waiting
    if _waiting >= MAX_WAITING_DECODES:
        raise Overloaded("The server is decoding too many requests at once; retry shortly.")
    _waiting += 1

    def job():
        if request is not None and request.scope.get("resnet_edge.gone"):
            raise ClientGone("The client disconnected before its request was decoded.")
        return fn(*args)

    try:
        return await asyncio.get_running_loop().run_in_executor(_request_pool, job)
    except asyncio.CancelledError:  # the client went away: a job still queued is skipped when its turn comes
        if request is not None:
            request.scope["resnet_edge.gone"] = True
        raise
    finally:
        _waiting -= 1


