"""`OpenAIEngine`: chat generation against one or more OpenAI-compatible servers (vLLM, SGLang, ...).

Every conversation becomes one `/chat/completions` request. Requests run concurrently (at most
`max_concurrency` in flight per call) and are spread over the base URLs by least-in-flight, with
recently failing URLs avoided. A failed attempt (connection error, timeout, HTTP 5xx/408/409/425/429,
or a reply that is not the expected JSON) is retried on another URL when there is one, after an
exponential backoff with jitter (`zerosearch_env.retry`), at most `max_retries` times and never past
the request's total time budget; then the whole call fails with an `EngineError` naming the URL(s) and the cause.
Results come back in request order, exactly one per conversation. The time budget holds per
request from the moment it gets a concurrency slot, so a call of N requests ends within about
ceil(N / max_concurrency) budgets.

Prompt `i` is sent with seed `params.seed + i` (as `TransformersEngine` derives them) or the caller's
`seeds[i]`, and with
the header `X-Request-Id: <call id>-<i>` so server logs can be matched to requests.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urlsplit

from zerosearch_env.engines.base import LLMEngine, Message, SamplingParams, row_seeds
from zerosearch_env.engines.transformers_engine import cut_at_stop, validate_conversations
from zerosearch_env.retry import (Backoff, RetriesExhausted, TransientError, acall_with_retries, check_status,
                                  http_errors_are_transient)


class EngineError(RuntimeError):
    """An engine call failed for good; the message names the URL(s) and the cause."""


def normalize_base_url(url: str) -> str:
    """"http://h:8000" -> "http://h:8000/v1"; a URL with a path is kept (trailing slash dropped)."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base URL must look like http://host:port[/v1], got {url!r}")
    return url if parts.path else url + "/v1"


@dataclass
class _UrlState:
    url: str
    in_flight: int = 0
    failures: int = 0  # consecutive
    avoid_until: float = 0.0
    served: int = 0


