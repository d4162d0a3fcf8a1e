"""`zerosearch serve` as a real subprocess on loopback, driven by real HTTP clients.

Clients: plain httpx in the Search-R1 schema, SkyRL-gym's own search tool and search environment
(installed from PyPI), and a GEM-format client (msgpack body without a Content-Type; GEM itself
needs reasoning-gym and more to import, so the client is written to its request format).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgpack
import pytest

from zerosearch_env.server import BackgroundServer, ServerLimits, create_app, free_port
from tests.serve_backend import KeywordSearch

ROOT = Path(__file__).resolve().parents[1]


def _start_serve(*extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # one torch thread: on a shared, loaded 2-core machine intra-op thread spinning slows small
    # models tenfold (the served simulator below); the server itself is single-threaded asyncio
    env = {"OMP_NUM_THREADS": "1", **os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("ZEROSEARCH_API_KEY", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", "serve", "--port", str(port), *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited early:\n{proc.stdout.read()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("serve did not come up")


@pytest.fixture(scope="module")
def server():
    proc, url = _start_serve("--backend", "tests.serve_backend:KeywordSearch", "--batch-window-ms", "50", "--max-batch", "64", "-o", "delay_s=0.1",
                             "--max-body-bytes", "20000", "--max-queries", "32")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_search_r1_schema(server):
    body = {"queries": ["capital of Ostrand", "who founded Kallen Labs"], "topk": 2, "return_scores": True}
    r = httpx.post(server + "/retrieve", json=body, timeout=60)
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert len(result) == 2 and all(len(lst) == 2 for lst in result)
    first = result[0][0]
    assert set(first) == {"document", "score"} and isinstance(first["score"], float)
    assert first["document"]["contents"].startswith('"Velmora"\n') or first["document"]["contents"].startswith('"Ostrand"\n')
    assert {d["document"]["id"] for d in result[1]} & {"d2", "d3"}
    # without scores: bare documents, as Search-R1's own server answers
    r = httpx.post(server + "/retrieve", json={**body, "return_scores": False}, timeout=60)
    bare = r.json()["result"][0][0]
    assert "document" not in bare and bare["contents"].count("\n") >= 1 and "id" in bare


def test_skyrl_gym_tool_and_env(server):
    from skyrl_gym.envs.search.env import SearchEnv, SearchEnvConfig
    from skyrl_gym.tools import SearchToolGroup

    tool = SearchToolGroup(search_url=server + "/retrieve", topk=2, timeout=60, log_requests=False)
    out = json.loads(tool.search("capital of Ostrand"))["result"]
    assert out.startswith("Doc 1: ") and "Velmora" in out and "Doc 2: " in out

    env = SearchEnv(SearchEnvConfig(search_url=server + "/retrieve", topk=3, timeout=60),
                    extras={"reward_spec": {"ground_truth": {"target": ["Brisk Harbour"]}}, "max_turns": 3})
    env.init([{"role": "user", "content": "Where is Kallen Labs headquartered?"}])
    step = env.step("<think>look it up</think><search>Kallen Labs headquarters</search>")
    assert not step["done"]
    obs = step["observations"][0]["content"]
    assert "<information>" in obs and "Brisk Harbour" in obs
    final = env.step("<answer>Brisk Harbour</answer>")
    assert final["done"] and final["reward"] == 1.0


def test_gem_msgpack_client(server):
    # GEM's SearchTool: requests.post(url, data=msgpack(payload)) with no Content-Type; reads
    # msgpack(response)["result"] as ONE flat list of {"document": {"contents"}} items.
    import requests

    payload = {"query": "sister of Idris Kallen", "topk": 3, "return_scores": True}
    resp = requests.post(server + "/retrieve", data=msgpack.packb(payload), timeout=60)
    assert resp.status_code == 200 and "msgpack" in resp.headers["content-type"]
    result = msgpack.unpackb(resp.content)["result"]
    assert len(result) == 3 and all("document" in item for item in result)
    titles = [item["document"]["contents"].split("\n")[0] for item in result]
    assert '"Tamsin Orle"' in titles
    # a msgpack `queries` list still gets one list per query
    resp = requests.post(server + "/retrieve", data=msgpack.packb({"queries": ["Velmora", "Ostrand"], "topk": 1}), timeout=60)
    assert [len(x) for x in msgpack.unpackb(resp.content)["result"]] == [1, 1]


def test_concurrent_single_query_clients_are_micro_batched(server):
    n = 24

    async def burst():
        async with httpx.AsyncClient(timeout=120) as client:
            before = (await client.get(server + "/health")).json()["stats"]
            rs = await asyncio.gather(*[
                client.post(server + "/retrieve", json={"query": f"Velmora question {i}", "topk": 1})
                for i in range(n)])
            after = (await client.get(server + "/health")).json()
            return before, rs, after

    before, responses, after = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    assert all(len(r.json()["result"]) == 1 and len(r.json()["result"][0]) == 1 for r in responses)
    calls = after["stats"]["backend_calls"] - before["backend_calls"]
    assert after["stats"]["requests"] - before["requests"] == n
    assert 1 <= calls <= n // 2, f"{n} concurrent requests took {calls} backend calls"
    assert after["backend_stats"]["calls"] == after["stats"]["backend_calls"]


def test_set_step_reaches_backend(server):
    r = httpx.post(server + "/set_step", json={"step": 17}, timeout=60)
    assert r.status_code == 200 and r.json()["step"] == 17
    assert httpx.get(server + "/health", timeout=60).json()["backend_stats"]["step"] == 17
    assert httpx.post(server + "/set_step", json={"step": -1}, timeout=60).status_code == 422


@pytest.mark.parametrize("body,headers,status,needle", [
    (b"{not json", {"content-type": "application/json"}, 400, "not valid JSON"),
    (b"", {"content-type": "application/json"}, 400, "empty"),
    (b"\xc1\xc1garbage", {}, 400, "neither JSON nor msgpack"),
    (json.dumps([1, 2]).encode(), {"content-type": "application/json"}, 422, "object"),
    (json.dumps({"queries": "one string"}).encode(), {"content-type": "application/json"}, 422, "list of strings"),
    (json.dumps({"queries": ["ok", 3]}).encode(), {"content-type": "application/json"}, 422, "queries[1]"),
    (json.dumps({"query": ["x"]}).encode(), {"content-type": "application/json"}, 422, "'query' must be a string"),
    (json.dumps({"queries": []}).encode(), {"content-type": "application/json"}, 422, "empty"),
    (json.dumps({"queries": ["x"], "topk": "3"}).encode(), {"content-type": "application/json"}, 422, "topk"),
    (json.dumps({"queries": ["x"], "topk": 0}).encode(), {"content-type": "application/json"}, 422, "between"),
    (json.dumps({"queries": ["x"], "return_scores": "yes"}).encode(), {"content-type": "application/json"}, 422, "boolean"),
    (json.dumps({"topk": 3}).encode(), {"content-type": "application/json"}, 422, "'queries'"),
    (json.dumps({"queries": ["x"] * 33}).encode(), {"content-type": "application/json"}, 413, "limit"),
    (json.dumps({"queries": ["x" * 30000]}).encode(), {"content-type": "application/json"}, 413, "limit"),
])
def test_bad_requests_get_4xx_with_message(server, body, headers, status, needle):
    r = httpx.post(server + "/retrieve", content=body, headers=headers, timeout=60)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]
    # the server is still healthy afterwards
    assert httpx.get(server + "/health", timeout=60).status_code == 200


def test_api_key_and_busy_limit_in_process():
    backend = KeywordSearch(delay_s=0.3)
    app = create_app(backend, api_key="s3cret", batch_window_ms=1, max_batch=1, max_concurrency=2,
                     limits=ServerLimits())
    with BackgroundServer(app) as srv:
        url = srv.url + "/retrieve"
        assert httpx.post(url, json={"queries": ["Velmora"]}, timeout=60).status_code == 401
        assert httpx.post(url, json={"queries": ["Velmora"]}, headers={"x-api-key": "wrong"}, timeout=60).status_code == 401
        ok = httpx.post(url, json={"queries": ["Velmora"]}, headers={"authorization": "Bearer s3cret"}, timeout=60)
        assert ok.status_code == 200
        assert httpx.get(srv.url + "/health", timeout=60).status_code == 200  # health needs no key

        async def flood():
            async with httpx.AsyncClient(timeout=30, headers={"x-api-key": "s3cret"}) as client:
                return await asyncio.gather(*[client.post(url, json={"query": f"q{i}"}) for i in range(6)])

        codes = sorted(r.status_code for r in asyncio.run(flood()))
        assert codes.count(200) >= 2 and 503 in codes and set(codes) <= {200, 503}
        assert app.state.stats.rejected_busy == codes.count(503)


def test_backend_failure_is_a_500_with_message():
    class Broken(KeywordSearch):
        def search(self, requests):
            raise RuntimeError("index is corrupt")

    with BackgroundServer(create_app(Broken())) as srv:
        r = httpx.post(srv.url + "/retrieve", json={"queries": ["x"]}, timeout=60)
        assert r.status_code == 500 and "index is corrupt" in r.json()["detail"]
        assert httpx.post(srv.url + "/retrieve", json={"queries": ["y"]}, timeout=60).status_code == 500  # still serving


def test_serve_bm25_world_subprocess():
    """The real default: `zerosearch serve --backend bm25` over the built-in world."""
    from zerosearch_env.data.world import generate_world

    task = next(t for t in generate_world(0).split("test") if t.kind == "single")
    proc, url = _start_serve("--backend", "bm25", "--world-seed", "0")
    try:
        proc_args = httpx.get(url + "/health", timeout=60).json()
        assert proc_args["backend"] == "bm25"
        r = httpx.post(url + "/retrieve", json={"queries": [task.supporting_titles[0], task.question], "topk": 3,
                                                "return_scores": True}, timeout=30)
        assert r.status_code == 200, r.text
        first, second = r.json()["result"]
        assert first[0]["document"]["contents"].startswith(f'"{task.supporting_titles[0]}"\n')
        assert all(isinstance(item["score"], float) for item in first + second)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# world 0 (serve's default data set) has the country Yanquisene: "The capital of Yanquisene is Vrexmou."
WORLD_ENTITY, WORLD_FACT = "Yanquisene", "Vrexmou"


@pytest.fixture(scope="module")
def simulator_server(tiny_model_dir):
    """`zerosearch serve --backend simulator` with its defaults (the built-in world, knowledge
    'world') on the tiny random model, whose text fails the gate: useful results are the
    knowledge's fallback (the queried entity's facts), noisy ones never name the entity.
    p(noisy) = step / 10 through POST /set_step."""
    curriculum = json.dumps({"type": "linear", "p_start": 0.0, "p_end": 1.0, "total_steps": 10})
    proc, url = _start_serve("--backend", "simulator", "-o", f"model={tiny_model_dir}", "-o", f"curriculum={curriculum}",
                             "-o", "words_per_doc=8", "-o", "max_regenerations=0", "-o", "max_new_tokens=16",
                             "--batch-window-ms", "10")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def _set_step(url: str, step: int) -> None:
    r = httpx.post(url + "/set_step", json={"step": step}, timeout=120)
    assert r.status_code == 200 and r.json()["backend_stats"]["p_noisy"] == step / 10


def _names_world_entity(results: list) -> bool:
    return any(WORLD_ENTITY in item["document"]["contents"] for item in results)


def _useful(url: str, body: dict) -> bool:
    """Whether one call's (single) result list is useful: it names the queried world entity."""
    r = httpx.post(url + "/retrieve", json={"topk": 2, "return_scores": True, **body}, timeout=300)
    assert r.status_code == 200, r.text
    (results,) = r.json()["result"]
    return _names_world_entity(results)


