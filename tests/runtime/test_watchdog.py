import asyncio

import pytest

from runtime.serving.watchdog import Watchdog


def test_a_quick_answer_starts_no_watch_and_a_slow_one_is_cancelled_when_its_client_goes():
    calls = []

    async def main():
        dog = Watchdog(tick_s=0.02)
        gone_now = asyncio.Event()

        async def until_gone():
            calls.append("watch")
            await gone_now.wait()
            return True

        for _ in range(50):  # answered within a tick: no watch task is ever made
            with dog.watch(until_gone) as gone:
                await asyncio.sleep(0)
            assert not gone()
        assert calls == []

        async def slow():
            with dog.watch(until_gone) as gone:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    return "client gone" if gone() else "cancelled by someone else"

        task = asyncio.create_task(slow())
        await asyncio.sleep(0.1)
        assert calls == ["watch"]  # started once, after a tick
        gone_now.set()
        assert await asyncio.wait_for(task, 1) == "client gone"
        if hasattr(task, "cancelling"):  # Python 3.11+: our cancellation was cleared once it became an answer
            assert task.cancelling() == 0

    asyncio.run(main())


def test_a_deadline_cancels_only_the_block_that_outlasts_it_and_says_so():
    async def main():
        dog = Watchdog(tick_s=0.02)
        with dog.deadline(1.0) as expired:
            await asyncio.sleep(0.05)  # well inside: untouched
        assert not expired()
        with pytest.raises(TimeoutError), dog.deadline(0.05) as expired:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                assert expired()
                raise TimeoutError from None
        await asyncio.sleep(0.1)  # nothing of it is left to cancel this task later
        return "still running"

    assert asyncio.run(main()) == "still running"
