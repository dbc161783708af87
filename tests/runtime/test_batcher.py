"""The dynamic batcher in-process: what reaches the backend, what the queue depth says, and that
nothing a hook does can stop it."""

import asyncio
import logging
import time

import numpy as np
import pytest

from runtime.serving.batcher import DynamicBatcher, RequestTimeout


class SlowBackend:
    """Records every batch it runs; each call takes ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.batches = seconds, []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch[:, 0, 0, 0].tolist())
        time.sleep(self.seconds)
        return batch[:, 0, 0, :1] * 2


def _rows(*values):
    return np.array(values, np.float32).reshape(-1, 1, 1, 1)


def test_timed_out_and_abandoned_requests_never_reach_the_backend():
    backend = SlowBackend(0.3)

    async def main():
        b = DynamicBatcher(backend, max_batch_size=8, max_queue_delay_us=0)
        await b.start()
        first = asyncio.create_task(b.submit(_rows(1), 5))
        await asyncio.sleep(0.05)  # the first batch is running now
        with pytest.raises(RequestTimeout):
            await b.submit(_rows(2), 0.05)  # times out while queued
        abandoned = asyncio.create_task(b.submit(_rows(3), 5))
        kept = asyncio.create_task(b.submit(_rows(4), 5))
        await asyncio.sleep(0.01)
        assert b.depth == 3  # running + two queued; the timed-out one no longer counts
        abandoned.cancel()  # the client went away
        await asyncio.sleep(0.01)
        assert b.depth == 2
        assert (await first).ravel().tolist() == [2.0]
        assert (await kept).ravel().tolist() == [8.0]
        assert b.depth == 0
        await b.stop()

    asyncio.run(main())
    assert backend.batches == [[1.0], [4.0]]


def test_each_request_gets_its_own_rows_from_a_merged_batch():
    backend = SlowBackend(0.05)

    async def main():
        b = DynamicBatcher(backend, max_batch_size=8, max_queue_delay_us=20_000)
        await b.start()
        outs = await asyncio.gather(*(b.submit(_rows(*range(i * 10, i * 10 + i + 1)), 5) for i in range(4)))
        await b.stop()
        return outs

    outs = asyncio.run(main())
    for i, out in enumerate(outs):
        assert out.ravel().tolist() == [2.0 * v for v in range(i * 10, i * 10 + i + 1)]
    assert len(backend.batches) < 4  # merged


def test_a_failing_on_batch_hook_is_logged_and_batching_goes_on(caplog):
    def hook(stats, waits):
        raise RuntimeError("metrics exporter broke")

    async def main():
        b = DynamicBatcher(SlowBackend(0.0), max_batch_size=4, on_batch=hook)
        await b.start()
        outs = [await asyncio.wait_for(b.submit(_rows(i), 5), 2) for i in range(3)]
        await b.stop()
        return outs

    with caplog.at_level(logging.ERROR, logger="resnet_edge.serve"):
        outs = asyncio.run(main())
    assert [o.item() for o in outs] == [0.0, 2.0, 4.0]
    assert "on_batch callback failed" in caplog.text


def test_a_full_batch_is_answered_in_slices_with_the_loop_turning_between():
    """64 answers at once would hold the event loop for one long turn (no socket read, no health check);
    in slices (DELIVER_SLICE), other work runs between them, and each request still gets its own row."""
    events: list = []

    async def main():
        b = DynamicBatcher(SlowBackend(0.05), max_batch_size=64, max_queue_delay_us=500_000)
        await b.start()

        async def one(i):
            out = await b.submit(_rows(i), 5)
            events.append(("answer", i, float(out[0, 0])))

        async def other_work():  # a stand-in for the loop's other callbacks: one step per turn
            while sum(1 for e in events if e != "turn") < 64:
                events.append("turn")
                await asyncio.sleep(0)

        await asyncio.gather(*(one(i) for i in range(64)), other_work())
        await b.stop()

    asyncio.run(main())
    answers = [e for e in events if e != "turn"]
    assert sorted(answers) == [("answer", i, 2.0 * i) for i in range(64)]  # one merged batch, own rows each
    first = events.index(answers[0])
    last = events.index(answers[-1])
    assert events[first:last].count("turn") >= 3  # in slices of 8: 7; all 64 at once: 0 or 1