def test_serve_simulator_grounds_queries_in_the_world(simulator_server):
    """With the default knowledge ('world') and no answers in the body, as skyrl-gym and GEM send:
    a query naming a world entity gets that entity's facts (p=0) and none at p=1; an unrelated
    query gets no world question's answer."""
    from zerosearch_env.data.world import generate_world

    url = simulator_server
    _set_step(url, 0)
    body = {"queries": [f"capital of {WORLD_ENTITY}", f"{WORLD_ENTITY.lower()} history"], "topk": 2,
            "return_scores": True}
    useful = httpx.post(url + "/retrieve", json=body, timeout=300).json()["result"]
    assert len(useful) == 2 and all(1 <= len(lst) <= 2 and _names_world_entity(lst) for lst in useful)
    assert all(any(WORLD_FACT in item["document"]["contents"] for item in lst) for lst in useful)

    world = generate_world(0)
    names = {e.name for e in world.entities}
    answers = {a for t in world.tasks for a in t.answers if a in names}
    assert len(answers) > 20
    unrelated = httpx.post(url + "/retrieve", json={"query": "a good recipe for bread with basil", "topk": 3},
                           timeout=300).json()["result"]
    texts = [item["contents"] for lst in unrelated for item in lst]
    assert not [a for a in answers for t in texts if a in t]

    _set_step(url, 10)
    noisy = httpx.post(url + "/retrieve", json=body, timeout=300).json()["result"]
    assert not any(_names_world_entity(lst) for lst in noisy)
    assert httpx.get(url + "/health", timeout=60).json()["backend_stats"]["training_step"] == 10