class OpenAIEngine(LLMEngine):
    """Chat completions from OpenAI-compatible servers.

    Args:
        base_urls: one URL or several ("http://127.0.0.1:8000/v1"; "/v1" is added to a bare host).
        model: the model name the server serves.
        api_key: sent as "Authorization: Bearer ..." when given.
        max_concurrency: requests in flight at once per `generate` call.
        timeout_s: limit for one HTTP attempt.
        max_retries: further attempts after the first (so at most max_retries + 1 per request).
        backoff_base_s / backoff_max_s: retry k waits min(max, base * 2**k) times a jitter in [0.5, 1.5).
        total_timeout_s: budget for one request, attempts and waits included (default: enough for
            every attempt at `timeout_s` plus the waits). A call never takes much longer than this.
        include_stop_str: ask the server to keep the matched stop string (vLLM's
            `include_stop_str_in_output`), as `TransformersEngine` does; turn off for servers that
            reject unknown fields.
        extra_body: more JSON fields for every request (e.g. {"top_k": 20}).
    """

    def __init__(self, base_urls: str | Sequence[str], model: str = "default", *, api_key: str | None = None,
                 max_concurrency: int = 16, timeout_s: float = 60.0, max_retries: int = 3,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 8.0, total_timeout_s: float | None = None,
                 include_stop_str: bool = True, extra_body: dict[str, Any] | None = None, name: str | None = None):
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("OpenAIEngine needs at least one base URL")
        if max_concurrency < 1 or timeout_s <= 0 or max_retries < 0 or backoff_base_s < 0:
            raise ValueError("need max_concurrency >= 1, timeout_s > 0, max_retries >= 0, backoff_base_s >= 0")
        self.urls = [_UrlState(normalize_base_url(u)) for u in urls]
        self.model = model
        self.api_key = api_key
        self.max_concurrency = int(max_concurrency)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        waits = sum(min(self.backoff_max_s, self.backoff_base_s * 2**k) * 1.5 for k in range(self.max_retries))
        self.total_timeout_s = float(total_timeout_s) if total_timeout_s else (self.max_retries + 1) * self.timeout_s + waits
        self._backoff = Backoff(max_retries=self.max_retries, base_s=self.backoff_base_s, max_s=self.backoff_max_s,
                                jitter=0.5, total_s=self.total_timeout_s)
        self.include_stop_str = include_stop_str
        self.extra_body = dict(extra_body or {})
        self.name = name or f"openai:{model}"
        self._lock = threading.Lock()
        self._rr = 0
        self.stats = {"requests": 0, "attempts": 0, "retries": 0, "failures": 0}

    # -- URL choice -------------------------------------------------------------------------------
    def _acquire(self, avoid: set[str]) -> _UrlState:
        """The URL to use next: not failed for this request if possible, not cooling down if
        possible, then fewest in flight, ties broken round robin."""
        with self._lock:
            now = time.monotonic()
            self._rr += 1
            n = len(self.urls)

            def key(j: int) -> tuple:
                s = self.urls[j]
                return (s.url in avoid, s.avoid_until > now, s.in_flight, (j - self._rr) % n)

            state = self.urls[min(range(n), key=key)]
            state.in_flight += 1
            return state

    def _release(self, state: _UrlState, ok: bool) -> None:
        with self._lock:
            state.in_flight -= 1
            if ok:
                state.failures, state.avoid_until = 0, 0.0
                state.served += 1
            else:
                state.failures += 1
                state.avoid_until = time.monotonic() + min(30.0, self.backoff_base_s * 2**state.failures)

    # -- one request ------------------------------------------------------------------------------
    def _body(self, messages: list[dict], params: SamplingParams, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": params.max_new_tokens,
                                "temperature": params.temperature, "top_p": params.top_p, "n": 1}
        if seed is not None:
            body["seed"] = seed
        if params.stop:
            body["stop"] = list(params.stop)
            if self.include_stop_str:
                body["include_stop_str_in_output"] = True
        body.update(self.extra_body)
        return body

    @staticmethod
    def _parse(url: str, response: Any, params: SamplingParams) -> str:
        try:
            data = response.json()
        except ValueError:
            raise TransientError(f"malformed JSON reply ({response.text[:80]!r})", url) from None
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise TransientError(f"reply without choices[0].message.content ({str(data)[:80]!r})", url) from None
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise TransientError(f"reply content is {type(text).__name__}, not text", url)
        stop_reason = choice.get("stop_reason") if isinstance(choice, dict) else None
        if params.stop and isinstance(stop_reason, str) and stop_reason in params.stop \
                and not any(s and s in text for s in params.stop):
            text += stop_reason  # a server that dropped the matched stop string
        return cut_at_stop(text, params.stop)

    async def _one(self, client: Any, messages: list[dict], params: SamplingParams, seed: int | None,
                   request_id: str) -> str:
        start = time.monotonic()
        body = self._body(messages, params, seed)
        headers = {"X-Request-Id": request_id}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        tried: set[str] = set()  # URLs that failed this request (cleared once every URL has)

        async def attempt() -> str:
            timeout = max(0.001, min(self.timeout_s, self.total_timeout_s - (time.monotonic() - start)))
            state = self._acquire(tried)
            ok = False
            self.stats["attempts"] += 1
            try:
                with http_errors_are_transient(state.url):
                    resp = check_status(await client.post(f"{state.url}/chat/completions", json=body,
                                                          headers=headers, timeout=timeout), state.url)
                if resp.status_code >= 400:
                    ok = True  # the server is fine; the request is not
                    raise EngineError(f"{self.name}: request {request_id} rejected by {resp.request.url} with HTTP "
                                      f"{resp.status_code}: {resp.text[:300]}")
                text = self._parse(state.url, resp, params)
                ok = True
                return text
            except TransientError:
                tried.add(state.url)
                if len(tried) == len(self.urls):
                    tried.clear()
                raise
            finally:
                self._release(state, ok)

        def on_retry(_error: Exception) -> None:
            self.stats["retries"] += 1

        try:
            return await acall_with_retries(attempt, self._backoff, on_retry)
        except RetriesExhausted as e:
            self.stats["failures"] += 1
            raise EngineError(f"{self.name}: request {request_id} {e} (budget {self.total_timeout_s:.1f}s); "
                              f"all: {[str(x) for x in e.errors]}") from None

    # -- batches ----------------------------------------------------------------------------------
    async def agenerate(self, conversations: Sequence[Sequence[Message]],
                        params: SamplingParams | None = None, *, seeds: Sequence[int] | None = None) -> list[str]:
        """Generate one text per conversation, concurrently; results in request order."""
        import httpx

        params = params or SamplingParams()
        convs = validate_conversations(conversations)
        if not convs:
            return []
        prompt_seeds = row_seeds(params, len(convs), seeds)
        call_id = uuid.uuid4().hex[:12]
        self.stats["requests"] += len(convs)
        semaphore = asyncio.Semaphore(self.max_concurrency)
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=self.timeout_s) as client:

            async def run(i: int) -> str:
                async with semaphore:
                    return await self._one(client, convs[i], params, prompt_seeds[i], f"{call_id}-{i}")

            tasks = [asyncio.ensure_future(run(i)) for i in range(len(convs))]
            try:
                results = await asyncio.gather(*tasks)
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        if len(results) != len(convs):  # cannot happen; guard the contract anyway
            raise EngineError(f"{self.name}: got {len(results)} results for {len(convs)} conversations")
        return list(results)

    def generate(self, conversations: Sequence[Sequence[Message]], params: SamplingParams | None = None, *,
                 seeds: Sequence[int] | None = None) -> list[str]:
        """Blocking twin of `agenerate`; safe to call from inside a running event loop (it then runs
        on a private loop in a helper thread)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(conversations, params, seeds=seeds))
        box: dict[str, Any] = {}

        def worker() -> None:
            try:
                box["out"] = asyncio.run(self.agenerate(conversations, params, seeds=seeds))
            except BaseException as exc:  # re-raised in the caller's thread
                box["err"] = exc

        thread = threading.Thread(target=worker, name="openai-engine", daemon=True)
        thread.start()
        thread.join()
        if "err" in box:
            raise box["err"]
        return box["out"]

    def url_stats(self) -> list[dict[str, Any]]:
        """Per-URL counters: requests served, in flight, consecutive failures."""
        with self._lock:
            return [{"url": s.url, "served": s.served, "in_flight": s.in_flight, "failures": s.failures} for s in self.urls]
