"""OpenAIEngine against real HTTP servers on loopback (FastAPI + uvicorn subprocesses serving a tiny
random Llama through TransformersEngine), healthy and misbehaving: killed mid-batch, HTTP 500s,
stalls past the timeout, malformed JSON. Every call must end within its time budget with one text
per request, in order (checked through the echoed request id), or with a clear EngineError."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from zerosearch_env.engines import SamplingParams, TransformersEngine
from zerosearch_env.engines.openai_engine import EngineError, OpenAIEngine, normalize_base_url
from zerosearch_env.engines.vllm_server import free_port

SERVER = Path(__file__).with_name("openai_fault_server.py")
RID = re.compile(r"^<rid=([0-9a-f]+)-(\d+)>")


class Server:
    """One fault server subprocess."""

    def __init__(self, model_dir: Path):
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, str(SERVER), "--model", str(model_dir), "--port", str(self.port)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def wait(self, timeout_s: float = 120.0) -> "Server":
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"test server died: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("test server did not start")

    def control(self, mode: str, count: int = -1, delay_s: float = 0.0) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/control", json={"mode": mode, "count": count, "delay_s": delay_s},
                   timeout=5).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5).json()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def servers(tiny_model_dir):
    """Two servers, started together: B is killed by the failover test, A by the last test."""
    started = [Server(tiny_model_dir) for _ in range(2)]
    try:
        yield {name: s.wait() for name, s in zip("AB", started)}
    finally:
        for s in started:
            s.kill()
            s.proc.stderr.close()


@pytest.fixture(autouse=True)
def _reset(servers):
    for s in servers.values():
        if s.proc.poll() is None:
            s.control("ok", 0)


def convs(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"question {i}: where is the tower {i}?"}] for i in range(n)]


def check_ids(texts: list[str], n: int) -> list[str]:
    """Every result carries the request id of its own position, once; returns the texts without the tag."""
    assert len(texts) == n
    calls, bodies = set(), []
    for i, text in enumerate(texts):
        m = RID.match(text)
        assert m, f"result {i} has no request id: {text[:60]!r}"
        calls.add(m.group(1))
        assert int(m.group(2)) == i, f"result {i} answers request {m.group(2)}"
        bodies.append(text[m.end():])
    assert len(calls) == 1
    return bodies


P = SamplingParams(max_new_tokens=6, temperature=1.0, top_p=0.9, seed=7)


def test_base_url_normalisation():
    assert normalize_base_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert normalize_base_url("http://h:1/v1/") == "http://h:1/v1"
    assert normalize_base_url("https://h/openai/v1") == "https://h/openai/v1"
    with pytest.raises(ValueError, match="base URL"):
        normalize_base_url("localhost:8000")
    with pytest.raises(ValueError, match="at least one"):
        OpenAIEngine([])


def test_healthy_two_urls_order_and_same_texts_as_local(servers, tiny_model_dir):
    eng = OpenAIEngine([servers["A"].url, servers["B"].url], "tiny", max_concurrency=8, timeout_s=30)
    out = eng.generate(convs(12), P)
    bodies = check_ids(out, 12)
    # the server samples prompt i with seed 7 + i, exactly as the local engine does
    local = TransformersEngine(tiny_model_dir, dtype="float32").generate(convs(12), P)
    assert bodies == local
    served = {u["url"]: u["served"] for u in eng.url_stats()}
    assert all(v > 0 for v in served.values()) and sum(served.values()) == 12  # both URLs used


def test_agenerate_and_generate_inside_running_loop(servers):
    eng = OpenAIEngine(servers["A"].url, "tiny")

    async def main():
        a = await eng.agenerate(convs(3), P)
        b = eng.generate(convs(3), P)  # called from inside a running loop
        return a, b

    a, b = asyncio.run(main())
    assert check_ids(a, 3) == check_ids(b, 3)


def test_500s_then_ok_are_retried(servers):
    servers["A"].control("error500", count=3)
    eng = OpenAIEngine(servers["A"].url, "tiny", max_retries=3, backoff_base_s=0.05, timeout_s=30)
    check_ids(eng.generate(convs(2), P), 2)
    assert eng.stats["retries"] >= 3 and servers["A"].stats()["faults"] == 3


def test_persistent_500s_clear_error_within_budget(servers):
    servers["A"].control("error500", count=-1)
    eng = OpenAIEngine(servers["A"].url, "tiny", max_retries=2, backoff_base_s=0.05, timeout_s=5)
    t0 = time.monotonic()
    with pytest.raises(EngineError) as err:
        eng.generate(convs(3), P)
    assert time.monotonic() - t0 < eng.total_timeout_s + 2
    msg = str(err.value)
    assert "HTTP 500" in msg and servers["A"].url in msg and "3 attempt" in msg


def test_malformed_json_retried_then_clear_error(servers):
    servers["A"].control("malformed", count=2)
    eng = OpenAIEngine(servers["A"].url, "tiny", max_retries=2, backoff_base_s=0.05)
    check_ids(eng.generate(convs(1), P), 1)
    servers["A"].control("malformed", count=-1)
    with pytest.raises(EngineError, match="malformed JSON"):
        OpenAIEngine(servers["A"].url, "tiny", max_retries=1, backoff_base_s=0.05).generate(convs(2), P)


def test_stall_past_timeout(servers):
    servers["A"].control("stall", count=-1, delay_s=20)
    # one URL: a clear timeout error within the total budget
    eng = OpenAIEngine(servers["A"].url, "tiny", timeout_s=0.6, max_retries=1, backoff_base_s=0.05)
    t0 = time.monotonic()
    with pytest.raises(EngineError, match="timed out"):
        eng.generate(convs(2), P)
    elapsed = time.monotonic() - t0
    assert elapsed < eng.total_timeout_s + 1.5, elapsed
    # two URLs: the stalled attempts fail over to the healthy server
    healthy = servers["B"]
    eng2 = OpenAIEngine([servers["A"].url, healthy.url], "tiny", timeout_s=0.6, max_retries=2, backoff_base_s=0.05)
    t0 = time.monotonic()
    check_ids(eng2.generate(convs(4), P), 4)
    assert time.monotonic() - t0 < eng2.total_timeout_s + 1.5


def test_total_budget_caps_a_call(servers):
    servers["A"].control("stall", count=-1, delay_s=20)
    eng = OpenAIEngine(servers["A"].url, "tiny", timeout_s=5, max_retries=10, total_timeout_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(EngineError):
        eng.generate(convs(1), P)
    assert time.monotonic() - t0 < 2.5


def _run_in_thread(fn):
    box = {}
    t = threading.Thread(target=lambda: box.update(out=_capture(fn)))
    t.start()
    return t, box


def _capture(fn):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - returned to the test
        return exc


def _wait_received(server: Server, before: int, n: int, timeout_s: float = 20) -> None:
    """Wait until `n` more chat requests than `before` reached the (slow) server: they are in flight."""
    deadline = time.monotonic() + timeout_s
    while server.stats()["received"] < before + n:
        assert time.monotonic() < deadline, "requests never reached the server"
        time.sleep(0.05)


def test_killed_mid_batch_fails_over(servers):
    victim, healthy = servers["B"], servers["A"]
    victim.control("slow", count=-1, delay_s=30)
    eng = OpenAIEngine([victim.url, healthy.url], "tiny", max_concurrency=16, timeout_s=40, max_retries=2,
                       backoff_base_s=0.05)
    before = victim.stats()["received"]
    t, box = _run_in_thread(lambda: eng.generate(convs(16), P))
    _wait_received(victim, before, 4)
    t0 = time.monotonic()
    victim.kill()
    t.join(timeout=60)
    assert not t.is_alive()
    out = box["out"]
    assert not isinstance(out, Exception), out
    check_ids(out, 16)  # nothing lost, nothing duplicated, in order
    assert time.monotonic() - t0 < 30  # the failover did not wait for the stalled 30 s replies
    assert eng.stats["retries"] >= 4


def test_bad_request_is_not_retried(servers):
    eng = OpenAIEngine(servers["A"].url, "not-the-model", max_retries=3)
    with pytest.raises(EngineError, match="HTTP 404"):
        eng.generate(convs(1), P)
    assert eng.stats["retries"] == 0
    with pytest.raises(ValueError, match="conversation 0"):
        eng.generate([[]], P)


def test_stop_strings_kept_like_local_engine(servers, tiny_model_dir):
    local = TransformersEngine(tiny_model_dir, dtype="float32")
    params = SamplingParams(max_new_tokens=10, temperature=1.0, seed=3)
    full = local.generate(convs(1), params)[0]
    ids = local.tokenizer(full, add_special_tokens=False)["input_ids"]
    piece = local.tokenizer.decode(ids[3:5])
    stopped = SamplingParams(max_new_tokens=10, temperature=1.0, seed=3, stop=(piece,))
    expected = full[: full.index(piece) + len(piece)]
    remote = check_ids(OpenAIEngine(servers["A"].url, "tiny").generate(convs(1), stopped), 1)[0]
    assert remote == expected
    # a server that drops the stop string: the engine restores it from stop_reason
    plain = check_ids(OpenAIEngine(servers["A"].url, "tiny", include_stop_str=False).generate(convs(1), stopped), 1)[0]
    assert plain == expected


def test_killed_mid_batch_single_url_clear_error(servers):
    victim = servers["A"]  # runs last: A is not needed afterwards
    victim.control("slow", count=-1, delay_s=30)
    eng = OpenAIEngine(victim.url, "tiny", timeout_s=40, max_retries=2, backoff_base_s=0.05)
    before = victim.stats()["received"]
    t, box = _run_in_thread(lambda: eng.generate(convs(6), P))
    _wait_received(victim, before, 3)
    t0 = time.monotonic()
    victim.kill()
    t.join(timeout=30)
    assert not t.is_alive()
    err = box["out"]
    assert isinstance(err, EngineError), err
    assert victim.url in str(err) and "connection" in str(err).lower()
    assert time.monotonic() - t0 < 10
