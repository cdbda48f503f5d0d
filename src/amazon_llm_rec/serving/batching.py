"""Micro-batching: requests that arrive within a short window share one call of the recommender."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class BatchStats:
    """What the batcher did: calls, requests and the largest batch."""

    batches: int = 0
    requests: int = 0
    largest: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    def add(self, size: int) -> None:
        """Count one batch of `size` requests."""
        self.batches += 1
        self.requests += size
        self.largest = max(self.largest, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1


class MicroBatcher:
    """Collect requests and run `fn(batch)` once for them all: every request that queued while the model was busy,
    then more for up to `max_wait_ms` (0: none), at most `max_batch` in all.

    `fn` takes a list of requests and returns one result per request, in order. It runs in one worker thread,
    so the model is never used by two threads at once and the event loop stays free for other endpoints.
    `max_batch=1` serves one request at a time (the comparison in the load benchmark)."""

    def __init__(self, fn: Callable[[list[Any]], list[Any]], max_batch: int = 16, max_wait_ms: float = 10.0) -> None:
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recommender")

    async def start(self) -> None:
        """Start the collecting task on the running loop."""
        self.loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop collecting; requests still queued get an error."""
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue and not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("the service is shutting down"))
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, request: Any) -> Any:
        """Queue one request and wait for its result."""
        if self._queue is None:
            raise RuntimeError("the micro-batcher is not started")
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((request, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
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
            live = [(r, f) for r, f in batch if not f.done()]  # a client that went away cancelled its future
            if not live:
                continue
            self.stats.add(len(live))
            try:
                results = await loop.run_in_executor(self._pool, self.fn, [r for r, _ in live])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                logger.exception("a batch of %d requests failed", len(live))
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
