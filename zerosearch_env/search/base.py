"""The search backend interface: requests in, ranked documents out, always in batches."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Sequence


@dataclass(frozen=True, slots=True)
class Document:
    """One search result. `score` is the backend's relevance score where it has one."""

    id: str
    title: str
    text: str
    score: float | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "text": self.text, "score": self.score}


@dataclass(slots=True)
class SearchRequest:
    """One search call.

    `question` and `answers` are the task's question and gold aliases: real engines ignore them, the
    simulator uses them to write useful (grounded) or noisy documents. `episode_id` and
    `search_index` identify the call for reproducible per-call randomness (the simulator's
    useful/noisy draw); `step` is the training step the call belongs to, when known.
    `supporting_titles` are the task's answer-supporting article titles in hop order, where known
    (the simulator's hop-aware answer hint, `knowledge.AnswerHintKnowledge`, reads them).
    """

    query: str
    top_k: int = 3
    question: str | None = None
    answers: tuple[str, ...] = ()
    episode_id: str = ""
    search_index: int = 0
    step: int | None = None
    extra: dict | None = field(default=None, compare=False)
    supporting_titles: tuple[str, ...] = ()


class SearchBackend(ABC):
    """Implement `search`; the async twin runs it in a worker thread unless overridden.

    A backend must return exactly one list per request, in request order. It may return fewer
    than `top_k` documents, never more.
    """

    #: short stable name used in cache keys, metrics and reports
    name: str = "backend"

    @abstractmethod
    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]: ...

    async def asearch(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        return await asyncio.to_thread(self.search, list(requests))

    def search_with_info(self, requests: Sequence[SearchRequest]) -> tuple[list[list[Document]], list[dict]]:
        """`search` plus one JSON-serialisable info dict per request (the simulator reports its
        useful/noisy mode and gate result there). The env calls this one."""
        return self.search(requests), [{} for _ in requests]

    def identity(self) -> str:
        """A string that changes when the backend would answer differently (used by caches)."""
        return self.name

    def cache_key_fields(self, request: SearchRequest) -> tuple:
        """The request fields a cache (`CachedSearch`) keys on besides `identity()`. Backends whose
        answer depends on more than the query (the simulator's mode draw) override this."""
        return (request.query, request.top_k)

    def call_info(self, request: SearchRequest) -> dict:
        """The part of `search_with_info`'s info that belongs to this call rather than to its
        documents (the simulator's mode and noise probability at the call's step). A cache reports
        it afresh for every request, also on a hit."""
        return {}

    def stats(self) -> dict:
        """Counters the env copies into `info` and trainers log (JSON-serialisable)."""
        return {}

    def set_training_step(self, step: int) -> None:
        """Backends whose behaviour depends on the training step (the simulator) override this."""

    def close(self) -> None:
        """Release resources (threads, connections)."""


class DelegatingSearch(SearchBackend):
    """Base for a wrapper around another backend, `inner`: it takes the inner backend's `name` and
    forwards `search`, `search_with_info`, `identity`, `cache_key_fields` and `stats`, so a
    subclass overrides only what it adds. `set_training_step`, `close` and `call_info` keep the
    `SearchBackend` defaults (nothing is forwarded): a wrapper that drives or owns `inner`
    forwards them itself."""

    def __init__(self, inner: SearchBackend):
        self.inner = inner
        self.name = inner.name

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        return self.inner.search(requests)

    def search_with_info(self, requests: Sequence[SearchRequest]) -> tuple[list[list[Document]], list[dict]]:
        return self.inner.search_with_info(requests)

    def identity(self) -> str:
        return self.inner.identity()

    def cache_key_fields(self, request: SearchRequest) -> tuple:
        return self.inner.cache_key_fields(request)

    def stats(self) -> dict:
        return self.inner.stats()


class FunctionSearch(SearchBackend):
    """Wraps a plain function `f(requests) -> list[list[Document]]` as a backend."""

    def __init__(self, fn, name: str = "function"):
        self._fn = fn
        self.name = name

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        out = self._fn(list(requests))
        if len(out) != len(requests):
            raise ValueError(f"{self.name}: returned {len(out)} result lists for {len(requests)} requests")
        return out
