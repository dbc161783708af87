"""Dynamic batching, like Triton's: requests queue up and are merged into batches of up to
``max_batch_size`` images, waiting at most ``max_queue_delay_us`` for more. Inference runs on one
worker thread, off the event loop, and each request gets exactly its own rows back, in order."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from train.errors import ToolkitError


class QueueFull(ToolkitError):
    """The request queue is at --max-queue; the client should retry later."""


class RequestTimeout(ToolkitError):
    """A request waited or ran longer than --request-timeout."""


class ShuttingDown(ToolkitError):
    """The server is draining and accepts no new requests."""


@dataclass
class _Pending:
    batch: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    infer_s: float
    batch_size: int


class DynamicBatcher:
    def __init__(self, infer: Callable[[np.ndarray], np.ndarray], *, max_batch_size: int = 64,
                 max_queue_delay_us: int = 500, max_queue: int = 1024,
                 on_batch: Callable[[BatchStats, list[float]], None] | None = None) -> None:
        self._infer, self.max_batch_size = infer, max_batch_size
        self.max_delay = max_queue_delay_us / 1e6
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self._pending = 0  # submitted and not yet answered: queued, being batched or running
        self.accepting = True

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="dynamic-batcher")

    async def stop(self) -> None:
        """Stop accepting; let queued and running requests finish; then end the worker."""
        self.accepting = False
        if self._queue is not None:
            await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def depth(self) -> int:
        return self._pending

    async def submit(self, batch: np.ndarray, timeout_s: float) -> np.ndarray:
        if not self.accepting or self._queue is None:
            raise ShuttingDown("The server is shutting down and accepts no new requests.")
        if self._pending >= self.max_queue:
            raise QueueFull(f"The request queue is full ({self.max_queue} requests); retry shortly.")
        future = asyncio.get_running_loop().create_future()
        self._pending += 1
        self._queue.put_nowait(_Pending(batch, future))
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"The request did not finish within {timeout_s:g} s.") from None
        finally:
            self._pending -= 1

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            group, n = [first], first.batch.shape[0]
            deadline = time.perf_counter() + self.max_delay
            while n < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                try:
                    nxt = self._queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self._queue.get(), remaining)
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                if n + nxt.batch.shape[0] > self.max_batch_size:  # would overflow: it starts the next batch
                    await self._run_group(loop, group, n)
                    group, n = [nxt], nxt.batch.shape[0]
                    deadline = time.perf_counter() + self.max_delay
                    continue
                group.append(nxt)
                n += nxt.batch.shape[0]
            await self._run_group(loop, group, n)

    async def _run_group(self, loop, group: list[_Pending], n: int) -> None:
        live = [p for p in group if not p.future.done()]  # timed-out requests are dropped, not run
        start = time.perf_counter()
        try:
            if live:
                merged = live[0].batch if len(live) == 1 else np.concatenate([p.batch for p in live])
                out = await loop.run_in_executor(None, self._infer, merged)
                offset = 0
                for p in live:
                    k = p.batch.shape[0]
                    if not p.future.done():
                        p.future.set_result(out[offset:offset + k])
                    offset += k
        except Exception as exc:  # the backend failed: every request of the batch gets the error
            for p in live:
                if not p.future.done():
                    p.future.set_exception(exc)
        finally:
            if self.on_batch and live:
                self.on_batch(BatchStats(time.perf_counter() - start, sum(p.batch.shape[0] for p in live)),
                              [start - p.enqueued for p in live])
            for _ in group:
                self._queue.task_done()
