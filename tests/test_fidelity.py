"""`zerosearch fidelity`: probes, the discriminator, and a small real run (tiny random model as the
simulator engine, BM25 as the real backend). A random model never writes a result that passes the
gate where the query names an entity, so every such simulated result here is the knowledge fallback
(only garbage queries, about which nothing is known, pass with the model's own text): the run
measures the grounding and the fallback path, not a language model's prose."""

from __future__ import annotations

import json
import random

import pytest

from agents.cli import main
from agents.fidelity import (QUERY_KINDS, auroc, discriminator_auroc, distinct_n, make_probes, recorded_probes)
from zerosearch_env.data.world import generate_world
from zerosearch_env.search.simulator import contains_answer
from zerosearch_env.search.base import Document

ROW_FIGURES = {"answer_in_results", "answer_in_results_by_question_kind", "guess_gap", "first_hop_leak_rate",
               "consistency_per_100_docs", "consistency_per_100_useful_docs", "fallback_share",
               "engine_failure_share", "doc_words", "distinct_1", "distinct_2", "overlap_with_reference",
               "discriminator_auroc"}


@pytest.fixture(scope="module")
def world():
    return generate_world(0)


def _says(text: str, answers) -> bool:
    return contains_answer([Document("", "", text)], answers)


def test_probes_cover_every_query_kind_and_guess_right_and_wrong(world):
    test = world.split("test")
    tasks = [t for t in test if t.kind == "bridge"][:20] + [t for t in test if t.kind == "single"][:5]
    probes = make_probes(tasks, test, seed=0)
    kinds = {p.kind for p in probes}
    assert kinds == set(QUERY_KINDS) - {"recorded"}
    for p in probes:
        titles = p.task.supporting_titles
        if p.kind == "first_hop":
            assert p.query == titles[0]
        elif p.kind == "second_hop":
            assert p.query == titles[-1] and p.task.kind == "bridge"
        elif p.kind == "unrelated":
            assert p.query not in titles and not _says(p.query, p.task.answers)
        elif p.kind == "wrong_answer":
            assert p.query.startswith(titles[0]) and not _says(p.query, p.task.answers)
        elif p.kind == "right_answer":
            assert p.query.startswith(titles[0]) and _says(p.query, p.task.answers)
        elif p.kind == "garbage":
            assert not _says(p.query, p.task.answers)
    assert sum(p.kind == "second_hop" for p in probes) == 20  # single questions have no second hop
    assert make_probes(tasks, test, seed=0) == probes


def test_recorded_probes_read_the_agents_searches(world):
    t = world.split("test")[0]
    records = [{"task_id": t.id, "agent_turns": ["<search>first query</search>", "<answer>x</answer>",
                                                 "<search>second</search>"]}]
    probes = recorded_probes(records, {t.id: t})
    assert [(p.kind, p.query, p.task.id) for p in probes] == [("recorded", "first query", t.id), ("recorded", "second", t.id)]
    with pytest.raises(ValueError, match="not questions of this data set"):
        recorded_probes([{"task_id": "nope", "agent_turns": []}], {t.id: t})
    with pytest.raises(ValueError, match="agent_turns"):
        recorded_probes([{"task_id": t.id}], {t.id: t})


def test_auroc_and_distinct_n():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert auroc([1.0], [1]) is None
    assert distinct_n(["a b a b"], 1) == 0.5 and distinct_n(["a b a b"], 2) == 2 / 3 and distinct_n([""], 1) is None


def test_discriminator_on_identical_and_trivially_different_sources(world):
    docs = [(f"q{i % 40}", f"{d.title} {d.text}") for i, d in enumerate(world.documents[:400])]
    same = discriminator_auroc(docs, docs, seed=0)
    assert same == pytest.approx(0.5, abs=0.02)
    # two real halves of the corpus, labelled at random: nothing to learn either
    rng = random.Random(0)
    shuffled = docs[:]
    rng.shuffle(shuffled)
    assert discriminator_auroc(shuffled[:200], shuffled[200:], seed=0) == pytest.approx(0.5, abs=0.12)
    marked = [(g, f"{t} Click here to read more on our website.") for g, t in docs]
    assert discriminator_auroc(marked, docs, seed=0) > 0.98
    assert discriminator_auroc(docs[:5], [("other", "x")], seed=0) is None  # a half lacks a class


