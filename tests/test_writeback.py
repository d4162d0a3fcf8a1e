"""WriteBackCorpus: BM25 agreement with BM25Search, the gate, provenance, exact rollback, save/load,
hostile input. Runs over the built-in world 0 (1,440 articles) in a few seconds."""

from __future__ import annotations

import json
import re

import pytest

from zerosearch_env.data.world import generate_world
from zerosearch_env.search.base import Document, SearchRequest
from zerosearch_env.search.bm25 import BM25Search
from zerosearch_env.search.writeback import (
    TEMPLATE_RELATIONS,
    GateRejectedError,
    Provenance,
    WriteBackCandidate,
    WriteBackCorpus,
    match_question,
)


@pytest.fixture(scope="module")
def world():
    return generate_world(0)


class FakeClock:
    """Seconds that advance by one per call."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def corpus(world):
    return WriteBackCorpus(world.documents, clock=FakeClock())


def _by_title(world):
    return {d.title: d for d in world.documents}


def _candidate(world, task, answer=None, text=None, cited=None):
    docs = _by_title(world)
    answer = task.answers[0] if answer is None else answer
    cited = tuple(docs[t].id for t in task.supporting_titles) if cited is None else cited
    return WriteBackCandidate(task.question, answer, cited, f"{task.question} {answer}." if text is None else text)


def _tasks(world, kind, n, split="test"):
    return [t for t in world.tasks if t.kind == kind and t.split == split][:n]


# ----- ranking -----------------------------------------------------------------------------------

def test_ranks_like_bm25search_on_world(world, tmp_path):
    """Same scores at every rank; the same documents except where scores tie at the cut-off
    (bm25s breaks ties arbitrarily, we break them by insertion order)."""
    bm = BM25Search(world.documents, index_dir=tmp_path / "bm25")
    ours = WriteBackCorpus(world.documents)
    queries = [t.question for t in world.tasks[::9]] + [d.title for d in world.documents[::7]]
    queries += ["", "the of and", "Stevni Stevni Stevni capital", "ünïcödé ｆｕｌｌｗｉｄｔｈ Stevni"]
    k = 5
    theirs_all = bm.search([SearchRequest(q, top_k=k) for q in queries])
    mine_all = ours.search([SearchRequest(q, top_k=k) for q in queries])
    strict, untied_exact, untied = 0.0, 0, 0
    for q, theirs, mine in zip(queries, theirs_all, mine_all):
        assert len(theirs) == len(mine), q
        for a, b in zip(theirs, mine):
            assert b.score == pytest.approx(a.score, rel=1e-5), q  # bm25s keeps float32 scores
        if not mine:
            continue
        full = dict(ours.ranked(q))
        kth = mine[-1].score
        # every document BM25Search returns scores at least our k-th score (ties at the cut-off)
        assert all(full[d.id] >= kth * (1 - 1e-6) for d in theirs), q
        strict += len({d.id for d in theirs} & {d.id for d in mine}) / len(mine)
        beyond = ours.ranked(q)[len(mine): len(mine) + 1]
        distinct_scores = len({round(d.score, 5) for d in mine}) == len(mine)
        if distinct_scores and (not beyond or beyond[0][1] < kth * (1 - 1e-6)):
            untied += 1
            untied_exact += [d.id for d in theirs] == [d.id for d in mine]
    assert untied > 50
    assert untied_exact == untied  # without ties, the exact same ranking
    assert strict / len(queries) > 0.7


def test_incremental_adds_rank_like_a_rebuild(world):
    """Statistics are current at query time: adding documents one by one ranks like building from
    scratch over the grown corpus."""
    base = world.documents[:400]
    extra = world.documents[400:520]
    grown = WriteBackCorpus(base)
    for d in extra:
        grown._insert(d, None)
    rebuilt = WriteBackCorpus(base + extra)
    queries = [t.question for t in world.tasks[:300]]
    for q in queries:
        assert grown.ranked(q) == rebuilt.ranked(q)
    assert grown.state_bytes() == rebuilt.state_bytes()


# ----- the gate ----------------------------------------------------------------------------------

def test_gate_accepts_supported_single_and_multi_hop(world, corpus):
    for task in _tasks(world, "single", 5) + _tasks(world, "bridge", 5) + _tasks(world, "comparison", 3):
        decision = corpus.propose(_candidate(world, task))
        assert decision.accepted, (task, decision)
        assert decision.reason == "accepted"
        assert decision.checks == {"support": True, "attribution": True, "novelty": True}
        assert decision.scores["support"] == 1.0 and decision.scores["attribution"] == 1.0
        assert decision.scores["max_similarity"] < corpus.novelty_threshold


def test_gate_rejects_unsupported_answer(world, corpus):
    task = _tasks(world, "single", 1)[0]
    other_city = next(d.title for d in world.documents if " is a city in " in d.text
                      and d.title not in _by_title(world)[task.supporting_titles[0]].text)
    decision = corpus.propose(_candidate(world, task, answer=other_city))
    assert not decision.accepted
    assert "unsupported" in decision.reasons and decision.checks["support"] is False
    assert decision.scores["support"] == 0.0


def test_gate_rejects_an_answer_taken_from_an_off_topic_citation(world, corpus):
    """Citing the article about the wrong city makes the wrong city "stated by a cited document";
    the path check rejects it: the question does not lead to that article."""
    task = _tasks(world, "single", 1)[0]
    source = _by_title(world)[task.supporting_titles[0]]
    wrong = next(d for d in world.documents if " is a city in " in d.text and d.title not in source.text)
    c = _candidate(world, task, answer=wrong.title, cited=(source.id, wrong.id))
    d = corpus.propose(c)
    assert not d.accepted and d.reason == "answer_off_path"
    assert d.scores["support_anywhere"] == 1.0 and d.scores["support"] == 0.0
    assert WriteBackCorpus(world.documents, require_path=False, require_relation=False).propose(c).accepted
    # without the path check the relation check still rejects it: no cited sentence says the person was born there
    assert WriteBackCorpus(world.documents, require_path=False).propose(c).reason == "relation_unsupported"
    # a bridge: the question names the person, the person's article names the organisation
    bridge = _tasks(world, "bridge", 1)[0]
    assert corpus.propose(_candidate(world, bridge)).accepted
    first_hop_only = _candidate(world, bridge, cited=(_by_title(world)[bridge.supporting_titles[0]].id,))
    assert corpus.propose(first_hop_only).reason == "unsupported"


def test_gate_rejects_fake_and_irrelevant_citations(world, corpus):
    task = _tasks(world, "single", 1)[0]
    fake = corpus.propose(_candidate(world, task, cited=("w0-e999999",)))
    assert not fake.accepted and fake.reason == "unknown_citation"
    assert fake.checks["attribution"] is False and fake.scores["attribution"] == 0.0
    real_plus_fake = _candidate(world, task)
    real_plus_fake = WriteBackCandidate(real_plus_fake.question, real_plus_fake.answer,
                                        real_plus_fake.cited_ids + ("made-up",), real_plus_fake.text)
    d = corpus.propose(real_plus_fake)
    assert not d.accepted and "unknown_citation" in d.reasons and d.scores["attribution"] == 0.5
    # a real document that holds nothing of the answer or the question's entities
    unrelated = next(doc for doc in world.documents if doc.title not in task.question
                     and task.answers[0] not in doc.text)
    c = _candidate(world, task)
    d = corpus.propose(WriteBackCandidate(c.question, c.answer, c.cited_ids + (unrelated.id,), c.text))
    assert not d.accepted and d.reason == "unattributed_citation"
    none = corpus.propose(WriteBackCandidate(c.question, c.answer, (), c.text))
    assert not none.accepted and "no_citations" in none.reasons


def test_gate_rejects_near_duplicates(world, corpus):
    task = _tasks(world, "single", 1)[0]
    source = _by_title(world)[task.supporting_titles[0]]
    for text in (source.text, source.text.upper(), "According to the encyclopedia, " + source.text,
                 " ".join(reversed(source.text.split(". ")))):
        d = corpus.propose(_candidate(world, task, text=text))
        assert not d.accepted and d.reasons == ("near_duplicate",), (text, d)
        assert d.nearest_id == source.id and d.scores["max_similarity"] >= corpus.novelty_threshold


def test_gate_text_must_state_the_answer_from_the_sources(world, corpus):
    task = _tasks(world, "single", 1)[0]
    d = corpus.propose(_candidate(world, task, text=f"{task.question} Nobody knows."))
    assert not d.accepted and "answer_not_in_text" in d.reasons
    invented = f"{task.question} {task.answers[0]}. Zorblat Quexian Moorvang later crowned Plinth Hyxtorr emperor."
    d = corpus.propose(_candidate(world, task, text=invented))
    assert not d.accepted and d.reason == "ungrounded_text" and d.scores["grounding"] < corpus.min_grounding
    d = corpus.propose(_candidate(world, task, answer="the"))  # normalises to nothing
    assert not d.accepted and d.reason == "empty_answer"


def _template(world, name, split="test"):
    return [t for t in world.tasks if t.template == name and split in (None, t.split)]


def _doc_of(world, task, hop):
    return _by_title(world)[task.supporting_titles[hop]]


def test_every_world_template_is_read_back_from_its_questions(world):
    """The relation check knows every template the world asks, and reads each question back as it."""
    from zerosearch_env.data.world import TEMPLATES

    assert set(TEMPLATE_RELATIONS) == set(TEMPLATES)
    for task in world.tasks:
        rule, subjects = match_question(task.question)
        assert rule.template == task.template, task.question
        assert len(subjects) == (2 if task.kind == "comparison" else 1)
    assert match_question("Why is the sky blue?") is None


def test_gate_rejects_a_wrong_name_or_year_copied_from_the_right_article_single_hop(world, corpus):
    """The article the question leads to holds other names and years; only the one that the
    question's relation links to its subject is supported (the lexical gate took them all)."""
    lexical = WriteBackCorpus(world.documents, require_relation=False)
    task = _template(world, "person_birthplace")[0]
    article = _doc_of(world, task, 0)
    year = re.search(r"born in \w+ in (\d+)", article.text).group(1)
    employer = re.search(r"worked for the ([^.]+)\.", article.text).group(1)
    assert corpus.propose(_candidate(world, task)).scores["relation"] == 1.0
    for wrong in (year, employer):
        c = _candidate(world, task, answer=wrong)
        d = corpus.propose(c)
        assert not d.accepted and d.reason == "relation_unsupported" and d.checks["support"] is False
        assert d.scores["relation"] == 0.0 and d.scores["support"] == 1.0  # on the path, lexically stated
        assert lexical.propose(c).accepted
    # the year question takes the year and not the city; an organisation's year is not its founder
    year_task = next(t for t in _template(world, "person_birth_year") if t.supporting_titles == task.supporting_titles)
    assert corpus.propose(_candidate(world, year_task)).accepted
    assert corpus.propose(_candidate(world, year_task, answer=task.answers[0])).reason == "relation_unsupported"
    org_task = _template(world, "org_founder")[0]
    org_text = _doc_of(world, org_task, 0).text
    founded = re.search(r"founded in (\d+)", org_text).group(1)
    hq = re.search(r"headquartered in ([^.]+)\.", org_text).group(1)
    assert corpus.propose(_candidate(world, org_task)).accepted
    for wrong in (founded, hq):
        assert corpus.propose(_candidate(world, org_task, answer=wrong)).reason == "relation_unsupported"


