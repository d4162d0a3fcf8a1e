"""Small deterministic backends and tasks for env tests (no model, no corpus)."""

from __future__ import annotations

from typing import Sequence

from zerosearch_env.data.task import Task
from zerosearch_env.search.base import Document, SearchBackend, SearchRequest

TASKS = [
    Task("q1", "Who founded the Velmora Guild?", ("Ansel Quorrin", "A. Quorrin"), kind="single"),
    Task("q2", "In which city was the founder of Tarsk Mills born?", ("Oberfell",), kind="bridge"),
    Task("q3", "Which river is longer, the Idra or the Calvo?", ("Idra", "the Idra river"), kind="comparison"),
]


class EchoSearch(SearchBackend):
    """Deterministic: k documents derived from the query; records every call it receives."""

    name = "echo"

    def __init__(self):
        self.calls: list[list[SearchRequest]] = []

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        self.calls.append(list(requests))
        return [
            [Document(f"{r.query[:8]}-{j}", f"Title {j}", f"About {r.query}. Fact number {j}.", score=1.0 / (j + 1))
             for j in range(r.top_k)]
            for r in requests
        ]
