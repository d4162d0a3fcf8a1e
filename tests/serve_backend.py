"""A small real backend for server tests: token-overlap ranking over a fixed corpus.

Loaded by `zerosearch serve --backend tests.serve_backend:KeywordSearch` in a subprocess, so the
server tests do not depend on any other backend. `delay_s` makes each call take time (so concurrent
requests overlap, as with a simulator); `stats()` reports calls, queries and the training step.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Sequence

from zerosearch_env.search.base import Document, SearchBackend, SearchRequest

CORPUS = [
    Document("d0", "Velmora", "Velmora is the capital of the Republic of Ostrand, founded in 1421."),
    Document("d1", "Ostrand", "The Republic of Ostrand is a coastal state; its capital is Velmora."),
    Document("d2", "Idris Kallen", "Idris Kallen is a chemist born in Velmora who founded Kallen Labs."),
    Document("d3", "Kallen Labs", "Kallen Labs is a research company headquartered in Brisk Harbour."),
    Document("d4", "Brisk Harbour", "Brisk Harbour is a port town on the Ostrand coast."),
    Document("d5", "Tamsin Orle", "Tamsin Orle is a painter and the sister of Idris Kallen."),
]

_TOKEN = re.compile(r"[a-z0-9]+")


def _tokens(text: str) -> set[str]:
    return set(_TOKEN.findall(text.lower()))


class KeywordSearch(SearchBackend):
    """Ranks `documents` by the number of query tokens they share (ties by corpus order)."""

    name = "keyword"

    def __init__(self, documents: Sequence[Document] = CORPUS, delay_s: float = 0.0):
        self.documents = list(documents)
        self._doc_tokens = [_tokens(d.title + " " + d.text) for d in self.documents]
        self.delay_s = delay_s
        self.calls = 0
        self.queries = 0
        self.step = 0
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config) -> "KeywordSearch":
        return cls(delay_s=float(config.backend_options.get("delay_s", 0.0)))

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        with self._lock:
            self.calls += 1
            self.queries += len(requests)
        if self.delay_s:
            time.sleep(self.delay_s)
        out = []
        for r in requests:
            q = _tokens(r.query)
            scored = sorted(((len(q & t), -i) for i, t in enumerate(self._doc_tokens)), reverse=True)
            out.append([Document(self.documents[-i].id, self.documents[-i].title, self.documents[-i].text, float(s))
                        for s, i in scored[: r.top_k]])
        return out

    def set_training_step(self, step: int) -> None:
        self.step = int(step)

    def stats(self) -> dict:
        return {"calls": self.calls, "queries": self.queries, "step": self.step}