def test_gate_rejects_a_wrong_name_or_year_copied_from_the_right_articles_bridge(world, corpus):
    """Bridge: the answer must be the second relation's object for the entity the first relation
    reaches, not another span of either cited article (the bridge entity itself included)."""
    lexical = WriteBackCorpus(world.documents, require_relation=False)
    task = _template(world, "person_employer_year")[0]  # the person's article also states a birth year
    person = _doc_of(world, task, 0)
    birth_year = re.search(r"born in \w+ in (\d+)", person.text).group(1)
    org = _doc_of(world, task, 1)
    assert corpus.propose(_candidate(world, task)).accepted
    for wrong in (birth_year, org.title):
        c = _candidate(world, task, answer=wrong)
        d = corpus.propose(c)
        assert not d.accepted and "relation_unsupported" in d.reasons, (wrong, d)
    assert lexical.propose(_candidate(world, task, answer=org.title)).accepted
    # founder's birthplace: the organisation's headquarters city is a city in the same cited article
    task = next(t for t in _template(world, "org_founder_birthplace")
                if re.search(r"headquartered in ([^.]+)\.", _doc_of(world, t, 0).text).group(1) != t.answers[0])
    hq = re.search(r"headquartered in ([^.]+)\.", _doc_of(world, task, 0).text).group(1)
    assert corpus.propose(_candidate(world, task)).accepted
    founder = task.supporting_titles[1]
    c = _candidate(world, task, answer=hq, text=f"{task.question} The founder, {founder}: {hq}.")
    assert corpus.propose(c).reason == "relation_unsupported" and lexical.propose(c).accepted
    # birth country: the city is the bridge, not the answer; the hop-2 article alone does not reach the subject
    task = _template(world, "person_birth_country")[0]
    city = _doc_of(world, task, 1)
    assert corpus.propose(_candidate(world, task, answer=city.title)).reason == "relation_unsupported"
    only_hop2 = WriteBackCorpus(world.documents, require_path=False)
    assert only_hop2.propose(_candidate(world, task, cited=(city.id,))).reason == "relation_unsupported"


