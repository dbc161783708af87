"""Dynamic batching, like Triton's: requests queue up and are merged into batches of up to
``max_batch_size`` images, waiting at most ``max_queue_delay_us`` for more. Inference runs on one
worker thread, off the event loop, and each request gets exactly its own rows back, in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from resnet_edge.errors import ToolkitError

log = logging.getLogger("resnet_edge.serve")
DELIVER_SLICE = 8  # requests answered per turn of the event loop (see DynamicBatcher._deliver)


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
                 on_batch: Callable[[BatchStats, list[float]], None] | None = None,
                 deliver_slice: int = DELIVER_SLICE) -> None:
        self._infer, self.max_batch_size = infer, max_batch_size
        self.deliver_slice = max(1, deliver_slice)
        self.max_delay = max_queue_delay_us / 1e6
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self._pending = 0  # submitted, still wanted and not yet answered: queued, being batched or running
        self._delivering: set[asyncio.Task] = set()  # answers of finished batches, on their way out
        self.accepting = True
        self.running_since: float | None = None  # perf_counter() when the batch now in the backend started

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="dynamic-batcher")
        self._task.add_done_callback(self._worker_ended)

    def _worker_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:  # never silently: every request would hang
            log.error("the dynamic batcher stopped", exc_info=task.exception())

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
        """Queue ``batch`` and wait for its logits. A request that times out, or whose client goes
        away (cancellation), is cancelled: the worker drops it before inference."""
        if not self.accepting or self._queue is None:
            raise ShuttingDown("The server is shutting down and accepts no new requests.")
        if self._pending >= self.max_queue:
            raise QueueFull(f"The request queue is full ({self.max_queue} requests); retry shortly.")
        future = asyncio.get_running_loop().create_future()
        self._pending += 1
        future.add_done_callback(self._answered)  # result, error or cancellation: no longer pending
        self._queue.put_nowait(_Pending(batch, future))
        try:
            return await asyncio.wait_for(future, timeout_s)  # cancels the future on timeout
        except asyncio.TimeoutError:
            raise RequestTimeout(f"The request did not finish within {timeout_s:g} s.") from None

    def _answered(self, future: asyncio.Future) -> None:
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
                if nxt.future.done():  # timed out or abandoned while queued: not worth a slot
                    self._queue.task_done()
                    continue
                if n + nxt.batch.shape[0] > self.max_batch_size:  # would overflow: it starts the next batch
                    await self._run_group(loop, group)
                    group, n = [nxt], nxt.batch.shape[0]
                    deadline = time.perf_counter() + self.max_delay
                    continue
                group.append(nxt)
                n += nxt.batch.shape[0]
            await self._run_group(loop, group)

    async def _run_group(self, loop, group: list[_Pending]) -> None:
        live = [p for p in group if not p.future.done()]  # timed-out and abandoned requests are dropped, not run
        start = time.perf_counter()
        out = None
        try:
            if live:
                merged = live[0].batch if len(live) == 1 else np.concatenate([p.batch for p in live])
                self.running_since = start
                try:
                    out = await loop.run_in_executor(None, self._infer, merged)
                finally:
                    self.running_since = None
        except Exception as exc:  # the backend failed: every request of the batch gets the error
            for p in live:
                if not p.future.done():
                    p.future.set_exception(exc)
        offset = 0 if out is None else self._answer(live[:self.deliver_slice], out)  # the first slice: now
        if out is None or len(live) <= self.deliver_slice:
            self._done(group)
        else:  # the rest in slices, one per turn of the loop, while the next batch is formed and run
            task = loop.create_task(self._deliver(live[self.deliver_slice:], out, offset, group))
            self._delivering.add(task)
            task.add_done_callback(self._delivering.discard)
        if self.on_batch and live:
            try:
                self.on_batch(BatchStats(time.perf_counter() - start, sum(p.batch.shape[0] for p in live)),
                              [start - p.enqueued for p in live])
            except Exception:  # a metrics hook must never take the batcher down with it
                log.exception("the on_batch callback failed; batching goes on")

    async def _deliver(self, rest: list[_Pending], out: np.ndarray, offset: int, group: list[_Pending]) -> None:
        """Each request gets its own rows, ``deliver_slice`` requests per turn of the event loop.

        Waking all 64 handlers of a full batch at once makes one turn of the loop that builds and writes 64
        responses (several ms on a small CPU), and the loop reads no socket until it ends: a health check or
        a new request that arrives meanwhile waits for all of it. In slices, the loop reads its sockets between
        them, and the next batch's requests trickle in instead of arriving all at once."""
        try:
            for i in range(0, len(rest), self.deliver_slice):
                await asyncio.sleep(0)
                offset = self._answer(rest[i:i + self.deliver_slice], out, offset)
        finally:
            self._done(group)

    @staticmethod
    def _answer(requests: list[_Pending], out: np.ndarray, offset: int = 0) -> int:
        """Each request its own rows of ``out``, starting at ``offset``; returns the offset after them."""
        for p in requests:
            k = p.batch.shape[0]
            if not p.future.done():
                p.future.set_result(out[offset:offset + k])
            offset += k
        return offset

    def _done(self, group: list[_Pending]) -> None:
        for _ in group:
            self._queue.task_done()
