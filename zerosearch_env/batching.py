"""Micro-batching for the HTTP servers: items submitted concurrently, processed by one call per batch.

Used by the retrieval server (`zerosearch_env.server`: each item is one request's search queries,
one backend call per batch) and the engine server (`zerosearch_env.engines.openai_server`: each item
is one chat request, one `generate` call per group of sampling settings).
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Gathers concurrently submitted items into batches, each handled by ONE `process` call.

    `submit(item)` waits for that item's result. One worker task (started on first use, in the
    running loop) takes the first waiting item, keeps collecting for `window_s` or until `max_batch`
    units are gathered (`size(item)` units per item, default 1), and awaits `process(items)`, which
    returns one result per item. A returned result that is an exception is raised to that item's
    caller alone; an exception raised by `process` goes to every caller of the batch. Items whose
    caller has gone away are dropped before processing. Batches run one after another: what
    arrives meanwhile forms the next batch, an item that would overflow a batch starts the next one,
    and an item larger than `max_batch` is a batch of its own.
    """

    def __init__(self, process: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]], *,
                 window_s: float = 0.005, max_batch: int = 64, size: Callable[[T], int] | None = None):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if window_s < 0:
            raise ValueError("the batch window must be >= 0")
        self.process = process
        self.window_s = window_s
        self.max_batch = max_batch
        self.size = size or (lambda _item: 1)
        self.batches = 0  # `process` calls made
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    def _ensure_worker(self) -> asyncio.Queue:
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        return self._queue

    async def submit(self, item: T) -> R:
        fut = asyncio.get_running_loop().create_future()
        self._ensure_worker().put_nowait((item, fut))
        return await fut

    async def _run(self) -> None:
        queue = self._queue
        assert queue is not None
        loop = asyncio.get_running_loop()
        pending: tuple | None = None
        while True:
            first = pending or await queue.get()
            pending = None
            batch = [first]
            size = self.size(first[0])
            deadline = loop.time() + self.window_s
            while size < self.max_batch:
                timeout = deadline - loop.time()
                try:
                    item = queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(queue.get(), timeout)
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                if size + self.size(item[0]) > self.max_batch:
                    pending = item  # starts the next batch
                    break
                batch.append(item)
                size += self.size(item[0])
            await self._call(batch)

    async def _call(self, batch: list[tuple[T, asyncio.Future]]) -> None:
        live = [(item, fut) for item, fut in batch if not fut.done()]
        if not live:
            return
        self.batches += 1
        try:
            results = await self.process([item for item, _ in live])
            if len(results) != len(live):
                raise RuntimeError(f"the batch handler returned {len(results)} results for {len(live)} items")
        except Exception as e:
            results = [e] * len(live)
        for (_, fut), result in zip(live, results):
            if fut.done():
                continue
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
