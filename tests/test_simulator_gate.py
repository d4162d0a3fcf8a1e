"""The grounded simulator (issue 13): knowledge sources wired in, query-grounded prompts, the gate
that verifies against the knowledge, the knowledge fallback, engine failures, and the oracle
ablation. World 0's bridge test questions at noise 0, as the issue measures them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from tests.test_knowledge import world, wk  # noqa: F401 - world 0 and its WorldKnowledge, module fixtures
from tests.test_simulator import CannedEngine, Fixed
from zerosearch_env import EnvConfig
from zerosearch_env.data.task import Task
from zerosearch_env.engines import SamplingParams, TransformersEngine
from zerosearch_env.search import FunctionSearch, SearchRequest
from zerosearch_env.search.knowledge import AnswerHintKnowledge, NoKnowledge, WorldKnowledge, mentions
from zerosearch_env.search.simulator import NOISY, USEFUL, SimulatedSearch, contains_answer
from zerosearch_env.search.simulator.consistency import contradictions
from zerosearch_env.search.simulator.gate import fallback_documents
from zerosearch_env.search.simulator.support import unsupported
from zerosearch_env.search.simulator.prompts import grounded_messages

SAMPLE = Path(__file__).parent / "data" / "consistency_sample.json"


@pytest.fixture(scope="module")
def bridge(world):
    return [t for t in world.split("test") if t.kind == "bridge"][::7]  # 69 questions, every template


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_dir):
    return TransformersEngine(tiny_model_dir, dtype="float32")


def request(task, query: str, episode: str = "", top_k: int = 3) -> SearchRequest:
    return SearchRequest(query, top_k=top_k, question=task.question, answers=task.answers, episode_id=episode,
                         supporting_titles=task.supporting_titles)


def unrelated(bridge, i: int):
    """A question sharing no article with question i."""
    t = bridge[i]
    return next(o for o in bridge[i + 1:] + bridge[:i] if not set(o.supporting_titles) & set(t.supporting_titles))


def tiny_simulator(engine, knowledge, p: float = 0.0, **kw) -> SimulatedSearch:
    return SimulatedSearch(engine, curriculum=Fixed(p), knowledge=knowledge, max_regenerations=0,
                           sampling=SamplingParams(max_new_tokens=8, seed=0), **kw)


def answer_rate(docs_per_request, reqs) -> float:
    return sum(contains_answer(d, r.answers) for d, r in zip(docs_per_request, reqs)) / len(reqs)


# ------------------------------------------------------------------ fidelity against BM25


def test_first_hop_and_unrelated_queries_match_bm25(world, wk, bridge, tiny_engine, tmp_path, capsys):
    """The issue's fidelity target, at noise 0 over 64 bridge questions: the final answer is in a
    first-hop query's results about as often as in BM25's top 3 (today's oracle: always), and in
    an unrelated-entity query's results never. A tiny random model never passes the gate, so the
    documents here are the knowledge fallback (the path a real engine falls back to)."""
    from zerosearch_env.search.bm25 import BM25Search

    bm25 = BM25Search(world.documents, index_dir=tmp_path / "bm25")
    sim = tiny_simulator(tiny_engine, wk)
    first = [request(t, t.supporting_titles[0], f"first-{i}") for i, t in enumerate(bridge)]
    other = [request(t, unrelated(bridge, i).supporting_titles[0], f"other-{i}") for i, t in enumerate(bridge)]
    sim_first, infos = sim.search_with_info(first)
    sim_other = sim.search(other)
    rates = {"first-hop": (answer_rate(bm25.search(first), first), answer_rate(sim_first, first)),
             "unrelated": (answer_rate(bm25.search(other), other), answer_rate(sim_other, other))}
    s = sim.stats()
    with capsys.disabled():
        print(f"\nfinal answer in the results over {len(bridge)} bridge questions (BM25 vs world-grounded simulator, "
              f"tiny model): " + ", ".join(f"{k} {b:.3f} vs {a:.3f}" for k, (b, a) in rates.items())
              + f"; fallback share {s['fallback_share']:.2f}, engine-failure share {s['engine_failure_share']:.2f}")
    assert len(bridge) >= 48
    assert 0.2 < rates["first-hop"][0] < 0.8 and abs(rates["first-hop"][1] - rates["first-hop"][0]) <= 0.15
    assert rates["unrelated"][1] == 0.0 and abs(rates["unrelated"][1] - rates["unrelated"][0]) <= 0.15
    assert all(i["mode"] == USEFUL and i["knowledge"] == "world" for i in infos)
    assert s["fallbacks"] == s["requests"] == 2 * len(bridge)  # a random model never writes the facts


def test_oracle_ablation_still_answers_any_query(wk, bridge, tiny_engine):
    """`knowledge="oracle"` reproduces the old behaviour: the answer in a useful result whatever
    the query (the repair sentence), redaction in noisy ones."""
    reqs = [request(t, unrelated(bridge, i).supporting_titles[0], f"o-{i}") for i, t in enumerate(bridge[:12])]
    sim = tiny_simulator(tiny_engine, "oracle")
    docs, infos = sim.search_with_info(reqs)
    assert answer_rate(docs, reqs) == 1.0 and {i["gate"] for i in infos} == {"repaired"}
    assert all(d[0].text.startswith(f'The answer to "{r.question.rstrip("?")}" is {r.answers[0]}.') for d, r in zip(docs, reqs))
    assert "sim-v1" in sim.identity() and "knowledge=oracle" in sim.identity()
    r = reqs[0]
    assert "The correct answer is: " + r.answers[0] in sim._job(r).messages[1]["content"]
    leaky = SimulatedSearch(CannedEngine(lambda p, *a: f"Doc 1 (Title: X) It was {r.answers[0]}."), curriculum=Fixed(1.0),
                            knowledge="oracle", max_regenerations=0)
    (noisy,) = leaky.search([r])
    assert "[redacted]" in noisy[0].text


# ------------------------------------------------------------------ prompts


def test_prompts_are_written_from_the_knowledge(wk, bridge):
    t = bridge[0]
    first, bearing = t.supporting_titles
    kn = wk.lookup(request(t, first))
    useful = grounded_messages(request(t, first), kn, USEFUL, 3, 40)[1]["content"]
    assert all(s in useful for s in kn.sentences) and t.question not in useful
    assert not mentions(useful, t.answers) or kn.reached_answer
    reached = wk.lookup(request(t, bearing))
    assert reached.reached_answer
    noisy = grounded_messages(request(t, bearing), reached, NOISY, 3, 40)[1]["content"]
    assert not mentions(noisy, t.answers) and not any(s in noisy for s in reached.sentences)
    hint = AnswerHintKnowledge(wk.world)
    before = grounded_messages(request(t, first), hint.lookup(request(t, first)), USEFUL, 3, 40)[1]["content"]
    after = grounded_messages(request(t, bearing), hint.lookup(request(t, bearing)), USEFUL, 3, 40)[1]["content"]
    assert t.question in before and t.answers[0] not in before and t.answers[0] in after
    plain = grounded_messages(request(t, first), NoKnowledge().lookup(request(t, first)), USEFUL, 3, 40)[1]["content"]
    assert t.question not in plain and t.answers[0] not in plain


# ------------------------------------------------------------------ the gate


def test_noisy_results_never_hold_the_answer_nor_redaction_marks(wk, bridge, tiny_engine):
    """Noisy results for queries that reach the answer: an engine that states it anyway is
    regenerated, then replaced by the noisy fallback (facts that involve no queried entity)."""
    reqs = [request(t, t.supporting_titles[1], f"n-{i}") for i, t in enumerate(bridge[:24])]
    assert all(wk.lookup(r).reached_answer for r in reqs)

    def leak(prompt, params, call):
        answer = next(r.answers[0] for r in reqs if f"Search query: {r.query}\n" in prompt)
        return f"Doc 1 (Title: Notes) Everyone knows it is {answer}.\nDoc 2 (Title: More) Unrelated text here."

    for engine in (CannedEngine(leak), tiny_engine):
        sim = SimulatedSearch(engine, curriculum=Fixed(1.0), knowledge=wk, max_regenerations=1,
                              sampling=SamplingParams(max_new_tokens=8, seed=0))
        docs, infos = sim.search_with_info(reqs)
        assert {i["mode"] for i in infos} == {NOISY}
        assert answer_rate(docs, reqs) == 0.0
        assert not any("[redacted]" in d.title + d.text for ds in docs for d in ds)
    leaked = [i for i in SimulatedSearch(CannedEngine(leak), curriculum=Fixed(1.0), knowledge=wk,
                                         max_regenerations=0).search_with_info(reqs)[1]]
    assert {(i["gate"], i["reason"], i["fallback"]) for i in leaked} == {("fallback", "leak", True)}


def test_titles_come_from_the_knowledge_or_the_text_never_the_query(wk, bridge):
    t = bridge[0]
    first = t.supporting_titles[0]
    query = f"{first} biography and career"

    def reply(prompt, params, call):
        return (f"Doc 1 (Title: {query}) {first} was a well known figure.\n"
                f"Doc 2: {query} is a common search.\n"
                "Doc 3: Old records describe the market square.")

    sim = SimulatedSearch(CannedEngine(reply), curriculum=Fixed(0.0), knowledge=wk, gate=False)
    (docs,) = sim.search([request(t, query)])
    assert [d.title for d in docs] == [first, first, "Old records describe the market square"]
    assert all(d.title != query for d in docs)
    garbage = SimulatedSearch(CannedEngine(lambda *a: "Doc 1: asdf qwerty was here."), curriculum=Fixed(0.0),
                              knowledge=wk, gate=False)
    assert garbage.search([request(t, "asdf qwerty")])[0][0].title == "Untitled"


def test_a_contradiction_is_flagged_and_replaced(world, wk, bridge):
    t = next(t for t in bridge if t.template == "person_birth_country")
    person = t.supporting_titles[0]
    kn = wk.lookup(request(t, person))
    born = next(f.object for f in kn.facts if f.relation == "born_in" and f.subject == person)
    wrong = next(e.name for e in world.entities if e.type == "city" and e.name != born)
    engine = CannedEngine(lambda *a: f"Doc 1 (Title: {person}) {person} was born in {wrong} and became famous.")
    sim = SimulatedSearch(engine, curriculum=Fixed(0.0), knowledge=wk, max_regenerations=1)
    (docs,), (info,) = sim.search_with_info([request(t, person)])
    assert (info["gate"], info["reason"], info["fallback"], info["attempts"]) == ("fallback", "consistency", True, 2)
    assert docs[0].title == person and f"born in {born}" in docs[0].text and wrong not in " ".join(d.text for d in docs)
    assert not any(contradictions(d.text, kn) for d in docs)
    s = sim.stats()
    assert s["failed_consistency"] == 1 and s["fallbacks"] == 1 and s["fallback_share"] == 1.0
    right = CannedEngine(lambda *a: f"Doc 1 (Title: {person}) {person} was born in {born}.")
    (ok,), (info,) = SimulatedSearch(right, curriculum=Fixed(0.0), knowledge=wk).search_with_info([request(t, person)])
    assert info["gate"] == "pass" and not info["fallback"] and ok[0].text == f"{person} was born in {born}."


def test_useful_results_must_name_the_queried_entity_and_state_a_reached_answer(wk, bridge):
    t = bridge[0]
    bearing = t.supporting_titles[1]
    off_topic = CannedEngine(lambda *a: "Doc 1 (Title: Weather) It rained all week in the hills.")
    (docs,), (info,) = SimulatedSearch(off_topic, curriculum=Fixed(0.0), knowledge=wk,
                                       max_regenerations=0).search_with_info([request(t, bearing)])
    assert info["reason"] == "relevance" and info["fallback"] and contains_answer(docs, t.answers)
    vague = CannedEngine(lambda *a: f"Doc 1 (Title: {bearing}) {bearing} is well known.")
    (docs,), (info,) = SimulatedSearch(vague, curriculum=Fixed(0.0), knowledge=wk,
                                       max_regenerations=0).search_with_info([request(t, bearing)])
    assert info["reason"] == "answer_missing" and contains_answer(docs, t.answers)


def test_a_document_that_copies_the_prompt_is_replaced(wk, bridge):
    t = bridge[0]
    first = t.supporting_titles[0]
    kn = wk.lookup(request(t, first))
    echo = CannedEngine(lambda *a: f"Doc 1 (Title: {first}) The search index holds these facts for the query: "
                                   + " ".join(kn.sentences))
    sim = SimulatedSearch(echo, curriculum=Fixed(0.0), knowledge=wk, max_regenerations=0)
    (docs,), (info,) = sim.search_with_info([request(t, first)])
    assert info["reason"] == "prompt_echo" and info["fallback"] and sim.stats()["failed_prompt_echo"] == 1
    assert not any("search index" in d.text for d in docs)


def test_consistency_precision_on_the_hand_labelled_sample(wk, capsys):
    """The figures quoted in consistency.py's docstring."""
    rows = json.loads(SAMPLE.read_text())["documents"]
    assert len(rows) == 44 and sum(r["contradicts"] for r in rows) == 22
    flagged = [bool(contradictions(r["text"], wk.lookup(SearchRequest(r["query"], top_k=3)))) for r in rows]
    tp = sum(f and r["contradicts"] for f, r in zip(flagged, rows))
    precision, recall = tp / sum(flagged), tp / 22
    with capsys.disabled():
        print(f"\nconsistency check on {len(rows)} hand-labelled documents: precision {precision:.2f} "
              f"({tp} of {sum(flagged)} flagged), recall {recall:.2f}")
    assert precision >= 0.95 and recall >= 0.8


def test_consistency_never_flags_the_worlds_own_articles(world, wk):
    flagged = [d.title for d in world.documents
               if contradictions(d.text, wk.lookup(SearchRequest(d.title, top_k=3)))]
    assert len(world.documents) > 1000 and flagged == []


# ------------------------------------------------------------------ engine failures


def test_engine_failures_are_counted_warned_and_never_pass(wk, bridge):
    reqs = [request(t, t.supporting_titles[1], f"e-{i}") for i, t in enumerate(bridge[:10])]
    sim = SimulatedSearch(CannedEngine(lambda *a: "  "), curriculum=Fixed(0.0), knowledge=wk, max_regenerations=1)
    with pytest.warns(RuntimeWarning, match="20 of 20 outputs failed"):
        docs, infos = sim.search_with_info(reqs)
    assert all(i["engine_failure"] and i["fallback"] and i["reason"] == "engine_failure" for i in infos)
    assert answer_rate(docs, reqs) == 1.0  # the fallback from the reached articles' facts, marked as such
    s = sim.stats()
    assert (s["engine_failures"], s["engine_outputs"], s["engine_failure_share"]) == (20, 20, 1.0)
    assert s["engine_failure_fallbacks"] == 10 and s["useful_first_pass"] == 0

    class Down(CannedEngine):
        def generate(self, conversations, params=None, *, seeds=None):
            raise TimeoutError("server timed out")

    down = SimulatedSearch(Down(None), curriculum=Fixed(0.0), knowledge=wk, max_regenerations=0)
    with pytest.warns(RuntimeWarning, match="failed"):
        _, infos = down.search_with_info(reqs)
    assert all(i["engine_failure"] for i in infos) and down.stats()["engine_failures"] == 10
    few = SimulatedSearch(CannedEngine(lambda *a: None), curriculum=Fixed(0.0), knowledge=wk, max_regenerations=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # below 8 outputs: counted, no warning yet
        few.search_with_info(reqs[:2])
    assert few.stats()["engine_failures"] == 2


# ------------------------------------------------------------------ wiring


def test_from_config_picks_the_knowledge_and_keys_the_cache_on_it(tiny_model_dir):
    opts = {"engine": "transformers", "model": str(tiny_model_dir), "dtype": "float32"}
    world_sim = SimulatedSearch.from_config(EnvConfig(backend="simulator", backend_options=opts))
    assert isinstance(world_sim.knowledge, WorldKnowledge) and "knowledge=world:0:" in world_sim.identity()
    loaded = SimulatedSearch.from_config(EnvConfig(dataset="data.jsonl", backend="simulator", backend_options=opts))
    assert isinstance(loaded.knowledge, AnswerHintKnowledge)
    identities = {world_sim.identity(), loaded.identity()}
    for name in ("answer_hint", "none", "oracle"):
        sim = SimulatedSearch.from_config(EnvConfig(backend="simulator", backend_options={**opts, "knowledge": name}))
        assert sim.knowledge_name == name
        identities.add(sim.identity())
    assert len(identities) == 5
    with pytest.raises(ValueError, match="choose one of world, answer_hint, none, oracle"):
        SimulatedSearch.from_config(EnvConfig(backend="simulator", backend_options={**opts, "knowledge": "wiki"}))
    with pytest.raises(ValueError, match="KnowledgeSource or 'oracle'"):
        SimulatedSearch(world_sim.engine, knowledge="world")
    r = SearchRequest("q", answers=("a",))
    with_titles = SearchRequest("q", answers=("a",), supporting_titles=("A", "B"))
    assert world_sim.cache_key_fields(r) != world_sim.cache_key_fields(with_titles)


def test_env_sends_the_tasks_supporting_titles(world):
    from zerosearch_env import SearchEnv

    seen: list[SearchRequest] = []
    backend = FunctionSearch(lambda reqs: seen.extend(reqs) or [[] for _ in reqs])
    task = next(t for t in world.split("test") if t.kind == "bridge")
    env = SearchEnv(backend=backend, tasks=[task], max_turns=3)
    env.reset(seed=0)
    env.step("<search>anything</search>")
    assert seen[0].supporting_titles == task.supporting_titles and len(task.supporting_titles) == 2
    plain = Task("t", "Q?", ("a",))
    env = SearchEnv(backend=backend, tasks=[plain], max_turns=3)
    env.reset(seed=0)
    env.step("<search>x</search>")
    assert seen[-1].supporting_titles == ()


@pytest.mark.slow
def test_real_small_model_grounded_on_the_world(world, wk, capsys):
    """SmolLM2-135M-Instruct writing world-grounded results for bridge-entity queries (the answer
    reached) and first-hop queries: passing or fallback results hold the answer only where the
    query reached it; the fallback and engine-failure shares are printed."""
    import torch

    tasks = [t for t in world.split("test") if t.kind == "bridge"][:6]
    reqs = [request(t, q, f"slow-{i}-{j}") for i, t in enumerate(tasks) for j, q in enumerate(t.supporting_titles)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sim = SimulatedSearch(TransformersEngine(), curriculum=Fixed(0.0), knowledge=wk, words_per_doc=20,
                              max_regenerations=1, sampling=SamplingParams(max_new_tokens=96, seed=0))
        docs, infos = sim.search_with_info(reqs)
    finally:
        torch.set_num_threads(threads)
    s = sim.stats()
    with capsys.disabled():
        print(f"\nSmolLM2 grounded on world 0, {len(reqs)} requests: gate {[i['gate'] for i in infos]}, "
              f"reasons {[i['reason'] for i in infos]}, fallback share {s['fallback_share']:.2f}, "
              f"engine-failure share {s['engine_failure_share']:.2f}")
    for d, r in zip(docs, reqs):
        assert contains_answer(d, r.answers) == bool(wk.lookup(r).reached_answer)


def test_trl_search_tool_sends_the_rows_supporting_titles():
    from agents.trl_integration import SearchToolEnv

    seen: list[SearchRequest] = []
    cfg = EnvConfig(backend="bm25", top_k=1)
    SearchToolEnv._shared[cfg.model_dump_json()] = FunctionSearch(lambda reqs: seen.extend(reqs) or [[] for _ in reqs])
    try:
        env = SearchToolEnv(cfg)
        env.reset(question="Q?", answers=["a"], task_id="t", supporting_titles=["First Hop", "Second Hop"])
        env.search("first hop")
        env.reset(question="Q?", answers=["a"], task_id="u")
        env.search("other")
    finally:
        SearchToolEnv._shared.pop(cfg.model_dump_json())
    assert [r.supporting_titles for r in seen] == [("First Hop", "Second Hop"), ()]


# ------------------------------------------------------------------ support (closed-world) check


def test_support_never_rejects_the_worlds_own_articles_nor_the_fallbacks(world, wk):
    rejected = []
    for d in world.documents:
        kn = wk.lookup(SearchRequest(d.title, top_k=3))
        fallback = fallback_documents(kn, USEFUL, 3, 600)
        if unsupported([f"{d.title}\n{d.text}"], kn) or unsupported([f"{x.title}\n{x.text}" for x in fallback], kn):
            rejected.append(d.title)
    assert len(world.documents) > 1000 and rejected == []


def test_support_rejects_every_hand_labelled_error_of_the_small_simulator(wk):
    """The 25 gate-passing (before this check) useful documents of tests/data/support_sample.json,
    labelled by hand: 10 state something the world contradicts or does not have. All 10 are
    rejected; of the 15 correct ones, 6 are rejected too (misspelt names, a timestamp, a cut-off
    name), so they go to regeneration or the fallback, and 9 pass."""
    sample = json.loads((Path(__file__).parent / "data" / "support_sample.json").read_text(encoding="utf-8"))
    docs = sample["documents"]
    flagged = [bool(unsupported([f"{d['title']}\n{d['text']}"], wk.lookup(SearchRequest(d["query"], top_k=3))))
               for d in docs]
    errors = [f for f, d in zip(flagged, docs) if d["error"]]
    correct = [f for f, d in zip(flagged, docs) if not d["error"]]
    assert (len(errors), sum(errors)) == (10, 10)
    assert (len(correct), sum(correct)) == (15, 6)


@pytest.mark.parametrize("text, ok", [
    ("Moubam Kambiav was a physician. He was born in Shuxgiald.", True),
    ("Moubam Kambiav was a physician born in 1917 in Shuxgiald.", True),
    ("Moubam Kambiav was a German physician.", False),          # invented nationality
    ("Moubam Kambiav died in 1917.", False),                    # invented event
    ("The Diastant Academy was founded by Moubam Kambiav.", False),  # the founder is Vilgaev Zyhaev
    ("Moubam Kambiav worked for the Diastant Academy in Shuxgiald.", False),  # not where it is headquartered
    ("Moubam Kambiav is the founder of the Diastant Academy.", False),
])
def test_support_of_single_claims(wk, text, ok):
    kn = wk.lookup(SearchRequest("Diastant Academy", top_k=3))
    assert (unsupported([text], kn) == []) is ok, unsupported([text], kn)


def test_document_fallback_keeps_the_engine_documents_that_pass_alone(world, wk, bridge):
    t = next(t for t in bridge if t.template == "person_birth_country")
    person = t.supporting_titles[0]
    born = next(f.object for f in wk.lookup(request(t, person)).facts if f.relation == "born_in" and f.subject == person)
    req = request(t, f"{person} {born}")  # two articles: the person's and the birthplace's
    kn = wk.lookup(req)
    wrong = next(e.name for e in world.entities if e.type == "city" and e.name != born)
    text = (f"Doc 1 (Title: {person}) {person} was born in {born}.\n"
            f"Doc 2 (Title: {wrong}) {person} was born in {wrong}.")
    by_result = SimulatedSearch(CannedEngine(lambda *a: text), curriculum=Fixed(0.0), knowledge=wk, max_regenerations=0)
    (whole,), (info,) = by_result.search_with_info([req])
    assert (info["gate"], info["reason"], info["own_documents"]) == ("fallback", "consistency", 0)
    by_doc = SimulatedSearch(CannedEngine(lambda *a: text), curriculum=Fixed(0.0), knowledge=wk, max_regenerations=0,
                             fallback_unit="document")
    assert by_doc.identity() != by_result.identity()  # a cache filled under one unit is not reused by the other
    (docs,), (info,) = by_doc.search_with_info([req])
    assert (info["gate"], info["reason"], info["fallback"], info["own_documents"]) == ("partial", "consistency", True, 1)
    assert docs[0].text == f"{person} was born in {born}."  # the engine's passing document, first
    assert wrong not in " ".join(d.text for d in docs) and not any(contradictions(d.text, kn) for d in docs)
    fill = [d.title for d in whole if d.title != person][:2]  # the fallback's other articles fill the rest
    assert [d.title for d in docs[1:]] == fill and born in fill
    s = by_doc.stats()
    assert (s["partial_fallbacks"], s["kept_documents"], s["fallbacks"], s["partial_share"]) == (1, 1, 0, 1.0)
    # no document passes alone: the whole result falls back, as with the result unit
    bad = SimulatedSearch(CannedEngine(lambda *a: f"Doc 1 (Title: {person}) {person} was born in {wrong}."),
                          curriculum=Fixed(0.0), knowledge=wk, max_regenerations=0, fallback_unit="document")
    (docs,), (info,) = bad.search_with_info([req])
    assert info["gate"] == "fallback" and info["own_documents"] == 0 and [d.title for d in docs] == [d.title for d in whole]
    with pytest.raises(ValueError, match="fallback_unit"):
        SimulatedSearch(CannedEngine(lambda *a: text), knowledge=wk, fallback_unit="sentence")
