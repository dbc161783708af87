"""Per-request deadlines and disconnect watches on one coarse timer, not a timer or a task per request.

Every request reads a body under a deadline (a client trickling it must not hold a handler forever) and waits
for its answer while watching for its client to go (then its queued work is dropped). A timer per request for
each costs a heap push and pop per request, and a watch task per request two more turns of the event loop:
together about a tenth of the throughput at 64 clients. Here a request only registers itself in a dict; one
timer, armed while any request is registered, fires every ``tick_s`` and cancels the bodies past their
deadline and starts the disconnect watch of the requests that have waited a whole tick. A request answered
within a tick (most are, even at 64 clients) never starts a watch; a deadline is kept to within a tick.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator

TICK_S = 0.05


class Watchdog:
    def __init__(self, tick_s: float = TICK_S) -> None:
        self.tick_s = tick_s
        self._deadlines: dict[asyncio.Task, float] = {}  # task -> loop time its body must have arrived by
        self._expired: set[asyncio.Task] = set()
        self._waiting: dict[asyncio.Task, tuple[float, Callable[[], Awaitable[bool]]]] = {}
        self._watches: dict[asyncio.Task, asyncio.Task] = {}  # waiting task -> its disconnect watch
        self._gone: set[asyncio.Task] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the timer is armed on

    @contextlib.contextmanager
    def deadline(self, seconds: float) -> Iterator[Callable[[], bool]]:
        """Cancel the current task if the block outlasts ``seconds`` (to within a tick). Yields a function that
        says, after a CancelledError, whether the deadline caused it."""
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        self._deadlines[task] = loop.time() + seconds
        self._arm(loop)
        try:
            yield lambda: task in self._expired
        finally:
            self._deadlines.pop(task, None)
            if task in self._expired:
                self._expired.discard(task)
                _uncancel(task)

    @contextlib.contextmanager
    def watch(self, until_gone: Callable[[], Awaitable[bool]]) -> Iterator[Callable[[], bool]]:
        """Cancel the current task if ``until_gone()`` (started once the block has lasted a tick) returns True.
        Yields a function that says, after a CancelledError, whether the client's going caused it."""
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        self._waiting[task] = (loop.time(), until_gone)
        self._arm(loop)
        try:
            yield lambda: task in self._gone
        finally:
            self._waiting.pop(task, None)
            watch = self._watches.pop(task, None)
            if watch is not None:
                watch.cancel()
            if task in self._gone:
                self._gone.discard(task)
                _uncancel(task)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None or self._loop is not loop:  # a timer of a closed loop never fires
            self._timer, self._loop = loop.call_later(self.tick_s, self._tick, loop), loop

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        for task, due in list(self._deadlines.items()):
            if now >= due and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        for task, (since, until_gone) in list(self._waiting.items()):
            if task not in self._watches and now - since >= self.tick_s:
                watch = asyncio.ensure_future(until_gone())
                watch.add_done_callback(lambda w, t=task: self._client_gone(t, w))
                self._watches[task] = watch
        if self._deadlines or self._waiting:
            self._arm(loop)

    def _client_gone(self, task: asyncio.Task, watch: asyncio.Future) -> None:
        if watch.cancelled() or watch.exception() is not None or not watch.result():
            return
        if task in self._waiting and task not in self._gone:
            self._gone.add(task)
            task.cancel()


def _uncancel(task: asyncio.Task) -> None:
    """The cancellation was ours and has been turned into an error: clear it (Python 3.11+), so that an
    ``asyncio.timeout`` further out does not mistake it for its own."""
    if hasattr(task, "uncancel"):
        task.uncancel()
