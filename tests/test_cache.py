"""CachedSearch: hits, batching of misses, several processes, a writer killed mid-write."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sqlite3
import threading
import time

import pytest

from zerosearch_env.search import Document, FunctionSearch, SearchRequest
from zerosearch_env.search.cache import CachedSearch


def _docs_for(query: str, top_k: int, size: int = 1) -> list[Document]:
    return [Document(id=f"{query}-{i}", title=f"T {query} {i}", text=(f"text of {query} {i} " * size).strip(), score=1.0 / (i + 1))
            for i in range(top_k)]


class CountingBackend(FunctionSearch):
    """A deterministic backend that records every batch it is sent."""

    def __init__(self, name: str = "counting", size: int = 1):
        self.calls: list[list[str]] = []
        self.size = size

        def fn(requests):
            self.calls.append([r.query for r in requests])
            return [_docs_for(r.query, r.top_k, self.size) for r in requests]

        super().__init__(fn, name=name)

    def search_with_info(self, requests):
        docs = self.search(requests)
        return docs, [{"origin": self.name, "q": r.query} for r in requests]


def test_hits_return_identical_docs_and_info_passes_through(tmp_path):
    inner = CountingBackend()
    cache = CachedSearch(inner, tmp_path / "c")
    reqs = [SearchRequest("alpha", top_k=3), SearchRequest("beta", top_k=2)]
    first, info1 = cache.search_with_info(reqs)
    second, info2 = cache.search_with_info(reqs)
    assert first == second == [_docs_for("alpha", 3), _docs_for("beta", 2)]
    assert [i["cache"] for i in info1] == ["miss", "miss"] and [i["cache"] for i in info2] == ["hit", "hit"]
    assert info2[0]["origin"] == "counting" and info2[1]["q"] == "beta"
    assert inner.calls == [["alpha", "beta"]]
    s = cache.stats()
    assert (s["cache_hits"], s["cache_misses"], s["cache_hit_rate"]) == (2, 2, 0.5)
    # a fresh object on the same file (a new process would do the same) hits too
    again = CachedSearch(CountingBackend(), tmp_path / "c")
    assert again.search([SearchRequest("alpha", top_k=3)]) == [_docs_for("alpha", 3)]
    assert again.backend.calls == [] and len(again) == 2
    assert (tmp_path / "c" / "search_cache.sqlite").is_file()


def test_misses_of_one_call_go_in_one_batch_deduplicated(tmp_path):
    inner = CountingBackend()
    cache = CachedSearch(inner, tmp_path / "x.sqlite")
    cache.search([SearchRequest("a"), SearchRequest("b")])
    out, infos = cache.search_with_info([SearchRequest("a"), SearchRequest("c"), SearchRequest("c"), SearchRequest("d"), SearchRequest("b")])
    assert inner.calls == [["a", "b"], ["c", "d"]]
    assert [i["cache"] for i in infos] == ["hit", "miss", "miss", "miss", "hit"]
    assert out[1] == out[2] == _docs_for("c", 3)
    assert cache.search([]) == []


def test_key_includes_identity_and_top_k(tmp_path):
    a, b = CountingBackend("one"), CountingBackend("two")
    CachedSearch(a, tmp_path).search([SearchRequest("q", top_k=2)])
    CachedSearch(b, tmp_path).search([SearchRequest("q", top_k=2)])
    CachedSearch(b, tmp_path).search([SearchRequest("q", top_k=3)])
    assert a.calls == [["q"]] and b.calls == [["q"], ["q"]]


def test_unreadable_entry_is_a_miss_and_gets_replaced(tmp_path):
    inner = CountingBackend()
    cache = CachedSearch(inner, tmp_path)
    cache.search([SearchRequest("q")])
    with sqlite3.connect(cache.path) as conn:
        conn.execute("UPDATE entries SET docs = '{broken'")
    assert cache.search([SearchRequest("q")]) == [_docs_for("q", 3)]
    assert len(inner.calls) == 2
    assert cache.search([SearchRequest("q")]) == [_docs_for("q", 3)] and len(inner.calls) == 2


def test_threads_share_one_cache(tmp_path):
    cache = CachedSearch(CountingBackend(), tmp_path)
    errors = []

    def work(t):
        try:
            for i in range(30):
                got = cache.search([SearchRequest(f"q{(i + t) % 20}")])
                assert got == [_docs_for(f"q{(i + t) % 20}", 3)]
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(cache) == 20


def test_async_twin(tmp_path):
    import asyncio

    cache = CachedSearch(CountingBackend(), tmp_path)
    assert asyncio.run(cache.asearch([SearchRequest("z", top_k=1)])) == [_docs_for("z", 1)]


# ---------------------------------------------------------------- several processes


def _writer(path: str, worker: int, rounds: int) -> None:
    cache = CachedSearch(CountingBackend(), path)
    for r in range(rounds):
        # half the keys are shared by both workers, half are the worker's own
        reqs = [SearchRequest(f"shared-{r}-{i}") for i in range(5)] + [SearchRequest(f"own{worker}-{r}-{i}") for i in range(5)]
        got = cache.search(reqs)
        assert got == [_docs_for(q.query, 3) for q in reqs]


def test_two_processes_write_concurrently(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 40)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    cache = CachedSearch(CountingBackend(), tmp_path)
    assert len(cache) == 40 * 5 + 2 * 40 * 5
    with sqlite3.connect(cache.path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for query, docs in conn.execute("SELECT query, docs FROM entries"):
            assert [Document(**d) for d in json.loads(docs)] == _docs_for(query, 3)


_BATCH = 200


def _endless_writer(path: str) -> None:
    cache = CachedSearch(CountingBackend(size=60), path)  # ~1.5 KB per document
    r = 0
    while True:
        cache.search([SearchRequest(f"w{r}-{i}") for i in range(_BATCH)])
        r += 1


@pytest.mark.parametrize("delay", [0.05, 0.37])
def test_writer_killed_mid_write_leaves_a_readable_cache(tmp_path, delay):
    ctx = mp.get_context("fork")
    proc = ctx.Process(target=_endless_writer, args=(str(tmp_path),))
    proc.start()
    db = tmp_path / "search_cache.sqlite"
    deadline = time.time() + 30
    while time.time() < deadline:  # wait until some batches are committed
        try:
            with sqlite3.connect(db, timeout=5) as conn:
                if conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0] >= 2 * _BATCH:
                    break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.02)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL

    cache = CachedSearch(CountingBackend(size=60), tmp_path)
    n = len(cache)
    assert n >= 2 * _BATCH and n % _BATCH == 0  # whole batches only: no half-written transaction
    with sqlite3.connect(cache.path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for query, docs in conn.execute("SELECT query, docs FROM entries"):
            assert [Document(**d) for d in json.loads(docs)] == _docs_for(query, 3, 60)
    # reads hit, writes still work
    assert cache.search([SearchRequest("w0-0")]) == [_docs_for("w0-0", 3, 60)] and cache.backend.calls == []
    cache.search([SearchRequest("after-kill")])
    assert len(cache) == n + 1