def test_gate_checks_which_of_the_two_compared_came_first(world, corpus):
    for task in _template(world, "compare_org_founded")[:3] + _template(world, "compare_person_born")[:3]:
        right = corpus.propose(_candidate(world, task))
        assert right.accepted and right.scores["relation"] == 1.0
        other = next(t for t in task.supporting_titles if t != task.answers[0])
        d = corpus.propose(_candidate(world, task, answer=other))
        assert not d.accepted and d.reason == "relation_unsupported"
        # both years must be stated by a cited document
        one = _candidate(world, task, cited=(_by_title(world)[task.answers[0]].id,))
        assert corpus.propose(one).scores["relation"] == 0.0


def test_gate_accepts_aliases_that_name_one_entity_only(world, corpus):
    """A family name or an organisation's stem names one entity (it is in one title); a given
    name shared by several people does not, nor a type word such as "Guild"."""
    task = _template(world, "org_founder")[0]
    given, family = task.answers[0].split(" ", 1)
    assert task.answers[-1] == family
    assert corpus.propose(_candidate(world, task, answer=family)).accepted
    task = next(t for t in _template(world, "org_founder")
                if sum(t.answers[0].split()[0] in d.title.split() for d in world.documents) > 1)
    given = task.answers[0].split()[0]
    assert corpus.propose(_candidate(world, task, answer=given)).reason == "relation_unsupported"
    emp = _template(world, "person_employer")[0]
    stem, kind = emp.answers[0].split(" ", 1)
    assert corpus.propose(_candidate(world, emp, answer=stem)).accepted
    assert corpus.propose(_candidate(world, emp, answer=kind)).reason == "relation_unsupported"


