"""`RetrieverClient`: a backend that asks a Search-R1-style retrieval server over HTTP.

One backend call is one `POST {url}/retrieve` with
`{"queries": [...], "topk": k, "return_scores": true}`; the server answers
`{"result": [[{"document": {"id": ..., "contents": "\"Title\"\\ntext"}, "score": ...}, ...], ...]}`
(items without the `document` wrapper are read too). Connection errors, timeouts and 5xx/429 answers
are retried with exponential backoff (`zerosearch_env.retry`); other 4xx answers and malformed
bodies raise at once with the server's message.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import httpx

from zerosearch_env.data.loaders import parse_contents
from zerosearch_env.retry import Backoff, RetriesExhausted, call_with_retries, check_status, http_errors_are_transient
from zerosearch_env.search.base import Document, SearchBackend, SearchRequest


class RetrieverError(RuntimeError):
    """The retrieval server could not be reached or answered something unusable."""


def parse_item(item: Any, rank: int) -> Document:
    """One result item (wrapped `{"document", "score"}` or a bare document) -> `Document`."""
    if not isinstance(item, dict):
        raise RetrieverError(f"result item {rank} is a {type(item).__name__}, expected an object")
    score = item.get("score")
    doc = item["document"] if isinstance(item.get("document"), dict) else item
    if "title" in doc and "text" in doc:
        title, text = str(doc["title"]), str(doc["text"])
    elif "contents" in doc:
        title, text = parse_contents(str(doc["contents"]))
    elif "text" in doc:
        title, text = str(doc.get("title", "")), str(doc["text"])
    else:
        raise RetrieverError(f"result item {rank} has neither 'contents' nor 'text': {str(item)[:200]}")
    doc_id = doc.get("id", doc.get("doc_id", doc.get("docid", f"rank{rank}")))
    return Document(str(doc_id), title, text, float(score) if isinstance(score, (int, float)) else None)


class RetrieverClient(SearchBackend):
    """A Search-R1 `/retrieve` server as a search backend.

    `url` is the server's base URL or its full `/retrieve` URL. All requests of one `search` call
    go in ONE HTTP request with `topk` = the largest `top_k` asked; each list is then cut to its own
    request's `top_k`. `max_retries` extra attempts follow a failure, waiting `min(8, backoff_s * 2**i)` s.
    """

    name = "retriever"

    def __init__(self, url: str, timeout_s: float = 30.0, max_retries: int = 3, backoff_s: float = 0.5,
                 api_key: str | None = None, return_scores: bool = True, headers: dict | None = None):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"retriever url must start with http:// or https://, got {url!r}")
        if max_retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise ValueError("need timeout_s > 0, max_retries >= 0, backoff_s >= 0")
        url = url.rstrip("/")
        self.url = url if url.endswith("/retrieve") else url + "/retrieve"
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._backoff = Backoff(max_retries=max_retries, base_s=backoff_s)
        self.return_scores = return_scores
        hdrs = dict(headers or {})
        if api_key:
            hdrs["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(timeout=timeout_s, headers=hdrs)
        self.http_calls = 0
        self.retries = 0
        self.queries = 0
        self.seconds = 0.0

    @classmethod
    def from_config(cls, config) -> "RetrieverClient":
        opts = dict(config.backend_options)
        if "url" not in opts:
            raise ValueError("backend 'retriever' needs backend_options.url (e.g. http://127.0.0.1:8000/retrieve)")
        import os

        key_env = opts.pop("api_key_env", None)
        if key_env and "api_key" not in opts:
            opts["api_key"] = os.environ.get(key_env)
        allowed = {"url", "timeout_s", "max_retries", "backoff_s", "api_key", "return_scores", "headers"}
        unknown = set(opts) - allowed
        if unknown:
            raise ValueError(f"unknown retriever options {sorted(unknown)}; allowed: {sorted(allowed)}")
        return cls(**opts)

    def identity(self) -> str:
        return f"retriever:{self.url}"

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        requests = list(requests)
        if not requests:
            return []
        body = {"queries": [r.query for r in requests], "topk": max(r.top_k for r in requests),
                "return_scores": self.return_scores}
        payload = self._post(body)
        result = payload.get("result") if isinstance(payload, dict) else None
        if not isinstance(result, list):
            raise RetrieverError(f"{self.url}: the answer has no 'result' list: {str(payload)[:200]}")
        if len(result) != len(requests):
            raise RetrieverError(f"{self.url}: {len(result)} result lists for {len(requests)} queries")
        out = []
        for req, items in zip(requests, result):
            if not isinstance(items, list):
                raise RetrieverError(f"{self.url}: a result entry is a {type(items).__name__}, expected a list")
            out.append([parse_item(it, i) for i, it in enumerate(items[: req.top_k])])
        self.queries += len(requests)
        return out

    def _post(self, body: dict) -> Any:
        def attempt() -> httpx.Response:
            self.http_calls += 1
            with http_errors_are_transient():
                return check_status(self._client.post(self.url, json=body))

        def on_retry(_error: Exception) -> None:
            self.retries += 1

        start = time.perf_counter()
        try:
            resp = call_with_retries(attempt, self._backoff, on_retry)
        except RetriesExhausted as e:
            raise RetrieverError(f"{self.url} {e}") from None
        finally:
            self.seconds += time.perf_counter() - start
        if resp.status_code >= 400:
            raise RetrieverError(f"{self.url} refused the request: HTTP {resp.status_code}: {resp.text[:300]}")
        try:
            return resp.json()
        except ValueError:
            raise RetrieverError(f"{self.url} answered non-JSON: {resp.text[:200]!r}") from None

    def stats(self) -> dict:
        return {"http_calls": self.http_calls, "retries": self.retries, "queries": self.queries,
                "seconds": round(self.seconds, 4)}

    def close(self) -> None:
        self._client.close()
