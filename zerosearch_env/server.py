"""A Search-R1-compatible retrieval server in front of ANY search backend.

`create_app(backend)` returns a FastAPI app with:

- `POST /retrieve`: the Search-R1 / verl schema `{"queries": [...], "topk": k, "return_scores": b}`
  answered by `{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}` (one list per
  query; bare documents when `return_scores` is false, as Search-R1's server does). It also accepts
  SkyRL-gym's `{"query": "..."}` (JSON; answered with one result list per query) and GEM's body,
  the same keys msgpack-encoded without a Content-Type (answered in msgpack with a flat `result`
  list). Optional extensions a trainer may send for the simulator: `question(s)`,
  `golden_answers` (alias `answers`: one list of answer strings per query, `[["a1"], ["a2"]]`; a
  flat list of strings only for a single query), `supporting_titles` (the same shape: each query's
  answer-supporting article titles in hop order), `episode_id` (one string for all queries) or
  `episode_ids` (one per query) with `search_index` (the first query's index in its episode; query
  i gets `search_index + i`), and `step`.
- The simulator's knowledge (`backend_options.knowledge`) decides what a body must carry: "world"
  (the default for the built-in world) needs only the query, as skyrl-gym, GEM and Search-R1 send
  it; "answer_hint" needs each query's `golden_answers`, and its `supporting_titles` to be
  hop-aware (the answer hinted only once the query names the last title).
- Each call's useful/noisy draw: the simulator keys it on (episode id, search index). A call
  without `episode_id(s)` gets a unique id from the server (a per-server random salt and a
  counter), so the same query sent again draws again; a client's episode id keeps its draw
  reproducible. Caches (`CachedSearch`) key on the drawn mode, not the id, so an identical
  (query, mode) pair is still served from the cache.
- `POST /set_step` `{"step": n}`: sets the backend's training step (the simulator's curriculum).
- `GET /health`: liveness plus counters (requests, queries, backend calls, batches, rejections);
  with an API key set, the backend's name, identity (which may hold URLs) and stats only for a
  request that sends the key.

Concurrent requests are micro-batched (`zerosearch_env.batching`): a batching task gathers the
queries of everything that arrives within `batch_window_ms` (up to `max_batch` queries) into ONE
backend call. Bad JSON, oversize bodies and wrong types get a 4xx with a message, more than
`max_concurrency` requests in flight get 503, a wrong or missing API key gets 401 (the key is
compared in constant time).

`fastapi`, `uvicorn` and `msgpack` are the `server` extra; they are imported when a server is built.
"""

# no `from __future__ import annotations`: FastAPI must see the real `Request` annotation
# of the handlers defined inside create_app.
import contextlib
import hmac
import itertools
import json
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from zerosearch_env.batching import MicroBatcher
from zerosearch_env.http_body import BodyTooLarge, read_limited_body
from zerosearch_env.search.base import Document, SearchBackend, SearchRequest

_MSGPACK = "application/msgpack"


def _require_server_deps():
    try:
        import fastapi  # noqa: F401
        import msgpack  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            f"the retrieval server needs fastapi, uvicorn and msgpack ({e.name} is missing): "
            "pip install 'zerosearch-env[server]'"
        ) from e


def document_contents(doc: Document) -> str:
    """Search-R1's `contents` string: the title in double quotes, a newline, then the text."""
    return f'"{doc.title}"\n{doc.text}'


def document_payload(doc: Document, return_scores: bool) -> dict:
    """One result item in the Search-R1 schema."""
    body = {"id": doc.id, "contents": document_contents(doc), "title": doc.title, "text": doc.text}
    if not return_scores:
        return body
    return {"document": body, "score": doc.score}


