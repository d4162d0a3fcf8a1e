"""Retrieval-time defences against planted documents, on world 0 with real BM25 indexes."""

from __future__ import annotations

import json

import pytest

from zerosearch_env.data.world import generate_world
from zerosearch_env.search import Document, FunctionSearch, SearchRequest
from zerosearch_env.search.bm25 import BM25Search, tokenize
from zerosearch_env.search.defences import (
    ATTACK_STYLES, DefendedSearch, LexicalScorer, MaskDefence, PartitionDefence, attack_success, choose_targets,
    craft_attack, craft_attacks, read_top_document, states_answer,
)

N_TARGETS = 40


@pytest.fixture(scope="module")
def world():
    return generate_world(0)


@pytest.fixture(scope="module")
def genuine(world):
    return list(world.documents)


@pytest.fixture(scope="module")
def attacks(world):
    return craft_attacks(choose_targets(world, n=N_TARGETS, seed=3), world, n_docs=2, seed=3, style="query_prefix")


@pytest.fixture(scope="module")
def poisoned(genuine, attacks, tmp_path_factory):
    planted = [d for a in attacks for d in a.documents]
    return BM25Search(genuine + planted, index_dir=tmp_path_factory.mktemp("bm25") / "poisoned")


@pytest.fixture(scope="module")
def clean(genuine, tmp_path_factory):
    return BM25Search(genuine, index_dir=tmp_path_factory.mktemp("bm25") / "clean")


def _success_rate(backend, attacks, top_k=5):
    served = backend.search([SearchRequest(a.question, top_k=top_k) for a in attacks])
    return sum(attack_success(a, s) for a, s in zip(attacks, served)) / len(attacks), served


def terms(query):
    return list(dict.fromkeys(tokenize(query)))


# ----------------------------------------------------------------------------- the attack

def test_planted_documents_rank_first_without_defences(poisoned, attacks):
    rate, served = _success_rate(poisoned, attacks)
    planted_top = sum(s[0].id.startswith("planted-") for s in served) / len(attacks)
    assert planted_top >= 0.9
    assert rate >= 0.9


def test_attack_is_reproducible_and_configurable(world):
    task = choose_targets(world, n=1, seed=11)[0]
    a = craft_attack(task, world, n_docs=4, seed=7)
    assert a == craft_attack(task, world, n_docs=4, seed=7)
    assert len(a.documents) == 4 and len({d.id for d in a.documents}) == 4
    assert all(states_answer(d.text, a.false_answer) for d in a.documents)
    assert not any(states_answer(d.text, g) for d in a.documents for g in a.answers)
    assert a.false_answer not in a.answers
    json.dumps(a.to_dict())
    false_answers = {craft_attack(t, world, seed=s).false_answer
                     for t in choose_targets(world, n=20, seed=0) for s in (1, 2)}
    assert len(false_answers) > 20  # seeds and questions draw different false answers
    for style in ATTACK_STYLES:
        docs = craft_attack(task, world, n_docs=2, seed=7, style=style).documents
        assert all(states_answer(d.text, a.false_answer) for d in docs)
        assert (task.question in docs[0].text) == (style != "article")


def test_attack_refuses_what_it_cannot_attack(world):
    task = choose_targets(world, n=1, seed=0)[0]
    comparison = next(t for t in world.split("test") if t.kind == "comparison")
    with pytest.raises(ValueError, match="comparison"):
        craft_attack(comparison, world)
    with pytest.raises(ValueError, match="style"):
        craft_attack(task, world, style="nope")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n_docs"):
            craft_attack(task, world, n_docs=bad)
    with pytest.raises(ValueError, match="distinct subjects"):
        choose_targets(world, n=10**6)


def test_reader_measure(attacks):
    a = attacks[0]
    planted = a.documents[0]
    gold = Document("g", "x", f"It is {a.answers[0]}.")
    both = Document("b", "x", f"{a.false_answer} or {a.answers[0]}")
    assert attack_success(a, [planted, gold])
    assert not attack_success(a, [gold, planted])
    assert read_top_document([both], a) == "both" and not attack_success(a, [both])
    assert read_top_document([], a) == "none" and not attack_success(a, [])
    assert states_answer("Born in 1822.", "1822") and not states_answer("Born in 18221.", "1822")


# ----------------------------------------------------------------------------- the defences

