"""Micro-batching: requests that arrive within a short window share one call of the recommender.

The queue is bounded: a request that finds it full is refused at once (`QueueFullError`, a 429 for the caller)
rather than waiting behind everyone else. A call that raises is retried one request at a time, so a request that
fails answers alone and the others of its batch still get their results."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """The request queue is full (`serving.max_queue`); `retry_after` is the suggested wait in seconds."""

    def __init__(self, size: int, retry_after: int) -> None:
        super().__init__(f"the request queue is full ({size} waiting, serving.max_queue); retry in {retry_after} s")
        self.retry_after = retry_after


class ShuttingDownError(RuntimeError):
    """The service is stopping and takes no new requests."""


@dataclass
class BatchStats:
    """What the batcher did: calls, requests, the largest batch, refusals, and the mean seconds per call."""

    batches: int = 0
    requests: int = 0
    largest: int = 0
    rejected: int = 0
    seconds: float = 0.0

    def add(self, size: int) -> None:
        """Count one batch of `size` requests."""
        self.batches += 1
        self.requests += size
        self.largest = max(self.largest, size)


class MicroBatcher:
    """Collect requests into batches: the first waiting request, every request that queued while the model was busy,
    then more for up to `max_wait_ms` (0: none), at most `max_batch` in all; at most `max_queue` wait.

    `fn(requests, deliver)` returns one result per request, in order; a result that is an exception is raised to
    that request alone, and `deliver(i, result)` answers request i at once (e.g. those sent to a fast fallback
    before the slow path runs; their entry in the returned list is then ignored). `fn` runs in one worker thread,
    so the model is never used by two threads at once and the event loop stays free for other endpoints.
    `on_batch(size, seconds)` is told about every call."""

    def __init__(self, fn: Callable[[list[Any], Callable[[int, Any], None]], list[Any]], max_batch: int,
                 max_wait_ms: float, max_queue: int, on_batch: Callable[[int, float], None] | None = None) -> None:
        self.fn, self.max_batch, self.max_wait, self.max_queue = fn, max_batch, max_wait_ms / 1000.0, max_queue
        self.on_batch = on_batch
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._inflight: list[asyncio.Future] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recommender")

    @property
    def depth(self) -> int:
        """Requests waiting plus those being answered."""
        return (self._queue.qsize() if self._queue else 0) + sum(not f.done() for f in self._inflight)

    async def start(self) -> None:
        """Start the collecting task on the running loop."""
        self.loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def drain(self, timeout: float) -> bool:
        """Wait until nothing is queued or running (at most `timeout` s); whether it emptied."""
        end = time.monotonic() + timeout
        while self.depth and time.monotonic() < end:
            await asyncio.sleep(0.02)
        return not self.depth

    async def stop(self) -> None:
        """Stop collecting; requests still queued or in the call now running get `ShuttingDownError`."""
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        waiting = [fut for _, fut in (self._queue.get_nowait() for _ in range(self._queue.qsize()))] if self._queue else []
        for fut in [*waiting, *self._inflight]:
            if not fut.done():
                fut.set_exception(ShuttingDownError("the service is shutting down"))
        self._pool.shutdown(wait=False, cancel_futures=True)

    def retry_after(self) -> int:
        """Seconds until the queue has likely moved on: the queue's length times the mean seconds per request."""
        per_request = self.stats.seconds / self.stats.requests if self.stats.requests else 1.0
        return max(1, int(per_request * self.depth + 0.999))

    async def submit(self, request: Any) -> Any:
        """Queue one request and wait for its result; `QueueFullError` at once when `max_queue` are waiting."""
        if self._queue is None:
            raise RuntimeError("the micro-batcher is not started")
        if self._queue.qsize() >= self.max_queue:
            self.stats.rejected += 1
            raise QueueFullError(self._queue.qsize(), self.retry_after())
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((request, fut))
        return await fut

    def _resolve(self, fut: asyncio.Future, result: Any) -> None:
        """Set a future from the worker thread (on the loop's thread)."""
        def put() -> None:
            if not fut.done():
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

        self.loop.call_soon_threadsafe(put)

    def _apply(self, batch: list[tuple[Any, asyncio.Future]]) -> None:
        """`fn` on the batch, answering each future; any error of `fn` (or a wrong number of results) is retried
        one request at a time, so each request gets its result or its own exception."""
        delivered: set[int] = set()

        def deliver(i: int, result: Any) -> None:
            delivered.add(i)
            self._resolve(batch[i][1], result)

        try:
            results = list(self.fn([r for r, _ in batch], deliver))
            if len(results) != len(batch):
                raise RuntimeError(f"the recommender returned {len(results)} results for {len(batch)} requests")
        except Exception as exc:  # noqa: BLE001 - isolated below
            left = [i for i in range(len(batch)) if i not in delivered]
            if len(batch) == 1:
                logger.exception("a request failed")
                for i in left:
                    self._resolve(batch[i][1], exc)
                return
            logger.warning("a batch of %d requests failed (%s: %s); answering them one at a time", len(batch),
                           type(exc).__name__, exc)
            for i in left:
                self._apply([batch[i]])
            return
        for i, ((_, fut), result) in enumerate(zip(batch, results, strict=True)):
            if i not in delivered:
                self._resolve(fut, result)

    async def _collect(self) -> list[tuple[Any, asyncio.Future]]:
        """The next batch: the first waiting request, what queued meanwhile, then more for `max_wait_ms`."""
        batch = [await self._queue.get()]
        while len(batch) < self.max_batch and not self._queue.empty():  # what queued while the model was busy
            batch.append(self._queue.get_nowait())
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [(r, f) for r, f in batch if not f.done()]
            if not live:
                continue
            self._inflight = [f for _, f in live]
            self.stats.add(len(live))  # counted before any answer lands, so a caller who has its answer sees it
            start = time.perf_counter()
            try:
                await loop.run_in_executor(self._pool, self._apply, live)
            except Exception as exc:  # noqa: BLE001 - e.g. the pool shut down: every waiting request is told
                for fut in self._inflight:
                    if not fut.done():
                        fut.set_exception(exc)
            seconds = time.perf_counter() - start
            await asyncio.sleep(0)  # let the answers set from the worker thread land before counting
            self._inflight = []
            self.stats.seconds += seconds
            if self.on_batch:
                try:
                    self.on_batch(len(live), seconds)
                except Exception:  # noqa: BLE001 - metrics must never stop the batcher
                    logger.exception("on_batch failed")
