"""SimulatedSearch: parser, noise draw, batching, verification gate, env integration."""

from __future__ import annotations

import re
from typing import Callable

import pytest

from zerosearch_env.data.task import Task
from zerosearch_env.engines.base import LLMEngine, SamplingParams
from zerosearch_env.rewards import normalize_answer
from zerosearch_env.search import SearchRequest
from zerosearch_env.search.simulator import (
    NOISY,
    USEFUL,
    SimulatedSearch,
    build_messages,
    contains_answer,
    draw_mode,
    noise_uniform,
    parse_documents,
    redact_answers,
)


class CannedEngine(LLMEngine):
    """Test double for the parsing/gate logic only: `reply(prompt_text, params, call_index) -> text`."""

    name = "canned"

    def __init__(self, reply: Callable[[str, SamplingParams, int], str]):
        self.reply = reply
        self.calls: list[tuple[list[str], SamplingParams]] = []

    def generate(self, conversations, params=None, *, seeds=None):
        prompts = [c[-1]["content"] for c in conversations]
        self.calls.append((prompts, params, seeds))
        return [self.reply(p, params, len(self.calls) - 1) for p in prompts]


class Fixed:
    """A constant curriculum that does not depend on the curricula package."""

    def __init__(self, p: float):
        self.p = p

    def probability(self, step: int) -> float:
        return self.p


def is_useful_prompt(prompt: str) -> bool:
    return "The correct answer is" in prompt


def good_reply(answer: str) -> Callable[[str, SamplingParams, int], str]:
    def reply(prompt, params, call):
        if is_useful_prompt(prompt):
            return f"Doc 1 (Title: Facts) It is known that {answer} is right.\nDoc 2 (Title: More) Other text here."
        return "Doc 1 (Title: Misc) Unrelated background.\nDoc 2 (Title: Misc 2) More unrelated text."
    return reply


# ------------------------------------------------------------------ parser

PARSE_CASES = [
    ("Doc 1 (Title: Paris) Paris is the capital.\nDoc 2 (Title: Lyon) Lyon is a city.",
     [("Paris", "Paris is the capital."), ("Lyon", "Lyon is a city.")]),
    ("Doc 1: first text.\nDoc 2: second text.", [(None, "first text."), (None, "second text.")]),
    ("Document 1 (Title: A): alpha.\n\nDocument 2 (Title: B): beta.", [("A", "alpha."), ("B", "beta.")]),
    ("Here are the results:\n1. One here.\n2) Two here.\n3. Three here.", [(None, "One here."), (None, "Two here."), (None, "Three here.")]),
    ("[1] Title: Alpha\nText: alpha body\n[2] Title: Beta\nbeta body", [("Alpha", "alpha body"), ("Beta", "beta body")]),
    ("**Doc 1: The Tower**\nThe tower is tall.\n\n**Doc 2: Bridge**\nA bridge.", [("The Tower", "The tower is tall."), ("Bridge", "A bridge.")]),
    ("### Result 1\n## Old Mill\nThe mill is old.", [("Old Mill", "The mill is old.")]),
    ("Sure! Here are three documents:\n\nThe first paragraph.\n\nThe second paragraph.", [(None, "The first paragraph."), (None, "The second paragraph.")]),
    ("Doc 1: short. Doc 2 (Title: X) inline second.", [(None, "short."), ("X", "inline second.")]),
    ("1. In 1999. the year\n2. About 3.5 million people.", [(None, "In 1999. the year"), (None, "About 3.5 million people.")]),
    ("```\nDoc 1 (Title: Fenced) body\n```", [("Fenced", "body")]),
    ("just one blob of text", [(None, "just one blob of text")]),
    ("Doc 1 (Title: <title>) <text>\nDoc 2 (Title: <title>) Real text.", [(None, "Real text.")]),
]


@pytest.mark.parametrize("text,expected", PARSE_CASES)
def test_parser_shapes(text, expected):
    docs = parse_documents(text, k=5, query="my query", max_doc_chars=600)
    assert [(d.title, d.text) for d in docs] == [(t or "my query", b) for t, b in expected]