class RequestError(Exception):
    """A client error: becomes an HTTP 4xx with `message`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class ParsedRetrieve:
    """A validated `/retrieve` body."""

    requests: list[SearchRequest]
    return_scores: bool
    single: bool  # the client sent one `query` string, not a `queries` list
    msgpack: bool  # the body was msgpack: answer in msgpack
    step: int | None = None


@dataclass(slots=True)
class ServerLimits:
    """Bounds on what one request may ask for."""

    max_body_bytes: int = 1 << 20
    max_queries: int = 1024
    max_query_chars: int = 4096
    max_topk: int = 50
    default_topk: int = 3


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def decode_body(raw: bytes, content_type: str) -> tuple[dict, bool]:
    """Decode a request body as JSON or msgpack; returns (payload, was_msgpack).

    JSON when the Content-Type says JSON; msgpack when it says msgpack; otherwise (GEM sends no
    Content-Type) msgpack is tried first, then JSON.
    """
    import msgpack

    ctype = (content_type or "").split(";")[0].strip().lower()
    if not raw:
        raise RequestError(400, "empty request body: send a JSON object such as {\"queries\": [\"...\"], \"topk\": 3}")

    def as_json() -> dict:
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RequestError(400, f"the body is not valid JSON: {e}") from None

    def as_msgpack() -> dict:
        try:
            return msgpack.unpackb(raw, raw=False, strict_map_key=True)
        except Exception as e:  # msgpack raises several unrelated types
            raise RequestError(400, f"the body is not valid msgpack: {e}") from None

    if ctype.endswith("json"):
        payload, packed = as_json(), False
    elif "msgpack" in ctype:
        payload, packed = as_msgpack(), True
    else:
        try:
            payload, packed = as_msgpack(), True
            if not isinstance(payload, dict):  # e.g. a JSON text is a valid msgpack integer
                raise RequestError(400, "not a map")
        except RequestError:
            try:
                payload, packed = as_json(), False
            except RequestError:
                raise RequestError(400, "the body is neither JSON nor msgpack") from None
    if not isinstance(payload, dict):
        raise RequestError(422, f"the body must be an object with 'queries' or 'query', got {type(payload).__name__}")
    return payload, packed


def parse_retrieve(payload: dict, packed: bool, limits: ServerLimits) -> ParsedRetrieve:
    """Validate a `/retrieve` payload (Search-R1, SkyRL-gym or GEM keys) into search requests."""
    if "queries" in payload:
        queries, single = payload["queries"], False
        if not isinstance(queries, list):
            raise RequestError(422, f"'queries' must be a list of strings, got {type(queries).__name__}")
    elif "query" in payload:
        query, single = payload["query"], True
        if not isinstance(query, str):
            raise RequestError(422, f"'query' must be a string, got {type(query).__name__}")
        queries = [query]
    else:
        raise RequestError(422, "the body needs 'queries' (a list of strings) or 'query' (a string)")
    if not queries:
        raise RequestError(422, "'queries' is empty")
    if len(queries) > limits.max_queries:
        raise RequestError(413, f"{len(queries)} queries in one request; the limit is {limits.max_queries}")
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise RequestError(422, f"queries[{i}] must be a string, got {type(q).__name__}")
        if len(q) > limits.max_query_chars:
            raise RequestError(413, f"queries[{i}] has {len(q)} characters; the limit is {limits.max_query_chars}")

    topk = payload.get("topk", None)
    if topk is None:
        topk = limits.default_topk
    if not _is_int(topk):
        raise RequestError(422, f"'topk' must be an integer, got {type(topk).__name__}")
    if not 1 <= topk <= limits.max_topk:
        raise RequestError(422, f"'topk' must be between 1 and {limits.max_topk}, got {topk}")
    return_scores = payload.get("return_scores", False)
    if not isinstance(return_scores, bool):
        raise RequestError(422, f"'return_scores' must be a boolean, got {type(return_scores).__name__}")
    step = payload.get("step")
    if step is not None and (not _is_int(step) or step < 0):
        raise RequestError(422, "'step' must be a non-negative integer")

    n = len(queries)
    questions = _strings_per_query(payload, "questions", "question", n) or [None] * n
    answers = _answer_lists(payload, n) or [[]] * n
    titles = _lists_per_query(payload, "supporting_titles", n, "title", '[["Hop 1", "Answer article"], []]')
    titles = titles or [[]] * n
    episodes = _strings_per_query(payload, "episode_ids", "episode_id", n) or [""] * n
    first_index = payload.get("search_index", 0)
    if not _is_int(first_index) or first_index < 0:
        raise RequestError(422, "'search_index' must be a non-negative integer")
    if "search_index" in payload and not any(episodes):
        raise RequestError(422, "'search_index' needs 'episode_id' (or 'episode_ids'): it numbers an episode's searches")
    requests = [SearchRequest(query=q, top_k=topk, question=questions[i], answers=tuple(answers[i]),
                              supporting_titles=tuple(titles[i]), episode_id=episodes[i],
                              search_index=first_index + i, step=step)
                for i, q in enumerate(queries)]
    return ParsedRetrieve(requests, return_scores, single, packed, step)


def with_call_id(requests: list[SearchRequest], call_id: str) -> list[SearchRequest]:
    """The requests, those without a client episode id given `call_id` (unique per call): the
    simulator's useful/noisy draw keys on (episode id, search index), so each call draws anew
    instead of one draw per query text."""
    return [r if r.episode_id else replace(r, episode_id=call_id) for r in requests]


def _strings_per_query(payload: dict, plural: str, singular: str, n: int) -> list[str] | None:
    """The optional `plural` (one string per query) or `singular` (one string for all queries)."""
    if plural in payload:
        values = payload[plural]
        if not isinstance(values, list) or len(values) != n or not all(isinstance(v, str) for v in values):
            raise RequestError(422, f"'{plural}' must be a list of {n} strings, one per query")
        return values
    if singular in payload:
        if not isinstance(payload[singular], str):
            raise RequestError(422, f"'{singular}' must be a string")
        return [payload[singular]] * n
    return None


def _answer_lists(payload: dict, n: int) -> list[list[str]] | None:
    """The optional gold answers: one list of alias strings per query, under `golden_answers` or
    `answers` (shape as `_lists_per_query`)."""
    keys = [k for k in ("golden_answers", "answers") if k in payload]
    if not keys:
        return None
    if len(keys) > 1:
        raise RequestError(422, "send the gold answers as 'golden_answers' or 'answers', not both")
    return _lists_per_query(payload, keys[0], n, "answer", '[["a1", "alias of a1"], ["a2"]]')


def _lists_per_query(payload: dict, key: str, n: int, item: str, example: str) -> list[list[str]] | None:
    """The optional `payload[key]`: one list of `item` strings per query (`example` for two queries).

    A flat list of strings is one query's list, so it is accepted only when there is one query:
    for several it could mean one string per query or one list for all, and is refused.
    """
    if key not in payload:
        return None
    values = payload[key]
    shape = f"'{key}' must hold one list of {item} strings per query ({n}), e.g. {example} for two queries"
    if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
        if n == 1:
            return [values]
        raise RequestError(422, f"{shape}; a flat list of strings is one query's list and is accepted "
                                f"only with a single query")
    if not isinstance(values, list) or len(values) != n:
        raise RequestError(422, shape)
    for i, strings in enumerate(values):
        if not isinstance(strings, list) or not all(isinstance(a, str) for a in strings):
            raise RequestError(422, f"{shape}; entry {i} is not a list of strings")
    return values


@dataclass
class ServerStats:
    """Counters reported by `/health` (and read by tests and the load benchmark)."""

    requests: int = 0
    queries: int = 0
    backend_calls: int = 0
    batched_queries: int = 0
    rejected_busy: int = 0
    client_errors: int = 0
    backend_errors: int = 0
    in_flight: int = 0
    max_batch_seen: int = 0
    started: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in (
            "requests", "queries", "backend_calls", "batched_queries", "rejected_busy",
            "client_errors", "backend_errors", "in_flight", "max_batch_seen")}
        d["uptime_s"] = round(time.time() - self.started, 3)
        return d


def search_batches(backend: SearchBackend, stats: ServerStats):
    """The micro-batch handler: every request's queries of a batch in ONE `backend.asearch` call,
    each request given its slice, cut to its `top_k`."""

    async def run(batch: list[list[SearchRequest]]) -> list[list[list[Document]]]:
        flat = [r for reqs in batch for r in reqs]
        stats.backend_calls += 1
        stats.batched_queries += len(flat)
        stats.max_batch_seen = max(stats.max_batch_seen, len(flat))
        try:
            results = await backend.asearch(flat)
            if len(results) != len(flat):
                raise RuntimeError(f"backend returned {len(results)} result lists for {len(flat)} queries")
        except Exception:
            stats.backend_errors += 1
            raise
        out, i = [], 0
        for reqs in batch:
            out.append([list(docs)[: r.top_k] for r, docs in zip(reqs, results[i: i + len(reqs)])])
            i += len(reqs)
        return out

    return run


def create_app(backend: SearchBackend, *, api_key: str | None = None, batch_window_ms: float = 5.0,
               max_batch: int = 64, max_concurrency: int = 256, limits: ServerLimits | None = None):
    """A FastAPI app serving `backend` behind the Search-R1 `/retrieve` schema (see module doc).

    `app.state.stats` holds the counters, `app.state.backend` the backend.
    """
    _require_server_deps()
    import msgpack
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    if max_concurrency < 1:
        raise ValueError("max_concurrency must be >= 1")
    limits = limits or ServerLimits()
    stats = ServerStats()
    batcher = MicroBatcher(search_batches(backend, stats), window_s=batch_window_ms / 1000.0, max_batch=max_batch,
                           size=len)
    # call ids: a random salt per server, so a restarted server does not replay its draws
    call_salt, call_numbers = secrets.token_hex(8), itertools.count()

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        await batcher.aclose()

    app = FastAPI(title="zerosearch retrieval server", version="1", docs_url=None, redoc_url=None,
                  lifespan=lifespan)
    app.state.stats = stats
    app.state.backend = backend
    app.state.batcher = batcher

    def error(status: int, message: str, **headers: str) -> JSONResponse:
        if status < 500 and status not in (401, 503):
            stats.client_errors += 1
        return JSONResponse({"detail": message}, status_code=status, headers=headers or None)

    def authorised(request: Request) -> bool:
        if api_key is None:
            return True
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        return hmac.compare_digest(given.encode("utf-8"), api_key.encode("utf-8"))

    async def read_body(request: Request) -> bytes:
        try:
            return await read_limited_body(request, limits.max_body_bytes)
        except BodyTooLarge as e:
            raise RequestError(413, str(e)) from None

    @app.get("/health")
    async def health(request: Request) -> dict:
        if not authorised(request):  # the backend's identity and stats may name URLs
            return {"status": "ok", "stats": stats.to_dict()}
        return {"status": "ok", "backend": backend.name, "identity": backend.identity(),
                "stats": stats.to_dict(), "backend_stats": _safe_stats(backend)}

    @app.post("/set_step")
    async def set_step(request: Request):
        if not authorised(request):
            return error(401, "missing or wrong API key (send 'Authorization: Bearer KEY' or 'X-API-Key')")
        try:
            payload, _ = decode_body(await read_body(request), request.headers.get("content-type", ""))
            step = payload.get("step")
            if not _is_int(step) or step < 0:
                raise RequestError(422, "'step' must be a non-negative integer")
        except RequestError as e:
            return error(e.status, e.message)
        backend.set_training_step(step)
        return {"step": step, "backend_stats": _safe_stats(backend)}

    @app.post("/retrieve")
    async def retrieve(request: Request):
        if not authorised(request):
            return error(401, "missing or wrong API key (send 'Authorization: Bearer KEY' or 'X-API-Key')")
        if stats.in_flight >= max_concurrency:
            stats.rejected_busy += 1
            return error(503, f"server busy: {max_concurrency} requests already in flight", **{"Retry-After": "1"})
        stats.in_flight += 1
        try:
            try:
                raw = await read_body(request)
                payload, packed = decode_body(raw, request.headers.get("content-type", ""))
                parsed = parse_retrieve(payload, packed, limits)
            except RequestError as e:
                return error(e.status, e.message)
            stats.requests += 1
            stats.queries += len(parsed.requests)
            if parsed.step is not None:
                backend.set_training_step(parsed.step)
            try:
                results = await batcher.submit(with_call_id(parsed.requests, f"call:{call_salt}:{next(call_numbers)}"))
            except Exception as e:
                return error(500, f"backend {backend.name!r} failed: {type(e).__name__}: {e}")
            lists = [[document_payload(d, parsed.return_scores) for d in docs] for docs in results]
            if parsed.msgpack:
                # GEM reads a flat `result` list for its single query
                body = {"result": lists[0] if parsed.single else lists}
                return Response(msgpack.packb(body, use_bin_type=True), media_type=_MSGPACK)
            return JSONResponse({"result": lists})
        finally:
            stats.in_flight -= 1

    return app


def _safe_stats(backend: SearchBackend) -> dict:
    try:
        s = backend.stats()
        json.dumps(s)
        return s
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


class BackgroundServer:
    """Runs an ASGI app with uvicorn in a daemon thread on 127.0.0.1 (tests, benchmarks, compare).

    Use as a context manager; `url` is the base URL once started.
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(app, host=host, port=self.port, log_level=log_level, access_log=False,
                                lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="zerosearch-server")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