@pytest.mark.parametrize("partition,mask", [(True, True), (True, False), (False, True)])
def test_defences_stop_the_query_prefix_attack(poisoned, attacks, genuine, partition, mask):
    undefended, _ = _success_rate(poisoned, attacks)
    defended = DefendedSearch(poisoned, partition=partition, mask=mask, reference_documents=genuine)
    rate, served = _success_rate(defended, attacks)
    assert rate <= 0.1 and rate <= undefended / 2
    # a genuine article comes back on top, not a planted one
    assert sum(bool(s) and not s[0].id.startswith("planted-") for s in served) >= 0.9 * len(attacks)


def test_repeated_query_copies_count_once(world, genuine, tmp_path):
    stuffed = craft_attacks(choose_targets(world, n=20, seed=4), world, n_docs=2, seed=4, style="stuffed")
    index = BM25Search(genuine + [d for a in stuffed for d in a.documents], index_dir=tmp_path / "stuffed")
    undefended, _ = _success_rate(index, stuffed)
    defended, _ = _success_rate(DefendedSearch(index, reference_documents=genuine), stuffed)
    assert undefended >= 0.8 and defended <= 0.1


def test_flagged_documents_are_reported_and_not_served(poisoned, attacks, genuine):
    defended = DefendedSearch(poisoned, partition=False, mask=True, reference_documents=genuine)
    reqs = [SearchRequest(a.question, top_k=5) for a in attacks]
    served, infos = defended.search_with_info(reqs)
    total = 0
    for docs, info in zip(served, infos):
        quarantined = {q["doc_id"] for q in info["defences"]["quarantined"]}
        assert not quarantined & {d.id for d in docs}
        assert len(docs) == 5
        total += len(quarantined)
        json.dumps(info)
    report = defended.quarantine_report()
    assert len(report) == total == defended.stats()["defended_quarantined"]
    planted = [r for r in report if r["doc_id"].startswith("planted-")]
    assert len(planted) >= 0.9 * 2 * len(attacks)
    for r in planted:
        assert r["reason"] == "collapse" and r["ratio"] < 0.5 and r["relevance"] > 0
        assert 1 <= len(r["masked_tokens"]) <= 2
    assert defended.stats()["defended_requests"] == len(reqs)
    assert "bm25_queries" in defended.stats()


def test_clean_queries_served_mostly_unchanged(clean, world, genuine):
    tasks = world.split("test")[:150]
    reqs = [SearchRequest(t.question, top_k=5) for t in tasks]
    plain = clean.search(reqs)
    defended = DefendedSearch(clean, reference_documents=genuine)
    served = defended.search(reqs)
    same_top = sum(a[0].id == b[0].id for a, b in zip(plain, served) if a and b) / len(tasks)
    assert same_top >= 0.95
    flagged = defended.stats()["defended_quarantined"]
    assert flagged <= 0.1 * sum(len(p) for p in plain)
    hit = lambda docs, t: any(d.title == t.supporting_titles[0] for d in docs)  # noqa: E731
    assert sum(hit(s, t) for s, t in zip(served, tasks)) >= 0.95 * sum(hit(p, t) for p, t in zip(plain, tasks))


def test_partition_bounds_a_bolted_on_query_copy(world, genuine, attacks):
    scorer = LexicalScorer(genuine)
    part = PartitionDefence()
    a = attacks[0]
    weight, majority = part.weight(scorer, terms(a.question), a.documents[0])
    assert weight == 0.0 and majority == 0.0
    article = next(d for d in genuine if d.title == a.documents[0].title)  # the subject's genuine article
    assert part.weight(scorer, terms(a.question), article)[0] == 1.0
    # one copy of the query in one of three fragments of an otherwise unrelated body
    filler = next(d for d in genuine if not set(terms(a.question)) & set(tokenize(d.text)))
    doc = Document("x", "x", f"{filler.text} {a.question} {filler.text} {filler.text}")
    assert part.weight(scorer, terms(a.question), doc)[0] < 0.5


def test_defences_wrap_any_backend_and_unscored_results(genuine, attacks):
    a = attacks[0]
    article = next(d for d in genuine if d.title == a.documents[0].title)
    docs = [Document(d.id, d.title, d.text) for d in (*a.documents, article)]  # no scores
    base = FunctionSearch(lambda reqs: [list(docs) for _ in reqs], name="fixed")
    with pytest.raises(ValueError, match="reference_documents"):
        DefendedSearch(base)
    for partition, mask in ((True, False), (False, True), (True, True)):
        served = DefendedSearch(base, partition=partition, mask=mask, reference_documents=genuine).search(
            [SearchRequest(a.question, top_k=1)])
        assert served[0][0].id == article.id
    assert "pool20" in DefendedSearch(base, reference_documents=genuine).identity()