def test_parser_counts_budget_and_ids():
    many = "\n".join(f"Doc {i} (Title: T{i}) text {i}" for i in range(1, 8))
    assert [d.title for d in parse_documents(many, 3)] == ["T1", "T2", "T3"]  # too many -> truncated
    assert len(parse_documents("Doc 1: only one", 3)) == 1  # too few -> fewer, never invented
    assert parse_documents("", 3) == [] and parse_documents("  \n\n  ", 3) == [] and parse_documents(None, 3) == []
    assert parse_documents("Doc 1: x", 0) == []
    long = "Doc 1 (Title: L) " + "word " * 500
    (d,) = parse_documents(long, 3, max_doc_chars=100)
    assert len(d.text) <= 100 and d.text.startswith("word word")
    a, b = parse_documents(many, 2), parse_documents(many, 2)
    assert [x.id for x in a] == [x.id for x in b] and a[0].id != a[1].id and a[0].id.startswith("sim-")
    assert parse_documents("Doc 1: Same.\nDoc 2: Other.", 2, query="q1")[0].title == "q1"


# ------------------------------------------------------------------ the gate helpers

def test_contains_and_redact_use_normalised_token_sequences():
    from zerosearch_env.search import Document

    doc = Document("1", "t", "Born in the U.S.A., she moved to New York City.")
    assert contains_answer([doc], ["usa"]) and contains_answer([doc], ["New York"])
    assert not contains_answer([doc], ["York New"]) and not contains_answer([doc], ["Yor"])  # whole tokens only
    assert not contains_answer([doc], ["", "  "])
    red = redact_answers(doc.text, ["New York", "USA"])
    assert "New York" not in red and "U.S.A" not in red and red.count("[redacted]") == 2
    assert not contains_answer([Document("1", "t", red)], ["New York", "USA"])
    assert redact_answers("The Beatles, the beatles!", ["Beatles"]) == "The [redacted], the [redacted]!"


# ------------------------------------------------------------------ the noise draw

def test_noise_draw_is_reproducible_and_shared_by_the_same_call():
    assert noise_uniform(3, "ep-1", 2) == noise_uniform(3, "ep-1", 2)
    assert noise_uniform(3, "ep-1", 2) != noise_uniform(4, "ep-1", 2) != noise_uniform(3, "ep-1", 3)
    assert 0.0 <= noise_uniform(0, "", 0, "q") < 1.0
    assert noise_uniform(0, "", 0, "q1") != noise_uniform(0, "", 0, "q2")  # anonymous calls keyed by query
    eng = CannedEngine(good_reply("Zed"))
    sim_a = SimulatedSearch(eng, curriculum=Fixed(0.5), seed=11)
    sim_b = SimulatedSearch(CannedEngine(good_reply("Zed")), curriculum=Fixed(0.5), seed=11)
    # group members issuing the same call (same episode id and search index) get the same mode
    reqs = [SearchRequest(f"query {i}", question="Q?", answers=("Zed",), episode_id="grp-7", search_index=1)
            for i in range(6)]
    modes = [i["mode"] for i in sim_a.search_with_info(reqs)[1]]
    assert len(set(modes)) == 1 and modes == [i["mode"] for i in sim_b.search_with_info(reqs)[1]]
    assert modes[0] == draw_mode(0.5, 11, "grp-7", 1)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_noise_frequency_matches_p(p):
    n = 20000
    noisy = sum(draw_mode(p, 5, f"ep{i}", i % 4) == NOISY for i in range(n))
    assert abs(noisy / n - p) < 0.015


# ------------------------------------------------------------------ batching and prompts

