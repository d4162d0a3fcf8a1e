"""`WebSearch`: a web search API as a backend, behind a small provider adapter interface.

A `WebSearchProvider` turns ONE query into documents (web APIs take one query per HTTP call);
`WebSearch` fans the requests of a backend call out over a thread pool and keeps counters.
`SerpAPIProvider` speaks the SerpAPI JSON format (`GET {base_url}?q=...&api_key=...&num=k`,
answered by `{"organic_results": [{"title", "snippet", "link"}, ...]}`). The key is read from an
environment variable (default `SERPAPI_API_KEY`); the base URL is configurable, which is also how
the tests point it at a local fake server. Add a provider by subclassing `WebSearchProvider` and
registering it in `PROVIDERS`; send its key in a header where the API accepts one.

Keeping the key out of logs: SerpApi accepts the key only as the `api_key` query parameter (it
documents no header), and httpx logs every request URL at INFO. So the key is added to the URL by
`QueryKeyTransport`, below httpx's logging: the request httpx logs, keeps as `response.request` and
names in its errors is the URL without the key. Error messages are redacted as well.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import urllib.request
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence
from urllib.parse import urlsplit

import httpx

from zerosearch_env.retry import Backoff, RetriesExhausted, call_with_retries, check_status, http_errors_are_transient
from zerosearch_env.search.base import Document, SearchBackend, SearchRequest


class WebSearchError(RuntimeError):
    """The web search API failed or answered something unusable."""


class WebSearchProvider(ABC):
    """Adapter for one web search API: `search_one(query, top_k) -> list[Document]`."""

    #: provider name used in reports and the backend identity
    name: str = "provider"
    #: list price in USD per 1,000 queries (for `zerosearch compare`'s cost column)
    usd_per_1k_queries: float = 0.0

    @abstractmethod
    def search_one(self, query: str, top_k: int) -> list[Document]: ...

    def close(self) -> None:
        """Release connections."""


class QueryKeyTransport(httpx.BaseTransport):
    """Adds `param=key` to each request's URL on its way to the network, below httpx's request log.

    For APIs that take the key only as a query parameter: the request the client logs and keeps
    (`response.request`) carries the URL without it.
    """

    def __init__(self, param: str, key: str, inner: httpx.BaseTransport | None = None):
        self.param = param
        self._key = key
        self._inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        keyed = httpx.Request(request.method, request.url.copy_add_param(self.param, self._key),
                              headers=request.headers, stream=request.stream, extensions=request.extensions)
        return self._inner.handle_request(keyed)

    def close(self) -> None:
        self._inner.close()


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTP(S)_PROXY, honouring NO_PROXY), or None.

    httpx reads these itself only when it builds its own transport; a client given a transport
    (`QueryKeyTransport`) must be told.
    """
    parts = urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class SerpAPIProvider(WebSearchProvider):
    """SerpAPI-style JSON API: results from `organic_results[].title/snippet/link`.

    Retries connection errors, timeouts, 429 and 5xx with exponential backoff (`zerosearch_env.retry`);
    other 4xx raise at once with the API's error message. The key is sent as the `api_key` query
    parameter (SerpApi's only way) through `QueryKeyTransport`, so neither httpx's log lines nor
    error messages carry it. `proxy` defaults to the environment's (HTTPS_PROXY, NO_PROXY).
    """

    name = "serpapi"
    usd_per_1k_queries = 15.0  # SerpAPI's developer plan is about $75 for 5,000 searches

    def __init__(self, api_key: str | None = None, api_key_env: str = "SERPAPI_API_KEY",
                 base_url: str = "https://serpapi.com/search.json", engine: str = "google",
                 timeout_s: float = 20.0, max_retries: int = 2, backoff_s: float = 0.5,
                 extra_params: dict | None = None, proxy: str | None = None):
        key = api_key if api_key is not None else os.environ.get(api_key_env)
        if not key:
            raise ValueError(
                f"web search provider {self.name!r} needs an API key: set the environment variable "
                f"{api_key_env} (or pass api_key)")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self._key = key
        self.base_url = base_url
        self.engine = engine
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._backoff = Backoff(max_retries=max_retries, base_s=backoff_s)
        self.extra_params = dict(extra_params or {})
        proxy = proxy if proxy is not None else environment_proxy(base_url)
        transport = QueryKeyTransport("api_key", key, httpx.HTTPTransport(proxy=proxy))
        self._client = httpx.Client(timeout=timeout_s, transport=transport)

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***")

    def search_one(self, query: str, top_k: int) -> list[Document]:
        params = {"q": query, "engine": self.engine, "num": top_k, **self.extra_params}

        def attempt() -> httpx.Response:
            with http_errors_are_transient():
                return check_status(self._client.get(self.base_url, params=params), redact=self._redact)

        try:
            resp = call_with_retries(attempt, self._backoff)
        except RetriesExhausted as e:
            raise WebSearchError(f"{self.name}: {self._redact(str(e))}") from None
        try:
            data = resp.json()
        except ValueError:
            raise WebSearchError(f"{self.name}: non-JSON answer (HTTP {resp.status_code}): "
                                 f"{self._redact(resp.text[:200])!r}") from None
        if resp.status_code >= 400 or (isinstance(data, dict) and data.get("error") and not data.get("organic_results")):
            msg = data.get("error") if isinstance(data, dict) else data
            raise WebSearchError(f"{self.name}: HTTP {resp.status_code}: {self._redact(str(msg))[:300]}")
        return self.parse(data, top_k)

    def parse(self, data: dict, top_k: int) -> list[Document]:
        """`organic_results` -> documents (title, snippet as text, link as id)."""
        if not isinstance(data, dict):
            raise WebSearchError(f"{self.name}: expected a JSON object, got {type(data).__name__}")
        results = data.get("organic_results", [])
        if not isinstance(results, list):
            raise WebSearchError(f"{self.name}: 'organic_results' is not a list")
        docs = []
        for rank, item in enumerate(results):
            if not isinstance(item, dict):
                continue
            title, snippet, link = item.get("title") or "", item.get("snippet") or "", item.get("link") or ""
            if not (title or snippet):
                continue
            doc_id = link or f"{self.name}:{hashlib.sha1((title + snippet).encode()).hexdigest()[:12]}"
            pos = item.get("position", rank + 1)
            score = 1.0 / float(pos) if isinstance(pos, (int, float)) and pos > 0 else None
            docs.append(Document(doc_id, str(title), str(snippet), score))
            if len(docs) >= top_k:
                break
        return docs

    def close(self) -> None:
        self._client.close()


