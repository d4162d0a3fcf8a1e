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


def test_serve_simulator_with_curriculum_and_set_step(tiny_model_dir):
    """`zerosearch serve --backend simulator`: the curriculum moves with POST /set_step, and the
    gold answers a trainer may send shape useful (step 0, p=0) vs noisy (step 10, p=1) results."""
    curriculum = json.dumps({"type": "linear", "p_start": 0.0, "p_end": 1.0, "total_steps": 10})
    # the oracle ablation: the gold answers a trainer sends are stated whatever the query (grounding
    # serve's documents is issue 13 item 5)
    proc, url = _start_serve("--backend", "simulator", "-o", "knowledge=oracle", "-o", f"model={tiny_model_dir}",
                             "-o", f"curriculum={curriculum}",
                             "-o", "words_per_doc=8", "-o", "max_regenerations=0", "-o", "max_new_tokens=48",
                             "--batch-window-ms", "10")
    try:
        body = {"queries": ["capital of Ostrand", "Ostrand capital city"], "topk": 2, "return_scores": True,
                "questions": ["What is the capital of Ostrand?"] * 2, "golden_answers": [["Velmora"], ["Velmora"]]}
        assert httpx.get(url + "/health", timeout=60).json()["backend_stats"]["p_noisy"] == 0.0
        useful = httpx.post(url + "/retrieve", json=body, timeout=300).json()["result"]
        assert len(useful) == 2 and all(1 <= len(lst) <= 2 for lst in useful)
        assert all(any("Velmora" in item["document"]["contents"] for item in lst) for lst in useful)

        r = httpx.post(url + "/set_step", json={"step": 10}, timeout=120)
        assert r.status_code == 200 and r.json()["backend_stats"]["p_noisy"] == 1.0
        noisy = httpx.post(url + "/retrieve", json=body, timeout=300).json()["result"]
        assert not any("Velmora" in item["document"]["contents"] for lst in noisy for item in lst)
        stats = httpx.get(url + "/health", timeout=60).json()
        assert stats["backend_stats"]["training_step"] == 10 and stats["stats"]["backend_calls"] == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)


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