# ----------------------------------------------------------------------------- hostile input

def test_hostile_queries_and_documents(clean, genuine):
    defended = DefendedSearch(clean, reference_documents=genuine)
    out = defended.search([SearchRequest("", top_k=3), SearchRequest("   \u200b ", top_k=3),
                           SearchRequest("日本語の検索 🙂 e\u0301\u0301 \ud800", top_k=3)])
    assert out[0] == [] and out[1] == []
    assert defended.stats()["defended_empty_queries"] >= 2
    with pytest.raises(TypeError, match="query must be a str"):
        defended.search([SearchRequest(None, top_k=3)])
    huge_query = " ".join(f"Stevni{i} city" for i in range(200_000))  # ~3 MB of distinct words
    served = defended.search([SearchRequest(huge_query, top_k=3)])
    assert len(served[0]) <= 3
    with pytest.raises(TypeError, match="SearchRequest"):
        defended.search(["a query"])

    scorer = LexicalScorer(genuine)
    mask = MaskDefence()
    q = terms("In which city was Stevni founded?")
    huge = Document("huge", "Stevni", "Stevni is a city. " * 200_000)
    v = mask.check(scorer, q, huge)
    assert v.flagged and v.reason == "oversized"
    title_only = Document("t", "Stevni city", "Nothing here matches.")
    assert mask.check(scorer, q, title_only).reason == "title_only"
    assert not MaskDefence(flag_title_only=False).check(scorer, q, title_only).flagged
    odd = Document("o", "\u202e", "\x00\x01 \ud7ff 🙂🔥 Stevni\u200b is e\u0301 city. Stevni again.")
    assert mask.check(scorer, q, odd).reason in (None, "collapse")
    with pytest.raises(TypeError, match="Document"):
        mask.check(scorer, q, "not a document")
    with pytest.raises(TypeError, match="Document"):
        PartitionDefence().weight(scorer, q, Document("x", "t", None))

    huge_base = FunctionSearch(lambda reqs: [[huge, *genuine[:2]] for _ in reqs], name="huge")
    served, infos = DefendedSearch(huge_base, partition=False, reference_documents=genuine).search_with_info(
        [SearchRequest("Stevni city", top_k=3)])
    assert "huge" not in {d.id for d in served[0]}
    assert infos[0]["defences"]["quarantined"][0]["reason"] == "oversized"


def test_bad_configuration_is_refused(clean, genuine):
    for kwargs in ({"n_masked": 0}, {"threshold": 1.5}, {"threshold": 0}, {"min_relevance": 2},
                   {"max_doc_chars": 0}):
        with pytest.raises(ValueError):
            MaskDefence(**kwargs)
    for kwargs in ({"n_fragments": 0}, {"spread": 0}, {"spread": 1.5}):
        with pytest.raises(ValueError):
            PartitionDefence(**kwargs)
    with pytest.raises(TypeError, match="SearchBackend"):
        DefendedSearch("bm25")
    with pytest.raises(TypeError, match="PartitionDefence"):
        DefendedSearch(clean, partition="yes")
    with pytest.raises(ValueError, match="pool_size"):
        DefendedSearch(clean, pool_size=0)
    with pytest.raises(ValueError, match="reference"):
        LexicalScorer([])
    with pytest.raises(TypeError, match="Document"):
        LexicalScorer(["text"])


def test_base_info_passes_through_and_a_cache_can_wrap_it(genuine, attacks, tmp_path):
    from zerosearch_env.search.base import SearchBackend
    from zerosearch_env.search.cache import CachedSearch

    a = attacks[0]
    docs = [*a.documents, next(d for d in genuine if d.title == a.documents[0].title)]

    class Tagged(SearchBackend):
        name = "tagged"

        def search(self, requests):
            return [list(docs) for _ in requests]

        def search_with_info(self, requests):
            return self.search(requests), [{"mode": "useful"} for _ in requests]

    defended = DefendedSearch(Tagged(), reference_documents=genuine)
    served, infos = defended.search_with_info([SearchRequest(a.question, top_k=2)])
    assert infos[0]["mode"] == "useful" and len(infos[0]["defences"]["quarantined"]) >= 1
    cached = CachedSearch(defended, path=tmp_path / "cache.sqlite")
    first, _ = cached.search_with_info([SearchRequest(a.question, top_k=2)])
    again, info = cached.search_with_info([SearchRequest(a.question, top_k=2)])
    assert first == again == served and info[0]["cache"] == "hit"