#: provider name -> class; `WebSearch.from_config` reads `backend_options.provider`
PROVIDERS: dict[str, type[WebSearchProvider]] = {"serpapi": SerpAPIProvider}


class WebSearch(SearchBackend):
    """A web search API as a backend: one API query per request, `max_workers` at a time."""

    name = "web"

    def __init__(self, provider: WebSearchProvider, max_workers: int = 8):
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self.provider = provider
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="websearch")
        self._lock = threading.Lock()
        self.api_queries = 0
        self.errors = 0
        self.seconds = 0.0

    @classmethod
    def from_config(cls, config) -> "WebSearch":
        opts = dict(config.backend_options)
        provider_name = opts.pop("provider", "serpapi")
        if provider_name not in PROVIDERS:
            raise ValueError(f"unknown web search provider {provider_name!r}; choose one of {sorted(PROVIDERS)}")
        max_workers = int(opts.pop("max_workers", 8))
        return cls(PROVIDERS[provider_name](**opts), max_workers=max_workers)

    def identity(self) -> str:
        return f"web:{self.provider.name}"

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        requests = list(requests)
        t0 = time.perf_counter()

        def one(req: SearchRequest) -> list[Document]:
            try:
                return self.provider.search_one(req.query, req.top_k)[: req.top_k]
            except Exception:
                with self._lock:
                    self.errors += 1
                raise
            finally:
                with self._lock:
                    self.api_queries += 1

        try:
            return list(self._pool.map(one, requests))
        finally:
            self.seconds += time.perf_counter() - t0

    def stats(self) -> dict:
        return {"provider": self.provider.name, "api_queries": self.api_queries, "errors": self.errors,
                "seconds": round(self.seconds, 4),
                "usd": round(self.api_queries * self.provider.usd_per_1k_queries / 1000.0, 6)}

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self.provider.close()