def test_fidelity_command_tiny_simulator_vs_bm25(tiny_model_dir, world, tmp_path, capsys):
    """16 bridge + 4 single + 4 comparison test questions, the tiny model at noise 0 and 0.5 vs BM25,
    plus two recorded episodes: every figure present; the first-hop answer rate of the simulator at
    noise 0 within 0.15 of BM25's; an unrelated entity's results never hold the answer."""
    bridge = [t for t in world.split("test") if t.kind == "bridge"]
    records = tmp_path / "eval.json"
    records.write_text(json.dumps({"records": [
        {"task_id": bridge[0].id, "agent_turns": [f"<search>{bridge[0].supporting_titles[0]}</search>"]},
        {"task_id": bridge[1].id, "agent_turns": [f"<search>{bridge[1].question}</search>", "<answer>x</answer>"]}]}))
    out = tmp_path / "fid"
    rc = main(["fidelity", "--model", str(tiny_model_dir), "--noise", "0,0.5", "--n", "24",
               "--kinds", "bridge:4,single:1,comparison:1", "--words-per-doc", "4", "--max-regenerations", "0",
               "--records", str(records), "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0
    report = json.loads((out / "fidelity.json").read_text())
    assert (out / "fidelity.png").stat().st_size > 10_000
    assert "discriminator AUROC" in printed and "first-hop ans" in printed and "recorded ans" in printed
    rows = {r["backend"]: r for r in report["rows"]}
    assert list(rows) == ["bm25", "sim p=0", "sim p=0.5"]
    assert 24 <= report["n_questions"] <= 26 and report["probes_by_query_kind"]["recorded"] == 2
    assert report["probes_by_question_kind"] == {"bridge": 16 * 6 + 2, "single": 4 * 5, "comparison": 4 * 6}
    assert report["settings"]["noise"] == "0,0.5" and report["examples"]
    for r in rows.values():
        assert ROW_FIGURES <= set(r)
        assert set(r["answer_in_results"]) == set(QUERY_KINDS)
        assert set(r["answer_in_results_by_question_kind"]) == {"single", "bridge", "comparison"}
        assert r["consistency_per_100_docs"] is not None and r["first_hop_leak_rate"] is not None
    bm25, sim0, sim5 = rows["bm25"], rows["sim p=0"], rows["sim p=0.5"]
    print(f"\nfirst-hop answer in results: bm25 {bm25['answer_in_results']['first_hop']:.3f}, "
          f"sim p=0 {sim0['answer_in_results']['first_hop']:.3f} (tiny model: knowledge fallback); "
          f"AUROC sim p=0 vs bm25 {sim0['discriminator_auroc']:.3f}")
    assert abs(sim0["answer_in_results"]["first_hop"] - bm25["answer_in_results"]["first_hop"]) <= 0.15
    assert bm25["answer_in_results"]["unrelated"] == 0.0 == sim0["answer_in_results"]["unrelated"]
    assert sim0["answer_in_results"]["garbage"] == 0.0 and sim0["first_hop_leak_rate"] == 0.0
    stats = sim0["simulator_stats"]  # the tiny model passes only where nothing is known (garbage queries)
    assert stats["fallbacks"] + stats["useful_first_pass"] == stats["requests"] == report["n_probes"]
    assert stats["useful_first_pass"] <= report["probes_by_query_kind"]["garbage"]
    assert sim0["fallback_share"] >= 0.75 and sim0["engine_failure_share"] is not None
    assert bm25["fallback_share"] is None and bm25["overlap_with_reference"] is None
    assert sim5["answer_in_results"]["second_hop"] < sim0["answer_in_results"]["second_hop"]  # noisy results omit it
    assert 0.0 < sim0["overlap_with_reference"] < 1.0 and 0.5 <= sim0["discriminator_auroc"] <= 1.0
    assert sim0["consistency_per_100_docs"] == 0.0  # the fallback states the world's own facts


def test_fidelity_per_document_fallback_is_wired_through(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "fid"
    rc = main(["fidelity", "--model", str(tiny_model_dir), "--noise", "0", "--n", "4", "--kinds", "bridge",
               "--words-per-doc", "4", "--max-regenerations", "0", "--fallback-unit", "document",
               "--out", str(out), "--no-progress"])
    assert rc == 0 and "partial-fallback share" in capsys.readouterr().out
    report = json.loads((out / "fidelity.json").read_text())
    assert report["settings"]["fallback_unit"] == "document"
    sim0 = next(r for r in report["rows"] if r["backend"] == "sim p=0")
    stats = sim0["simulator_stats"]
    assert stats["fallbacks"] + stats["partial_fallbacks"] + stats["useful_first_pass"] == stats["requests"]
    assert sim0["partial_share"] == stats["partial_fallbacks"] / stats["requests"]


@pytest.mark.parametrize("argv, message", [
    (["--noise", "2"], "--noise"), (["--noise", "a,b"], "--noise"), (["--noise", "0,0"], "distinct"),
    (["--real", "sim:0"], "one real backend"), (["--real", "bm25,dense"], "one real backend"),
    (["--real", "google"], "unknown backend"), (["--kinds", "bogus"], "no bogus questions"),
    (["--kinds", "bridge:x"], "weight"), (["--n", "0"], "--n"), (["--n", "100000", "--kinds", "comparison"], "asks for"),
    (["--records", "missing.json"], "no such file"), (["--records", "{bad}"], "records"),
    (["--records", "x", "--agent", "oracle"], "not both"),
])
def test_bad_input_exits_2_with_a_message(argv, message, tmp_path, capsys):
    if "{bad}" in argv:
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"rows": []}))
        argv = [str(bad) if a == "{bad}" else a for a in argv]
    assert main(["fidelity", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zerosearch fidelity: ") and message in err
    assert not (tmp_path / "o").exists()


def test_help_explains_each_figure(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fidelity", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for figure in ("first-hop leak", "contradictions", "fallback share", "distinct-2", "overlap w/ real",
                   "discriminator AUROC", "wrong-guess", "right-guess", "--noise", "--records"):
        assert figure in text