def test_serve_simulator_draws_useful_or_noisy_per_call(simulator_server):
    """The same query in separate calls without an episode id: never noisy at p=0, both useful and
    noisy at p=0.5 (each call its own draw, not one draw per query text)."""
    url = simulator_server
    query = {"query": f"capital of {WORLD_ENTITY}"}
    _set_step(url, 0)
    assert all(_useful(url, query) for _ in range(6))
    _set_step(url, 5)
    useful = [_useful(url, query) for _ in range(40)]
    assert 0.2 <= sum(useful) / len(useful) <= 0.8, useful


def test_serve_simulator_keeps_a_client_episode_draw(simulator_server):
    """A client-sent episode id (and search index) makes the draw reproducible: the same id gets
    the same mode in every call; different ids still draw both modes."""
    url = simulator_server
    _set_step(url, 5)
    modes = {}
    for i in range(16):
        body = {"query": f"capital of {WORLD_ENTITY}", "episode_id": f"trajectory-{i}", "search_index": 1}
        first, second = _useful(url, body), _useful(url, body)
        assert first == second, i
        modes[i] = first
    assert set(modes.values()) == {True, False}, modes


def test_serve_cli_rejects_bad_arguments(capsys):
    from agents.cli import main

    assert main(["serve", "--backend", "nope"]) == 2
    assert "unknown backend 'nope'" in capsys.readouterr().err
    assert main(["serve", "--backend", "tests.serve_backend:KeywordSearch", "--batch-window-ms", "-1"]) == 2
    assert "batch window" in capsys.readouterr().err
    assert main(["serve", "--backend", "tests.serve_backend:Missing"]) == 2
    assert main(["serve", "--backend", "tests.serve_backend:KeywordSearch", "-o", "novalue"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


class RecordingSearch(KeywordSearch):
    """KeywordSearch that keeps every SearchRequest it is asked, to see what reached the backend."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def search(self, requests):
        self.seen.extend(requests)
        return super().search(requests)


def test_golden_answers_are_per_query():
    backend = RecordingSearch()
    with BackgroundServer(create_app(backend, batch_window_ms=1)) as srv:
        url = srv.url + "/retrieve"
        body = {"queries": ["capital of Ostrand", "Kallen Labs"],
                "golden_answers": [["Velmora", "Velmora city"], ["Brisk Harbour"]]}
        assert httpx.post(url, json=body, timeout=60).status_code == 200
        assert [(r.query, r.answers) for r in backend.seen] == [
            ("capital of Ostrand", ("Velmora", "Velmora city")), ("Kallen Labs", ("Brisk Harbour",))]
        # a flat list for ONE query is that query's aliases (under either key)
        backend.seen.clear()
        for key in ("golden_answers", "answers"):
            r = httpx.post(url, json={"query": "capital of Ostrand", key: ["Velmora", "Velmora city"]}, timeout=60)
            assert r.status_code == 200, r.text
        assert [r.answers for r in backend.seen] == [("Velmora", "Velmora city")] * 2
        # a flat list for several queries is ambiguous (one alias list, or one answer each?): 422
        backend.seen.clear()
        for key in ("golden_answers", "answers"):
            r = httpx.post(url, json={"queries": ["q1", "q2"], key: ["a1", "a2"]}, timeout=60)
            assert r.status_code == 422, r.text
            detail = r.json()["detail"]
            assert key in detail and "one list of answer strings per query" in detail and '[["' in detail
        assert backend.seen == []
        for bad in ({"queries": ["q1", "q2"], "golden_answers": [["a1"]]},
                    {"queries": ["q1"], "golden_answers": [["a1", 3]]},
                    {"queries": ["q1"], "golden_answers": [["a"]], "answers": [["b"]]}):
            assert httpx.post(url, json=bad, timeout=60).status_code == 422, bad

def test_supporting_titles_are_per_query():
    backend = RecordingSearch()
    with BackgroundServer(create_app(backend, batch_window_ms=1)) as srv:
        url = srv.url + "/retrieve"
        body = {"queries": ["Kallen Labs founder", "Ostrand capital"],
                "supporting_titles": [["Kallen Labs", "Ostrand"], []]}
        assert httpx.post(url, json=body, timeout=60).status_code == 200
        assert [r.supporting_titles for r in backend.seen] == [("Kallen Labs", "Ostrand"), ()]
        backend.seen.clear()
        r = httpx.post(url, json={"query": "Kallen Labs", "supporting_titles": ["Kallen Labs", "Ostrand"]}, timeout=60)
        assert r.status_code == 200, r.text
        assert backend.seen[0].supporting_titles == ("Kallen Labs", "Ostrand")
        backend.seen.clear()
        for bad in ({"queries": ["q1", "q2"], "supporting_titles": ["A", "B"]},
                    {"queries": ["q1", "q2"], "supporting_titles": [["A"]]},
                    {"queries": ["q1"], "supporting_titles": [["A", 3]]},
                    {"queries": ["q1"], "supporting_titles": "A"}):
            r = httpx.post(url, json=bad, timeout=60)
            assert r.status_code == 422, bad
            assert "'supporting_titles' must hold one list of title strings per query" in r.json()["detail"], r.text
        assert backend.seen == []

def test_served_answer_hint_is_hop_aware_with_supporting_titles():
    """`knowledge=answer_hint` behind the server: with per-query `golden_answers` and
    `supporting_titles`, the answer is hinted only to the query naming the answer-bearing article."""
    from zerosearch_env.engines.base import LLMEngine
    from zerosearch_env.search.knowledge import AnswerHintKnowledge
    from zerosearch_env.search.simulator import SimulatedSearch

    class Recording(LLMEngine):
        name = "recording"

        def __init__(self):
            self.prompts: dict[str, str] = {}

        def generate(self, conversations, params=None, *, seeds=None):
            for c in conversations:
                self.prompts[c[-1]["content"].splitlines()[0]] = c[-1]["content"]
            return ["Doc 1 (Title: Notes) Some text." for _ in conversations]

    engine = Recording()
    backend = SimulatedSearch(engine, knowledge=AnswerHintKnowledge())
    with BackgroundServer(create_app(backend, batch_window_ms=1)) as srv:
        body = {"queries": ["Kallen Labs founder", "Brisk Harbour birthplace"],
                "question": "Where was the founder of Kallen Labs born?",
                "golden_answers": [["Velmora"], ["Velmora"]],
                "supporting_titles": [["Kallen Labs", "Brisk Harbour"], ["Kallen Labs", "Brisk Harbour"]]}
        assert httpx.post(srv.url + "/retrieve", json=body, timeout=60).status_code == 200
    first_hop, second_hop = (engine.prompts[f"Search query: {q}"] for q in body["queries"])
    assert "Velmora" not in first_hop and "Where was the founder" in first_hop
    assert "The correct answer is: Velmora" in second_hop


def test_each_call_without_an_episode_id_gets_its_own_id():
    """The server names every call without a client episode id uniquely (the simulator's per-call
    useful/noisy draw keys on it); a client's episode id and search index are kept."""
    backend = RecordingSearch()
    with BackgroundServer(create_app(backend, batch_window_ms=1)) as srv:
        url = srv.url + "/retrieve"
        for _ in range(2):
            assert httpx.post(url, json={"queries": ["Velmora", "Velmora"]}, timeout=60).status_code == 200
        ids = [(r.episode_id, r.search_index) for r in backend.seen]
        assert all(episode for episode, _ in ids) and len(set(ids)) == 4 and ids[0][0] == ids[1][0] != ids[2][0]
        backend.seen.clear()
        body = {"queries": ["Velmora", "Ostrand"], "episode_id": "traj-7", "search_index": 3}
        assert httpx.post(url, json=body, timeout=60).status_code == 200
        body = {"queries": ["Velmora", "Ostrand"], "episode_ids": ["a", "b"]}
        assert httpx.post(url, json=body, timeout=60).status_code == 200
        assert [(r.episode_id, r.search_index) for r in backend.seen] == [("traj-7", 3), ("traj-7", 4), ("a", 0), ("b", 1)]
        for bad, needle in (({"query": "q", "episode_id": 3}, "'episode_id' must be a string"),
                            ({"queries": ["q1", "q2"], "episode_ids": ["a"]}, "'episode_ids' must be a list of 2"),
                            ({"query": "q", "episode_id": "e", "search_index": -1}, "'search_index'"),
                            ({"query": "q", "search_index": 2}, "'search_index' needs 'episode_id'")):
            r = httpx.post(url, json=bad, timeout=60)
            assert r.status_code == 422 and needle in r.json()["detail"], (bad, r.text)


def test_cached_simulator_behind_the_server_draws_per_call_and_caches_per_mode(tmp_path):
    """Behind the server, a cached simulator at p=0.5 asked the same query 20 times draws both
    modes, yet writes each (query, mode) once: the per-call id is not part of the cache key."""
    from zerosearch_env.engines.base import LLMEngine
    from zerosearch_env.search.cache import CachedSearch
    from zerosearch_env.search.simulator import SimulatedSearch

    class Counting(LLMEngine):
        name = "counting"
        prompts = 0

        def generate(self, conversations, params=None, *, seeds=None):
            Counting.prompts += len(conversations)
            return ["Doc 1 (Title: Notes) Some text about Velmora." for _ in conversations]

    class Half:
        def probability(self, step: int) -> float:
            return 0.5

    backend = CachedSearch(SimulatedSearch(Counting(), curriculum=Half()), tmp_path / "cache.sqlite")
    with BackgroundServer(create_app(backend, batch_window_ms=1)) as srv:
        for _ in range(20):
            assert httpx.post(srv.url + "/retrieve", json={"query": "Velmora"}, timeout=60).status_code == 200
    stats = backend.stats()
    assert stats["useful"] == 1 and stats["noisy"] == 1 and Counting.prompts == 2
    assert stats["cache_misses"] == 2 and stats["cache_hits"] == 18


def test_api_key_is_compared_in_constant_time(monkeypatch):
    import hmac

    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    with BackgroundServer(create_app(KeywordSearch(), api_key="s3cret", batch_window_ms=1)) as srv:
        url = srv.url + "/retrieve"
        assert httpx.post(url, json={"query": "Velmora"}, headers={"x-api-key": "s3crex"}, timeout=60).status_code == 401
        assert httpx.post(url, json={"query": "Velmora"}, headers={"x-api-key": "s3cret"}, timeout=60).status_code == 200
    assert len(compared) == 2 and all(b"s3cret" in pair for pair in compared)


def test_health_hides_backend_details_without_the_key():
    from zerosearch_env.search.retriever import RetrieverClient

    backend = RetrieverClient("http://10.1.2.3:8123/private-index/retrieve")  # never called by /health
    with BackgroundServer(create_app(backend, api_key="s3cret")) as srv:
        anonymous = httpx.get(srv.url + "/health", timeout=60)
        wrong = httpx.get(srv.url + "/health", headers={"x-api-key": "nope"}, timeout=60)
        for r in (anonymous, wrong):
            assert r.status_code == 200 and r.json()["status"] == "ok"
            assert "10.1.2.3" not in r.text and "private-index" not in r.text and "retriever" not in r.text
        keyed = httpx.get(srv.url + "/health", headers={"authorization": "Bearer s3cret"}, timeout=60).json()
        assert keyed["identity"] == "retriever:http://10.1.2.3:8123/private-index/retrieve"
    backend.close()
    # without a key configured the server is open, /health included
    with BackgroundServer(create_app(KeywordSearch())) as srv:
        assert httpx.get(srv.url + "/health", timeout=60).json()["backend"] == "keyword"


def test_serve_api_key_sources(tmp_path, monkeypatch):
    from agents.cli import build_parser
    from agents.commands.serve import resolve_api_key

    parse = lambda *argv: build_parser().parse_args(["serve", *argv])  # noqa: E731
    monkeypatch.delenv("ZEROSEARCH_API_KEY", raising=False)
    assert resolve_api_key(parse()) is None
    monkeypatch.setenv("ZEROSEARCH_API_KEY", "from-env")
    assert resolve_api_key(parse()) == "from-env"
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    assert resolve_api_key(parse("--api-key-file", str(key_file))) == "from-file"  # the file wins over the env
    assert resolve_api_key(parse("--api-key", "from-flag")) == "from-flag"
    with pytest.raises(ValueError, match="not both"):
        resolve_api_key(parse("--api-key", "x", "--api-key-file", str(key_file)))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        resolve_api_key(parse("--api-key-file", str(tmp_path / "empty")))
    with pytest.raises(ValueError, match="cannot read"):
        resolve_api_key(parse("--api-key-file", str(tmp_path / "missing")))


def test_serve_reads_the_key_from_a_file_not_the_command_line(tmp_path):
    key_file = tmp_path / "serve.key"
    key_file.write_text("file-secret-42\n")
    proc, url = _start_serve("--backend", "tests.serve_backend:KeywordSearch", "--api-key-file", str(key_file))
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert "file-secret-42" not in cmdline and str(key_file) in cmdline
        assert httpx.post(url + "/retrieve", json={"query": "Velmora"}, timeout=60).status_code == 401
        r = httpx.post(url + "/retrieve", json={"query": "Velmora"}, headers={"x-api-key": "file-secret-42"}, timeout=60)
        assert r.status_code == 200, r.text
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_help_warns_about_the_key_on_the_command_line(capsys):
    from agents.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--api-key-file" in text and "ZEROSEARCH_API_KEY" in text and "visible to other users" in text