def test_accepted_write_backs_vouch_for_their_facts_forced_ones_do_not(world):
    """An accepted single-hop write-back states its fact (a hop of a later bridge); one forced in
    without the gate states nothing."""
    task = _template(world, "person_birth_country")[0]
    hop1 = next(t for t in _template(world, "person_birthplace", split=None)
                if t.supporting_titles == task.supporting_titles[:1])
    city = _doc_of(world, task, 1)
    for force in (False, True):
        corpus = WriteBackCorpus(world.documents, clock=FakeClock())
        if force:
            wb = corpus.add(_candidate(world, hop1, cited=(city.id,)), Provenance("ep-1", "v1"), force=True)
        else:
            wb = corpus.add(_candidate(world, hop1), Provenance("ep-1", "v1"))
        c = _candidate(world, task, cited=(wb.doc_id, city.id),
                       text=f"{hop1.question} {hop1.answers[0]}. {task.question} {task.answers[0]}.")
        assert corpus.propose(c).scores["relation"] == (0.0 if force else 1.0)
    # an accepted write-back vouches for its answer, not for other sentences its text holds
    corpus = WriteBackCorpus(world.documents, clock=FakeClock())
    person = _doc_of(world, hop1, 0)
    other_city = next(d for d in world.documents if " is a city in " in d.text and d.title not in person.text)
    family = hop1.question.removeprefix("In which city was ").removesuffix(" born?").split()[-1]
    year_task = next(t for t in _template(world, "person_birth_year", split=None)
                     if t.supporting_titles == hop1.supporting_titles)
    smuggled = (f"{hop1.question} {hop1.answers[0]}. {family} was born in {hop1.answers[0]} in 1701. "
                f"Not {other_city.title}.")
    wb = corpus.add(_candidate(world, hop1, text=smuggled, cited=(person.id, other_city.id)), Provenance("ep-2", "v1"))
    lie = _candidate(world, year_task, answer="1701", cited=(wb.doc_id,), text=f"{year_task.question} 1701.")
    assert corpus.propose(lie).scores["relation"] == 0.0


