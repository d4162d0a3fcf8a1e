"""The one retry policy of the HTTP clients (`zerosearch_env.retry`), against a real server on loopback."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from zerosearch_env.retry import (Backoff, RetriesExhausted, acall_with_retries, call_with_retries, check_status,
                                  http_errors_are_transient)
from zerosearch_env.server import free_port

from tests.http_helpers import JSONHandler, loopback_server


class Scripted(JSONHandler):
    """Answers the n-th request with `script[n]` (an HTTP status, or "stall": 1 s late), then 200."""

    script: list = []
    times: list[float] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        Scripted.times.append(time.monotonic())
        action = Scripted.script.pop(0) if Scripted.script else 200
        if action == "stall":
            time.sleep(1.0)
            action = 200
        self.send_json(action, {"ok": True} if action == 200 else {"error": "scripted"})


@pytest.fixture(scope="module")
def url():
    with loopback_server(Scripted) as base:
        yield f"{base}/api"


def play(*script) -> None:
    Scripted.script = list(script)
    Scripted.times = []


def fetcher(client: httpx.Client, url: str):
    def attempt() -> httpx.Response:
        with http_errors_are_transient(url):
            return check_status(client.get(url), url)
    return attempt


def test_5xx_and_429_are_retried_with_growing_waits(url):
    play(503, 429, 500, 200)
    retried = []
    with httpx.Client(timeout=5) as client:
        resp = call_with_retries(fetcher(client, url), Backoff(max_retries=3, base_s=0.1), retried.append)
    assert resp.status_code == 200 and len(Scripted.times) == 4
    assert [str(e).split(": ")[1] for e in retried] == ["HTTP 503", "HTTP 429", "HTTP 500"]
    gaps = [b - a for a, b in zip(Scripted.times, Scripted.times[1:])]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4, gaps  # base * 2**k


def test_gives_up_with_a_clear_error(url):
    play(*[503] * 10)
    with httpx.Client(timeout=5) as client, pytest.raises(RetriesExhausted) as err:
        call_with_retries(fetcher(client, url), Backoff(max_retries=2, base_s=0.01))
    assert len(Scripted.times) == 3 and len(err.value.errors) == 3
    assert str(err.value).startswith(f"failed after 3 attempts; last error: {url}: HTTP 503")


def test_a_4xx_is_not_retried(url):
    play(404, 200)
    with httpx.Client(timeout=5) as client:
        resp = call_with_retries(fetcher(client, url), Backoff(max_retries=3, base_s=0.01))
    assert resp.status_code == 404 and len(Scripted.times) == 1


def test_timeouts_and_refused_connections_are_retried(url):
    play("stall", 200)
    with httpx.Client(timeout=0.3) as client:
        errors = []
        assert call_with_retries(fetcher(client, url), Backoff(max_retries=1, base_s=0.01), errors.append).status_code == 200
        assert "timed out" in str(errors[0])
        dead = f"http://127.0.0.1:{free_port()}/api"
        with pytest.raises(RetriesExhausted, match="failed after 2 attempts; last error: .*connection error"):
            call_with_retries(fetcher(client, dead), Backoff(max_retries=1, base_s=0.01))


def test_total_budget_stops_before_a_wait_would_pass_it(url):
    play(*[503] * 20)
    t0 = time.monotonic()
    with httpx.Client(timeout=5) as client, pytest.raises(RetriesExhausted):
        call_with_retries(fetcher(client, url), Backoff(max_retries=10, base_s=0.2, total_s=0.5))
    assert time.monotonic() - t0 < 0.5 and len(Scripted.times) == 2  # waits 0.2, then 0.4 would pass 0.5


def test_async_twin(url):
    play(500, 200)

    async def main() -> httpx.Response:
        async with httpx.AsyncClient(timeout=5) as client:
            async def attempt() -> httpx.Response:
                with http_errors_are_transient(url):
                    return check_status(await client.get(url), url)
            return await acall_with_retries(attempt, Backoff(max_retries=2, base_s=0.05))

    assert asyncio.run(main()).status_code == 200 and len(Scripted.times) == 2


def test_backoff_waits_and_validation():
    assert [Backoff(base_s=0.5, max_s=3).wait_s(k) for k in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = [Backoff(base_s=1.0, jitter=0.5).wait_s(0) for _ in range(200)]
    assert 0.5 <= min(jittered) and max(jittered) < 1.5 and len(set(jittered)) > 100
    with pytest.raises(ValueError):
        Backoff(max_retries=-1)
    with pytest.raises(ValueError):
        Backoff(total_s=0)
