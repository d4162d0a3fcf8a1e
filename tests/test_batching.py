"""`zerosearch_env.batching.MicroBatcher`, the one micro-batcher of both HTTP servers."""

from __future__ import annotations

import asyncio

import pytest

from zerosearch_env.batching import MicroBatcher


def test_batches_by_size_and_window_with_per_item_errors():
    seen: list[list[list[int]]] = []

    async def process(batch: list[list[int]]):
        seen.append(batch)
        await asyncio.sleep(0.01)
        return [ValueError(f"bad {item}") if -1 in item else sum(item) for item in batch]

    async def main():
        batcher = MicroBatcher(process, window_s=0.05, max_batch=5, size=len)
        jobs = [[1, 2], [3], [-1], [4, 5], [6] * 7, [7]]
        results = await asyncio.gather(*[batcher.submit(j) for j in jobs], return_exceptions=True)
        await batcher.aclose()
        return results, batcher.batches

    results, batches = asyncio.run(main())
    assert results[:2] == [3, 3] and isinstance(results[2], ValueError) and results[3:] == [9, 42, 7]
    # [4, 5] would overflow the first batch (4 units) and starts the next; [6]*7 is a batch alone
    assert seen == [[[1, 2], [3], [-1]], [[4, 5]], [[6] * 7], [[7]]] and batches == 4


def test_a_failing_handler_fails_its_batch_only_and_gone_callers_are_skipped():
    calls: list[list[str]] = []

    async def process(batch: list[str]):
        calls.append(batch)
        if "boom" in batch:
            raise RuntimeError("engine down")
        await asyncio.sleep(0.05)
        return [s.upper() for s in batch]

    async def main():
        batcher = MicroBatcher(process, window_s=0.02, max_batch=8)
        with pytest.raises(RuntimeError, match="engine down"):
            await asyncio.gather(batcher.submit("boom"), batcher.submit("x"))
        gone = asyncio.ensure_future(batcher.submit("gone"))
        await asyncio.sleep(0)
        gone.cancel()
        assert await batcher.submit("ok") == "OK"  # the worker survived the failure
        await batcher.aclose()

    asyncio.run(main())
    assert calls[-1] == ["ok"]
    with pytest.raises(ValueError):
        MicroBatcher(lambda b: b, max_batch=0)