def test_one_engine_call_per_search_and_prompts_by_mode():
    eng = CannedEngine(good_reply("Zed"))
    sim = SimulatedSearch(eng, curriculum=Fixed(0.5), seed=1, words_per_doc=33)
    reqs = [SearchRequest(f"q{i}", top_k=2, question="Who?", answers=("Zed",), episode_id=f"e{i}") for i in range(16)]
    docs, infos = sim.search_with_info(reqs)
    assert len(eng.calls) == 1 and len(eng.calls[0][0]) == 16
    modes = [i["mode"] for i in infos]
    assert USEFUL in modes and NOISY in modes
    for prompt, info, r in zip(eng.calls[0][0], infos, reqs):
        assert r.query in prompt and "Who?" in prompt and "33 words" in prompt
        assert ("Zed" in prompt) == (info["mode"] == USEFUL)  # the gold answer only in useful prompts
        assert info == {"mode": info["mode"], "p_noisy": 0.5, "knowledge": "answer_hint", "gate": "pass",
                        "attempts": 1, "fallback": False, "own_documents": 2, "reason": None, "engine_failure": False}
    for d, info in zip(docs, infos):
        assert len(d) == 2 and contains_answer(d, ["Zed"]) == (info["mode"] == USEFUL)
    s = sim.stats()
    assert s["engine_calls"] == 1 and s["requests"] == 16 and s["useful"] + s["noisy"] == 16
    assert s["useful_first_pass_rate"] == 1.0 and s["noisy_first_pass_rate"] == 1.0 and s["regenerations"] == 0


def test_prompt_messages_shape():
    r = SearchRequest("capital", question="What is the capital?", answers=("Paris", "paris city"))
    useful = build_messages(r, USEFUL, 3, 40)
    noisy = build_messages(r, NOISY, 3, 40)
    assert [m["role"] for m in useful] == ["system", "user"]
    assert "Paris" in useful[1]["content"] and "Paris" not in noisy[1]["content"]
    assert "Doc 3 (Title:" in useful[1]["content"]


# ------------------------------------------------------------------ the gate

def test_gate_regenerates_failures_in_one_batched_call_with_a_new_seed():
    def reply(prompt, params, call):
        if is_useful_prompt(prompt) and "q-hard" in prompt and call == 0:
            return "Doc 1 (Title: X) nothing useful"
        return good_reply("Zed")(prompt, params, call)

    eng = CannedEngine(reply)
    sim = SimulatedSearch(eng, curriculum=Fixed(0.0))
    reqs = [SearchRequest("q-hard", answers=("Zed",), episode_id=f"a{i}") for i in range(3)]
    reqs += [SearchRequest("q-easy", answers=("Zed",), episode_id="b")]
    docs, infos = sim.search_with_info(reqs)
    assert len(eng.calls) == 2 and len(eng.calls[1][0]) == 3  # only the failing ones, together
    assert eng.calls[1][2][0] != eng.calls[0][2][0]  # the retried request's seed changed
    assert [i["gate"] for i in infos] == ["pass"] * 4 and [i["attempts"] for i in infos] == [2, 2, 2, 1]
    s = sim.stats()
    assert s["regenerations"] == 3 and s["useful_first_pass"] == 1 and s["repairs"] == 0


def test_oracle_gate_repairs_useful_and_noisy_after_r_regenerations():
    """The oracle ablation keeps the old answer-checking gate and its repair."""
    def reply(prompt, params, call):
        if is_useful_prompt(prompt):
            return "Doc 1 (Title: A) nothing here\nDoc 2 (Title: B) nor here"
        return "Doc 1 (Title: The Zed Story) Everyone knows Mr. ZED did it.\nDoc 2 (Title: C) clean text"

    for p, mode in ((0.0, USEFUL), (1.0, NOISY)):
        eng = CannedEngine(reply)
        sim = SimulatedSearch(eng, curriculum=Fixed(p), max_regenerations=2, max_doc_chars=60, knowledge="oracle")
        (docs,), (info,) = sim.search_with_info([SearchRequest("who", top_k=2, question="Who did it?", answers=("Zed", "Mr Zed"))])
        assert len(eng.calls) == 3 and info == {"mode": mode, "p_noisy": p, "knowledge": "oracle", "gate": "repaired",
                                                "attempts": 3, "fallback": False, "own_documents": 2,
                                                "reason": "answer", "engine_failure": False}
        assert len(docs) == 2
        if mode == USEFUL:
            assert docs[0].text.startswith('The answer to "Who did it" is Zed.') and contains_answer(docs, ["Zed"])
            assert docs[1].text == "nor here"
        else:
            assert not contains_answer(docs, ["Zed", "Mr Zed"]) and "[redacted]" in docs[0].text + docs[0].title
            assert docs[1].text == "clean text"
        assert all(len(d.text) <= 60 for d in docs)
        assert sim.stats()["repairs"] == 1


