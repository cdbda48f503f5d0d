"""The micro-batcher: concurrent requests share one call, each gets its own result, errors reach every caller."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from amazon_llm_rec.serving.batching import MicroBatcher


def test_concurrent_requests_share_calls_and_get_their_own_results():
    calls = []

    def double(batch):
        calls.append(list(batch))
        time.sleep(0.05)  # the model is busy: later requests queue meanwhile
        return [2 * x for x in batch]

    async def main():
        batcher = MicroBatcher(double, max_batch=4, max_wait_ms=0)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        await batcher.stop()
        return results, batcher.stats

    results, stats = asyncio.run(main())
    assert results == [2 * i for i in range(10)]
    assert sorted(x for c in calls for x in c) == list(range(10))
    assert max(len(c) for c in calls) == 4 and stats.requests == 10 and stats.batches == len(calls) < 10


def test_one_at_a_time_and_a_wait_window():
    seen = []

    def record(batch):
        seen.append((threading.current_thread().name, len(batch)))
        return batch

    async def main(max_batch, wait):
        batcher = MicroBatcher(record, max_batch=max_batch, max_wait_ms=wait)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit("a"))
        await asyncio.sleep(0.01)
        second = await batcher.submit("b")
        out = [await first, second]
        await batcher.stop()
        return out

    assert asyncio.run(main(1, 0)) == ["a", "b"] and [n for _, n in seen] == [1, 1]
    seen.clear()
    assert asyncio.run(main(8, 200)) == ["a", "b"] and [n for _, n in seen] == [2]  # b arrived within a's window
    assert all(name.startswith("recommender") for name, _ in seen)  # one worker thread runs the model


def test_an_error_reaches_every_request_of_the_batch_and_the_batcher_goes_on():
    def flaky(batch):
        if "bad" in batch:
            raise ValueError("boom")
        return batch

    async def main():
        batcher = MicroBatcher(flaky, max_batch=8, max_wait_ms=50)
        await batcher.start()
        results = await asyncio.gather(batcher.submit("ok"), batcher.submit("bad"), return_exceptions=True)
        after = await batcher.submit("fine")
        await batcher.stop()
        return results, after

    results, after = asyncio.run(main())
    assert all(isinstance(r, ValueError) for r in results) and after == "fine"
    with pytest.raises(RuntimeError, match="not started"):
        asyncio.run(MicroBatcher(flaky).submit("x"))
