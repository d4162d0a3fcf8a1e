"""`zerosearch compare`: spec parsing, the cost model, and small real runs (JSON + PNG written)."""

from __future__ import annotations

import json
import random

import pytest

from agents.baselines import OracleAgent
from agents.cli import main
from agents.compare import (BackendSpec, CostModel, TimedBackend, compare, format_table, parse_backend_specs,
                            save_report)
from zerosearch_env import EnvConfig
from zerosearch_env.data.world import generate_world
from zerosearch_env.search.bm25 import BM25Search
from zerosearch_env.server import BackgroundServer, create_app


def test_parse_backend_specs():
    specs = parse_backend_specs("sim:0, sim:0.5,sim:1,bm25,dense,retriever=http://127.0.0.1:9/retrieve,web")
    assert [s.label for s in specs] == ["sim p=0", "sim p=0.5", "sim p=1", "bm25", "dense", "retriever", "web"]
    assert specs[1].kind == "simulator" and specs[1].noise == 0.5
    assert specs[5].options == {"url": "http://127.0.0.1:9/retrieve"}
    for bad, msg in [("sim:2", r"\[0, 1\]"), ("sim:x", "number"), ("sim", "noise level"), ("google", "unknown"),
                     ("", "no backends"), ("bm25,bm25", "duplicate"), ("retriever=localhost:1", "http")]:
        with pytest.raises(ValueError, match=msg):
            parse_backend_specs(bad)


def test_cost_model():
    cost = CostModel(gpu_usd_per_hour=3.6, cpu_usd_per_hour=0.036)
    usd, how = cost.per_1k("simulator", 0.5, None)  # 0.5 s per search at $3.6/h -> $0.5 per 1k
    assert usd == pytest.approx(0.5) and "GPU-hour" in how
    assert cost.per_1k("bm25", 0.001, None)[0] == pytest.approx(1e-5)
    assert cost.per_1k("bm25", None, None) == (None, "no searches made")

    class Provider:
        usd_per_1k_queries = 15.0

    class Web:
        provider = Provider()

    assert cost.per_1k("web", 0.2, Web())[0] == 15.0
    assert CostModel(web_usd_per_1k=5.0).per_1k("web", None, Web())[0] == 5.0


@pytest.fixture(scope="module")
def world():
    return generate_world(0)


def test_compare_bm25_vs_retriever_over_serve(world, tmp_path):
    tasks = random.Random(0).sample(world.split("test"), 24)
    bm25 = BM25Search(world.documents)
    config = EnvConfig(split="test", max_turns=4, top_k=3)
    with BackgroundServer(create_app(BM25Search(world.documents), batch_window_ms=2)) as srv:
        specs = parse_backend_specs(f"bm25,retriever={srv.url}/retrieve")
        report = compare(OracleAgent(world.tasks), tasks, specs, config, env_tasks=world.tasks,
                         num_envs=8, progress=False, backends={"bm25": bm25})
    rows = {r["backend"]: r for r in report["rows"]}
    assert set(rows) == {"bm25", "retriever"}
    # the same BM25 behind our Search-R1 server gives the same episodes as BM25 in process
    for key in ("em", "f1", "searches_per_episode", "answer_in_results", "n"):
        assert rows["bm25"][key] == rows["retriever"][key], key
    assert rows["bm25"]["n"] == 24 and rows["bm25"]["em"] > 0.5
    assert rows["bm25"]["searches"] == round(rows["bm25"]["searches_per_episode"] * 24)
    assert rows["bm25"]["backend_calls"] < rows["bm25"]["searches"]  # batched by the vector env
    assert rows["retriever"]["latency_ms_per_search"] > 0 and rows["retriever"]["usd_per_1k_searches"] > 0
    assert len(report["records"]) == 48
    table = format_table(report)
    assert "retriever" in table and "$/1k searches" in table
    paths = save_report(report, tmp_path / "cmp")
    saved = json.loads(paths["json"].read_text())
    assert [r["backend"] for r in saved["rows"]] == ["bm25", "retriever"] and "records" not in saved
    assert len(paths["records"].read_text().splitlines()) == 48
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["png"].stat().st_size > 10_000


def test_timed_backend_counts_calls(world):
    timed = TimedBackend(BM25Search(world.documents))
    from zerosearch_env.search import SearchRequest

    timed.search([SearchRequest("a"), SearchRequest("b")])
    timed.search_with_info([SearchRequest("c")])
    assert timed.call_sizes == [2, 1] and timed.searches == 3 and timed.seconds > 0
    assert timed.identity() == timed.inner.identity()


def test_cli_compare_writes_json_and_png(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["compare", "--agent", "closed_book", "--backends", "bm25", "--episodes", "10",
               "--num-envs", "4", "--out", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "closed_book" in printed and "bm25" in printed
    data = json.loads((out / "compare.json").read_text())
    row = data["rows"][0]
    assert row["n"] == 10 and row["searches_per_episode"] == 0.0 and row["usd_per_1k_searches"] is None
    assert (out / "compare.png").exists()
    assert main(["compare", "--backends", "sim:7", "--out", str(out)]) == 2
    assert main(["compare", "--agent", str(tmp_path / "missing"), "--backends", "bm25", "--out", str(out)]) == 2


def test_compare_simulator_noise_levels_tiny_model(world, tiny_model_dir, tmp_path):
    """The simulator (world knowledge; a tiny random model, so the gate's knowledge fallback writes
    the reached articles' facts) at p=0 and p=1: the oracle agent, searching the answer-bearing
    article, reads the answer at p=0 and never at p=1."""
    tasks = [t for t in world.split("test") if t.kind == "single"][:6]
    report = compare(OracleAgent(world.tasks), tasks, parse_backend_specs("sim:0,sim:1"),
                     EnvConfig(split="test", max_turns=3, top_k=2), env_tasks=world.tasks, num_envs=6,
                     simulator_options={"model": str(tiny_model_dir), "words_per_doc": 6, "max_regenerations": 0},
                     progress=False)
    p0, p1 = report["rows"]
    assert (p0["noise"], p1["noise"]) == (0.0, 1.0)
    assert p0["answer_in_results"] == 1.0 and p0["em"] == 1.0
    assert p1["answer_in_results"] == 0.0 and p1["em"] == 0.0
    assert p0["usd_per_1k_searches"] > 0 and "GPU-hour" in p0["cost_basis"]
    # the simulator ran on this CPU: the cost column says it prices CPU seconds at the GPU rate
    assert "measured on a CPU, priced at the GPU rate" in p0["cost_basis"]
    assert "priced at the GPU rate" in format_table(report).splitlines()[-1]
    assert p0["backend_calls"] <= p0["searches"]
    assert save_report(report, tmp_path)["png"].exists()


def test_compare_builds_the_simulator_with_the_knowledge_option(tiny_model_dir, capsys):
    from agents.compare import build_backend

    (spec,) = parse_backend_specs("sim:0")
    opts = {"model": str(tiny_model_dir), "dtype": "float32"}
    assert build_backend(spec, EnvConfig(), simulator_options=opts).knowledge_name == "world"
    assert build_backend(spec, EnvConfig(dataset="data.jsonl"), simulator_options=opts).knowledge_name == "answer_hint"
    oracle = build_backend(spec, EnvConfig(), simulator_options={**opts, "knowledge": "oracle"})
    assert oracle.knowledge_name == "oracle"
    with pytest.raises(SystemExit):
        main(["compare", "--sim-knowledge", "wiki"])
    assert "invalid choice: 'wiki'" in capsys.readouterr().err