def test_oracle_gate_flags_without_repair_and_skips_without_answers():
    eng = CannedEngine(lambda prompt, params, call: "Doc 1: nothing")
    sim = SimulatedSearch(eng, curriculum=Fixed(0.0), max_regenerations=1, repair=False, knowledge="oracle")
    (docs, docs2), infos = sim.search_with_info([SearchRequest("q", answers=("Zed",)), SearchRequest("q2")])
    assert [i["gate"] for i in infos] == ["flagged", "ungated"] and [d.text for d in docs] == ["nothing"]
    assert [i["attempts"] for i in infos] == [2, 1] and len(eng.calls) == 2
    assert sim.stats()["flags"] == 1 and sim.stats()["ungated"] == 1
    off = SimulatedSearch(CannedEngine(lambda *a: "Doc 1: nothing"), curriculum=Fixed(0.0), gate=False, knowledge="oracle")
    assert off.search_with_info([SearchRequest("q", answers=("Zed",))])[1][0]["gate"] == "ungated"


def test_oracle_empty_output_useful_is_repaired_noisy_stays_empty():
    sim = SimulatedSearch(CannedEngine(lambda *a: ""), curriculum=Fixed(0.0), max_regenerations=0, knowledge="oracle")
    (docs,), (info,) = sim.search_with_info([SearchRequest("tallest tower", answers=("Zed",))])
    assert info["gate"] == "repaired" and len(docs) == 1 and docs[0].title == "tallest tower" and "Zed" in docs[0].text
    noisy = SimulatedSearch(CannedEngine(lambda *a: ""), curriculum=Fixed(1.0), max_regenerations=0, knowledge="oracle")
    (docs,), (info,) = noisy.search_with_info([SearchRequest("q", answers=("Zed",))])
    assert docs == [] and info["gate"] == "pass" and noisy.stats()["empty_results"] == 1


def test_bad_engine_and_bad_input_give_clear_errors():
    class Short(LLMEngine):
        def generate(self, conversations, params=None, *, seeds=None):
            return []

    with pytest.raises(RuntimeError, match="returned 0 texts for 1"):
        SimulatedSearch(Short(), curriculum=Fixed(0)).search([SearchRequest("q")])
    with pytest.raises(TypeError):
        SimulatedSearch(CannedEngine(lambda *a: ""), curriculum=Fixed(0)).search(["not a request"])
    with pytest.raises(TypeError):
        SimulatedSearch(object(), curriculum=Fixed(0))
    with pytest.raises(TypeError):
        SimulatedSearch(CannedEngine(lambda *a: ""), curriculum=object())
    assert SimulatedSearch(CannedEngine(lambda *a: ""), curriculum=Fixed(0)).search([]) == []


# ------------------------------------------------------------------ curriculum, env and cache integration

def test_set_training_step_moves_p_in_the_env():
    from curricula import LinearCurriculum
    from zerosearch_env import SearchEnv

    eng = CannedEngine(good_reply("Zed"))
    sim = SimulatedSearch(eng, curriculum=LinearCurriculum(0.0, 1.0, 10), seed=0)
    env = SearchEnv(backend=sim, tasks=[Task("t1", "Who built the tower?", ("Zed",))], max_turns=4)
    env.reset(seed=0)
    _, _, _, _, info = env.step("<search>tower builder</search>")
    assert info["search_info"]["p_noisy"] == 0.0 and info["search_info"]["mode"] == USEFUL
    env.set_training_step(10)
    _, _, _, _, info = env.step("<search>tower builder</search>")
    assert info["search_info"]["p_noisy"] == 1.0 and info["search_info"]["mode"] == NOISY
    env.set_training_step(5)
    assert sim.p_noisy() == pytest.approx(0.5)
    # the request's own step wins over the backend's step
    assert sim.mode_of(SearchRequest("x", step=0))[1] == 0.0


