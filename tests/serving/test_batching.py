"""The micro-batcher: concurrent requests share one call, each gets its own result; a failing request fails alone;
the queue is bounded."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from amazon_llm_rec.serving.batching import MicroBatcher, QueueFullError, ShuttingDownError


def test_concurrent_requests_share_calls_and_get_their_own_results():
    calls = []

    def double(batch, deliver):
        calls.append(list(batch))
        time.sleep(0.05)  # the model is busy: later requests queue meanwhile
        return [2 * x for x in batch]

    async def main():
        batcher = MicroBatcher(double, max_batch=4, max_wait_ms=0, max_queue=64)
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

    def record(batch, deliver):
        seen.append((threading.current_thread().name, len(batch)))
        return batch

    async def main(max_batch, wait):
        batcher = MicroBatcher(record, max_batch=max_batch, max_wait_ms=wait, max_queue=64)
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


def test_a_failing_request_fails_alone_and_the_rest_of_its_batch_succeeds():
    calls = []

    def flaky(batch, deliver):
        calls.append(list(batch))
        if "bad" in batch:
            raise ValueError("boom")
        return [x.upper() for x in batch]

    async def main():
        batcher = MicroBatcher(flaky, max_batch=8, max_wait_ms=100, max_queue=64)
        await batcher.start()
        results = await asyncio.gather(batcher.submit("ok"), batcher.submit("bad"), batcher.submit("fine"),
                                       return_exceptions=True)
        after = await batcher.submit("later")
        await batcher.stop()
        return results, after

    results, after = asyncio.run(main())
    assert results[0] == "OK" and results[2] == "FINE" and isinstance(results[1], ValueError)
    assert calls[0] == ["ok", "bad", "fine"] and ["bad"] in calls  # batched, then retried one at a time
    assert after == "LATER"
    with pytest.raises(RuntimeError, match="not started"):
        asyncio.run(MicroBatcher(flaky, 1, 0, 1).submit("x"))


def test_a_result_that_is_an_exception_reaches_that_request_only():
    def mixed(batch, deliver):
        return [KeyError(x) if x == "b" else x for x in batch]

    async def main():
        batcher = MicroBatcher(mixed, max_batch=8, max_wait_ms=50, max_queue=8)
        await batcher.start()
        out = await asyncio.gather(batcher.submit("a"), batcher.submit("b"), return_exceptions=True)
        await batcher.stop()
        return out

    a, b = asyncio.run(main())
    assert a == "a" and isinstance(b, KeyError)


def test_a_full_queue_refuses_at_once_with_a_retry_after():
    def slow(batch, deliver):
        time.sleep(0.2)
        return batch

    async def main():
        batcher = MicroBatcher(slow, max_batch=1, max_wait_ms=0, max_queue=3)
        await batcher.start()
        started = time.monotonic()
        out = await asyncio.gather(*(batcher.submit(i) for i in range(8)), return_exceptions=True)
        await batcher.stop()
        return out, time.monotonic() - started, batcher.stats

    out, seconds, stats = asyncio.run(main())
    refused = [r for r in out if isinstance(r, QueueFullError)]
    served = [r for r in out if not isinstance(r, BaseException)]
    # 3 fit in the queue (the worker takes the first only once the submissions yield), the rest are refused
    assert len(served) + len(refused) == 8 and 3 <= len(served) <= 4 and stats.rejected == len(refused)
    assert all(r.retry_after >= 1 and "serving.max_queue" in str(r) for r in refused)
    assert seconds < 0.2 * len(served) + 1.0  # the refused did not wait


def test_an_early_answer_lands_before_the_slow_part_of_its_batch_and_a_wrong_count_hangs_nobody():
    def fast_then_slow(batch, deliver):
        for i, x in enumerate(batch):
            if x.startswith("late"):
                deliver(i, x + " (fallback)")
        time.sleep(0.5)  # the slow path for the rest
        return [x + " (slow)" for x in batch]

    async def timed(batcher, x):
        start = time.monotonic()
        out = await batcher.submit(x)
        return out, time.monotonic() - start

    async def main():
        batcher = MicroBatcher(fast_then_slow, max_batch=8, max_wait_ms=100, max_queue=8)
        await batcher.start()
        out = await asyncio.gather(timed(batcher, "late-1"), timed(batcher, "normal"))
        await batcher.stop()
        return out

    (late, t_late), (normal, t_normal) = asyncio.run(main())
    assert late == "late-1 (fallback)" and normal == "normal (slow)" and t_late < 0.4 < t_normal

    async def wrong():
        batcher = MicroBatcher(lambda batch, deliver: batch[:1], max_batch=8, max_wait_ms=100, max_queue=8)
        await batcher.start()
        out = await asyncio.wait_for(asyncio.gather(batcher.submit("a"), batcher.submit("b"), return_exceptions=True), 5)
        await batcher.stop()
        return out

    a, b = asyncio.run(wrong())  # two results for one request each (the retry), then each gets its own
    assert a == "a" and b == "b"


def test_stop_answers_requests_in_flight_and_queued():
    started = threading.Event()

    def stuck(batch, deliver):
        started.set()
        time.sleep(1.0)
        return batch

    async def main():
        batcher = MicroBatcher(stuck, max_batch=1, max_wait_ms=0, max_queue=8)
        await batcher.start()
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
        while not started.is_set():
            await asyncio.sleep(0.01)
        await batcher.stop()
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)

    out = asyncio.run(main())
    assert all(isinstance(r, ShuttingDownError) for r in out), out