def test_relation_check_is_a_saved_gate_setting(world, tmp_path):
    corpus = WriteBackCorpus(world.documents, require_relation=False)
    assert corpus.gate_config()["require_relation"] is False
    corpus.save(tmp_path / "c")
    assert WriteBackCorpus.load(tmp_path / "c").require_relation is False
    meta = json.loads((tmp_path / "c" / "meta.json").read_text(encoding="utf-8"))
    del meta["gate"]["require_relation"]  # a corpus saved before the relation check existed
    (tmp_path / "c" / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    assert WriteBackCorpus.load(tmp_path / "c").require_relation is False
    with pytest.raises(TypeError, match="require_relation"):
        WriteBackCorpus(world.documents, require_relation=1)


def test_relation_check_stays_fast_on_hostile_documents(world):
    """A base document of long sentences built to make the fact patterns backtrack."""
    import time

    sentence = ("Velmora was born in " * 40)[:499]
    evil = Document("evil", "Velmora", ". ".join(["Velmora was born in " * 9000] + [sentence] * 300))
    corpus = WriteBackCorpus(list(world.documents[:50]) + [evil])
    c = WriteBackCandidate("In which city was Velmora born?", "Velmora", ("evil",), "In which city was Velmora born? Velmora.")
    start = time.perf_counter()
    d = corpus.propose(c)
    assert time.perf_counter() - start < 2.0
    assert d.scores["relation"] in (0.0, 1.0)


def test_questions_no_template_words_keep_the_lexical_check(world, corpus):
    task = _tasks(world, "single", 1)[0]
    c = _candidate(world, task)
    free = WriteBackCandidate(f"Tell me: {task.question}", c.answer, c.cited_ids, f"{task.question} {c.answer}.")
    d = corpus.propose(free)
    assert d.accepted and "relation" not in d.scores


def test_optional_verifier_hook(world):
    calls = []

    def verifier(premise: str, hypothesis: str) -> float:
        calls.append((premise, hypothesis))
        return 0.9 if "Nowhere" not in hypothesis else 0.1

    corpus = WriteBackCorpus(world.documents, verifier=verifier)
    task = _tasks(world, "single", 1)[0]
    ok = corpus.propose(_candidate(world, task))
    assert ok.accepted and ok.scores["entailment"] == 0.9
    assert task.answers[0] in calls[0][0] and calls[0][1] == f"{task.question} {task.answers[0]}."
    bad = corpus.propose(_candidate(world, task, text=f"{task.question} {task.answers[0]}. Nowhere."))
    assert not bad.accepted and "not_entailed" in bad.reasons


# ----- add, provenance, rollback ------------------------------------------------------------------

def test_every_accepted_document_has_provenance_and_is_served(world, corpus):
    tasks = _tasks(world, "single", 4) + _tasks(world, "bridge", 4)
    records = [corpus.add(_candidate(world, t), Provenance(f"ep-{i}", "policy-v1", round=1))
               for i, t in enumerate(tasks)]
    assert len(corpus.records) == len(tasks) == len(corpus) - len(world.documents)
    times = [r.time for r in corpus.records]
    assert times == sorted(times) and len(set(times)) == len(times)  # from the injected clock
    for i, (task, r) in enumerate(zip(tasks, corpus.records)):
        assert r.provenance == Provenance(f"ep-{i}", "policy-v1", 1)
        assert r.gate["accepted"] and set(r.gate["scores"]) >= {"support", "attribution", "novelty", "grounding"}
        assert not r.forced and r.candidate.answer == task.answers[0]
        assert corpus.get(r.doc_id).text == r.candidate.text
        hits = corpus.search([SearchRequest(f"{task.question} {task.answers[0]}", top_k=10)])[0]
        assert r.doc_id in [h.id for h in hits]
    assert [r.doc_id for r in records] == [r.doc_id for r in corpus.records]
    assert corpus.stats()["writeback_docs"] == len(tasks)


def test_add_refuses_rejected_candidates_unless_forced(world, corpus):
    task = _tasks(world, "single", 1)[0]
    wrong = _candidate(world, task, answer="Atlantis", text=f"{task.question} Atlantis.")
    before = corpus.state_bytes()
    with pytest.raises(GateRejectedError) as err:
        corpus.add(wrong, Provenance("ep-x", "policy-v1"))
    assert err.value.decision.reason == "unsupported"
    assert corpus.state_bytes() == before
    r = corpus.add(wrong, {"episode_id": "ep-x", "model_version": "policy-v1", "round": 2}, force=True)
    assert r.forced and not r.gate["accepted"] and r.gate["reason"] == "unsupported"
    assert corpus.get(r.doc_id) is not None
    with pytest.raises(ValueError, match="already in the corpus"):
        corpus.add(wrong, Provenance("ep-x", "policy-v1", 2), force=True)


def test_rollback_restores_the_index_byte_for_byte(world, corpus):
    queries = [t.question for t in world.tasks[:40]]

    def results():
        return corpus.search([SearchRequest(q, top_k=5) for q in queries])

    before, before_results = corpus.state_bytes(), results()
    singles, bridges = _tasks(world, "single", 6), _tasks(world, "bridge", 6)
    for i, t in enumerate(singles):
        corpus.add(_candidate(world, t), Provenance(f"r1-{i}", "v1", round=1))
    after_round1, after_round1_results = corpus.state_bytes(), results()
    for i, t in enumerate(bridges):
        corpus.add(_candidate(world, t), Provenance(f"r2-{i}", "v2", round=2))
    assert corpus.state_bytes() != after_round1
    removed = corpus.rollback(round=2)
    assert len(removed) == len(bridges)
    assert corpus.state_bytes() == after_round1 and results() == after_round1_results
    assert corpus.rollback(model_version="v1") and corpus.state_bytes() == before
    assert results() == before_results
    assert [e["event"] for e in corpus.events].count("rollback") == 2  # the audit trail stays


def test_rollback_of_an_earlier_round_equals_never_having_added_it(world):
    singles, bridges = _tasks(world, "single", 5), _tasks(world, "bridge", 5)

    def build(rounds):
        c = WriteBackCorpus(world.documents, clock=lambda: 7.0)
        for r in rounds:
            for i, t in enumerate(singles if r == 1 else bridges):
                c.add(_candidate(world, t), Provenance(f"ep-{r}-{i}", "v", round=r))
        return c

    both, only_two = build([1, 2]), build([2])
    assert both.rollback(lambda rec: rec.provenance.round == 1)
    assert both.state_bytes(provenance=False) == only_two.state_bytes(provenance=False)
    # the records differ only in the gate's view at acceptance time (round 1 was there then)
    gates = lambda c: [r.gate for r in c.records]  # noqa: E731
    assert [r.doc_id for r in both.records] == [r.doc_id for r in only_two.records]
    assert [(r.provenance, r.time, r.candidate) for r in both.records] == \
        [(r.provenance, r.time, r.candidate) for r in only_two.records]
    assert gates(both) != gates(only_two)
    one = build([1])
    one.rollback(episode_id="ep-1-3")
    assert [r.provenance.episode_id for r in one.records] == [f"ep-1-{i}" for i in (0, 1, 2, 4)]


def test_rollback_cascades_to_documents_citing_removed_ones(world, corpus):
    task = _tasks(world, "single", 1)[0]
    first = corpus.add(_candidate(world, task), Provenance("ep-1", "v1", round=1))
    source = _by_title(world)[task.supporting_titles[0]]
    second_text = f"{source.title} was born in {task.answers[0]}. {source.text.split('. ')[-1]}"
    second = corpus.add(WriteBackCandidate(task.question, task.answers[0], (first.doc_id, source.id), second_text,
                                           title="Recap"), Provenance("ep-2", "v1", round=2))
    assert corpus.rollback(round=1) == [first.doc_id, second.doc_id]
    assert corpus.records == []
    third = corpus.add(_candidate(world, task), Provenance("ep-3", "v1", round=1))
    assert corpus.rollback(round=1, cascade=False) == [third.doc_id]
    with pytest.raises(ValueError, match="needs a predicate"):
        corpus.rollback()


# ----- save / load -------------------------------------------------------------------------------

def test_save_load_round_trip(world, tmp_path):
    corpus = WriteBackCorpus(world.documents, clock=FakeClock(), novelty_threshold=0.4)
    for i, t in enumerate(_tasks(world, "single", 3) + _tasks(world, "bridge", 3)):
        corpus.add(_candidate(world, t), Provenance(f"ep-{i}", "v1", round=i % 2))
    corpus.rollback(episode_id="ep-4")
    corpus.save(tmp_path / "a")
    loaded = WriteBackCorpus.load(tmp_path / "a")
    assert loaded.state_bytes() == corpus.state_bytes()
    assert loaded.events == corpus.events and loaded.novelty_threshold == 0.4
    queries = [SearchRequest(t.question, top_k=5) for t in world.tasks[:50]]
    assert loaded.search(queries) == corpus.search(queries)
    loaded.save(tmp_path / "b")
    for name in ("meta.json", "documents.jsonl", "provenance.jsonl", "events.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    lines = (tmp_path / "a" / "provenance.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["episode_id"] for x in lines] == ["ep-0", "ep-1", "ep-2", "ep-3", "ep-5"]
    # a tampered file is caught by the state hash
    prov = tmp_path / "a" / "provenance.jsonl"
    prov.write_text(prov.read_text(encoding="utf-8").replace('"round":0', '"round":9', 1), encoding="utf-8")
    with pytest.raises(ValueError, match="state hash"):
        WriteBackCorpus.load(tmp_path / "a")
    with pytest.raises(ValueError, match="meta.json"):
        WriteBackCorpus.load(tmp_path / "missing")


# ----- hostile input -----------------------------------------------------------------------------

def test_hostile_input_gets_clear_errors(world, corpus):
    task = _tasks(world, "single", 1)[0]
    good = _candidate(world, task)
    with pytest.raises(ValueError, match="characters long"):
        WriteBackCandidate(task.question, task.answers[0], good.cited_ids, "word " * 10_000)
    with pytest.raises(ValueError, match="surrogate"):
        WriteBackCandidate(task.question, task.answers[0] + "\ud800", good.cited_ids, good.text)
    with pytest.raises(TypeError, match="answer must be a str"):
        WriteBackCandidate(task.question, 42, good.cited_ids, good.text)
    with pytest.raises(TypeError, match="cited_ids must be a list"):
        WriteBackCandidate(task.question, task.answers[0], good.cited_ids[0], good.text)
    with pytest.raises(TypeError, match="cited id must be a str"):
        WriteBackCandidate(task.question, task.answers[0], (3,), good.text)
    with pytest.raises(TypeError, match="a candidate must be"):
        corpus.propose(["not", "a", "candidate"])
    with pytest.raises(ValueError, match="unknown candidate fields"):
        corpus.propose({**good.to_dict(), "extra": 1})
    with pytest.raises(ValueError, match="lacks fields"):
        corpus.propose({"question": "q"})
    with pytest.raises(TypeError, match="round must be"):
        corpus.add(good, Provenance("ep", "v", round="1"))
    with pytest.raises(TypeError, match="provenance must be"):
        corpus.add(good, "ep-1")
    with pytest.raises(TypeError, match="force must be a bool"):
        corpus.add(good, Provenance("ep", "v"), force="yes")
    with pytest.raises(TypeError, match="documents must be"):
        WriteBackCorpus("not documents")
    with pytest.raises(ValueError, match="at least one"):
        WriteBackCorpus([])
    with pytest.raises(ValueError, match="duplicate document id"):
        WriteBackCorpus([Document("a", "t", "x y"), Document("a", "t", "z w")])
    # odd but valid unicode is judged, not crashed on; nothing changes without an add
    before = corpus.state_bytes()
    for answer in ("Yar\u200bhount", "\u202eYarhount", "Ｙａｒｈｏｕｎｔ", "🙂", "e\u0301"):
        d = corpus.propose(WriteBackCandidate(task.question, answer, good.cited_ids, f"{task.question} {answer}."))
        assert isinstance(d.accepted, bool) and d.reason
    assert corpus.state_bytes() == before
    assert corpus.search([SearchRequest(None, top_k=3), SearchRequest("\x00\ud800", top_k=3)]) == [[], []]


def test_identity_changes_with_the_corpus(world, corpus):
    task = _tasks(world, "single", 1)[0]
    ident = corpus.identity()
    corpus.add(_candidate(world, task), Provenance("ep", "v"))
    assert corpus.identity() != ident
    corpus.rollback(episode_id="ep")
    assert corpus.identity() == ident


def test_concurrent_searches_and_adds_stay_consistent(world):
    """Searches from worker threads (the env's async twin) while an episode writes back."""
    import threading

    tasks = _tasks(world, "single", 15) + _tasks(world, "bridge", 15)
    corpus = WriteBackCorpus(world.documents, clock=lambda: 1.0)
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher():
        try:
            while not stop.is_set():
                corpus.search([SearchRequest(t.question, top_k=5) for t in tasks[:5]])
                corpus.identity()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for i, task in enumerate(tasks):
        corpus.add(_candidate(world, task), Provenance(f"ep-{i}", "v"))
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    sequential = WriteBackCorpus(world.documents, clock=lambda: 1.0)
    for i, task in enumerate(tasks):
        sequential.add(_candidate(world, task), Provenance(f"ep-{i}", "v"))
    assert corpus.state_bytes() == sequential.state_bytes()
    assert corpus.identity() == sequential.identity()


def test_bad_gate_parameters_are_refused(world):
    docs = world.documents[:5]
    with pytest.raises(ValueError, match="novelty_threshold"):
        WriteBackCorpus(docs, novelty_threshold=0.0)
    with pytest.raises(ValueError, match="min_grounding"):
        WriteBackCorpus(docs, min_grounding=1.5)
    with pytest.raises(TypeError, match="require_path"):
        WriteBackCorpus(docs, require_path="yes")
    with pytest.raises(ValueError, match="surrogate"):
        WriteBackCorpus([Document("x", "t\ud800", "text")])