def test_vector_env_makes_one_engine_call_per_step():
    from zerosearch_env import make_vec

    eng = CannedEngine(good_reply("Zed"))
    sim = SimulatedSearch(eng, curriculum=Fixed(0.3))
    tasks = [Task(f"t{i}", f"Question {i}?", ("Zed",)) for i in range(4)]
    venv = make_vec(4, backend=sim, tasks=tasks, max_turns=3)
    venv.reset(seed=0)
    venv.step(["<search>a</search>", "<search>b</search>", "<answer>x</answer>", "<search>c</search>"])
    assert len(eng.calls) == 1 and len(eng.calls[0][0]) == 3


def test_default_curriculum_is_constant_zero():
    sim = SimulatedSearch(CannedEngine(good_reply("Zed")))
    sim.set_training_step(10_000)
    assert sim.p_noisy() == 0.0


def test_cache_keys_on_mode(tmp_path):
    from curricula import StepCurriculum
    from zerosearch_env.search.cache import CachedSearch

    eng = CannedEngine(good_reply("Zed"))
    sim = SimulatedSearch(eng, curriculum=StepCurriculum([5], [0.0, 1.0]))
    cache = CachedSearch(sim, tmp_path)
    r = SearchRequest("q", question="Who?", answers=("Zed",), episode_id="e")
    first, i1 = cache.search_with_info([r])
    again, i2 = cache.search_with_info([SearchRequest("q", question="Who?", answers=("Zed",), episode_id="other")])
    assert again == first and i2[0]["cache"] == "hit" and i2[0]["mode"] == USEFUL and len(eng.calls) == 1
    cache.set_training_step(7)  # now every call is noisy: a different entry
    noisy, i3 = cache.search_with_info([r])
    assert i3[0]["cache"] == "miss" and i3[0]["mode"] == NOISY and not contains_answer(noisy[0], ["Zed"])
    assert len(eng.calls) == 2 and cache.stats()["cache_hits"] == 1 and cache.stats()["noisy"] == 1
    assert sim.identity() == cache.identity() and "sim-v2" in sim.identity() and "seed=0" in sim.identity()
    assert "knowledge=answer_hint" in sim.identity()


# ------------------------------------------------------------------ real transformers engines

def _world_like_requests(n: int, answer: str = "Velmora Quintesse") -> list[SearchRequest]:
    return [SearchRequest(f"birthplace of person {i}", top_k=2, question=f"Where was person {i} born?",
                          answers=(answer,), episode_id=f"tiny-{i}") for i in range(n)]


def test_oracle_gate_repairs_the_garbage_of_a_tiny_random_model(tiny_model_dir):
    from zerosearch_env.engines import TransformersEngine

    eng = TransformersEngine(tiny_model_dir, dtype="float32")
    calls = []
    generate = eng.generate
    eng.generate = lambda convs, params=None, seeds=None: calls.append(len(convs)) or generate(convs, params, seeds=seeds)
    sim = SimulatedSearch(eng, curriculum=Fixed(0.5), seed=3, max_regenerations=1,
                          sampling=SamplingParams(max_new_tokens=12, seed=0), knowledge="oracle")
    reqs = _world_like_requests(6)
    docs, infos = sim.search_with_info(reqs)
    modes = [i["mode"] for i in infos]
    assert set(modes) == {USEFUL, NOISY}
    n_useful = modes.count(USEFUL)
    assert calls == [6, n_useful]  # one call for all, then one regeneration round for the failing useful ones
    for d, info in zip(docs, infos):
        if info["mode"] == USEFUL:  # random weights never write the fictional answer: repaired
            assert info["gate"] == "repaired" and info["attempts"] == 2 and contains_answer(d, ["Velmora Quintesse"])
        else:
            assert info["gate"] == "pass" and info["attempts"] == 1 and not contains_answer(d, ["Velmora Quintesse"])
        assert 1 <= len(d) <= 2 or (info["mode"] == NOISY and len(d) == 0)
    s = sim.stats()
    assert s["repairs"] == n_useful and s["useful_first_pass"] == 0 and s["engine_calls"] == 2


def test_from_config_builds_a_cached_simulator(tiny_model_dir, tmp_path):
    from zerosearch_env import EnvConfig, SearchEnv
    from zerosearch_env.search import make_backend
    from zerosearch_env.search.cache import CachedSearch

    opts = {"engine": "transformers", "model": str(tiny_model_dir), "dtype": "float32",
            "curriculum": {"type": "linear", "p_start": 0.0, "p_end": 1.0, "total_steps": 4}, "seed": 5,
            "words_per_doc": 8, "max_new_tokens": 8, "max_regenerations": 0, "cache_dir": str(tmp_path / "cache")}
    cfg = EnvConfig(backend="simulator", backend_options=opts, top_k=2, max_doc_chars=100)
    backend = make_backend(cfg)
    assert isinstance(backend, CachedSearch) and isinstance(backend.backend, SimulatedSearch)
    sim = backend.backend
    assert (sim.seed, sim.words_per_doc, sim.max_regenerations, sim.max_doc_chars) == (5, 8, 0, 100)
    assert sim.sampling.max_new_tokens == 8 and "transformers:" in sim.identity()
    env = SearchEnv(cfg, backend=backend, tasks=[Task("t", "Where was Ana born?", ("Velmora",))])
    env.reset(seed=1)
    env.set_training_step(4)
    obs, _, _, _, info = env.step("<search>Ana birthplace</search>")
    assert info["search_info"]["mode"] == NOISY and info["search_info"]["cache"] == "miss" and "<information>" in obs
    assert (tmp_path / "cache" / "search_cache.sqlite").is_file()
    with pytest.raises(ValueError, match="unknown backend_options"):
        SimulatedSearch.from_config(cfg.updated(backend_options={**opts, "wrods_per_doc": 3}))
    with pytest.raises(ValueError, match="unknown simulator engine"):
        SimulatedSearch.from_config(cfg.updated(backend_options={"engine": "nope"}))
    with pytest.raises(ValueError, match="base_urls"):
        SimulatedSearch.from_config(cfg.updated(backend_options={"engine": "openai"}))


@pytest.mark.slow
def test_real_small_model_useful_and_noisy():
    """The default SmolLM2-135M-Instruct as the oracle ablation's simulator: one useful and one noisy
    request in one call (the grounded one: tests/test_simulator_gate.py)."""
    import torch

    from zerosearch_env.data import load_tasks
    from zerosearch_env.engines import TransformersEngine

    task = load_tasks("world", "test")[0]
    # two episode ids whose draws at p = 0.5 give one useful and one noisy call
    ids = [f"slow-{i}" for i in range(50)]
    useful_id = next(e for e in ids if draw_mode(0.5, 0, e, 0) == USEFUL)
    noisy_id = next(e for e in ids if draw_mode(0.5, 0, e, 0) == NOISY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core CI box: one thread avoids oversubscription stalls
    try:
        eng = TransformersEngine()
        sim = SimulatedSearch(eng, curriculum=Fixed(0.5), words_per_doc=15, max_regenerations=0,
                              sampling=SamplingParams(max_new_tokens=40, seed=0), knowledge="oracle")
        reqs = [SearchRequest(task.question, question=task.question, answers=task.answers, episode_id=e)
                for e in (useful_id, noisy_id)]
        docs, infos = sim.search_with_info(reqs)
    finally:
        torch.set_num_threads(threads)
    assert [i["mode"] for i in infos] == [USEFUL, NOISY] and sim.stats()["engine_calls"] == 1
    for d, info in zip(docs, infos):
        assert info["gate"] in ("pass", "repaired") and info["attempts"] == 1
        assert contains_answer(d, task.answers) == (info["mode"] == USEFUL)
        assert all(x.text and len(x.text) <= 600 and x.id.startswith("sim-") for x in d)
