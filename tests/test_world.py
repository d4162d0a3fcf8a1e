"""The built-in fictional world: size, determinism, invented names, answerability, priors."""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import time

import pytest

from zerosearch_env.data import load_corpus, load_tasks
from zerosearch_env.data.world import ENTITY_TYPES, TEMPLATES, generate_world
from zerosearch_env.rewards import exact_match, normalize_answer

# Common real first names, surnames, cities, countries and rivers; none may be a world name token.
REAL = set("""
john mary james robert michael william david richard joseph thomas charles daniel matthew anthony
mark paul steven andrew joshua kevin brian george edward ronald timothy jason jeffrey ryan jacob
patricia jennifer linda elizabeth barbara susan jessica sarah karen nancy lisa betty margaret
sandra ashley emily donna michelle carol amanda melissa deborah laura maria anna olga ivan pierre
hans mohammed ahmed ali wei yuki hiroshi smith johnson williams brown jones garcia miller davis
rodriguez martinez hernandez lopez gonzalez wilson anderson taylor moore jackson martin lee
london paris berlin rome madrid tokyo beijing delhi mumbai cairo lagos lima bogota oslo stockholm
helsinki copenhagen amsterdam brussels vienna prague budapest warsaw kiev moscow istanbul athens
lisbon dublin edinburgh glasgow manchester chicago boston houston dallas seattle denver toronto
montreal vancouver sydney melbourne auckland seoul bangkok jakarta manila hanoi singapore dubai
tehran baghdad nairobi accra dakar tunis algiers casablanca havana caracas quito santiago
france germany italy spain portugal england scotland ireland norway sweden finland denmark poland
russia ukraine china japan india brazil argentina chile peru mexico canada egypt kenya nigeria
ghana morocco iran iraq turkey greece austria hungary nile amazon thames seine rhine danube volga
ganges yangtze mississippi congo
""".split())


def _name_tokens(world):
    for e in world.entities:
        for alias in e.aliases:
            yield from re.findall(r"[A-Za-z]+", alias)


def test_size_types_and_relations():
    world = generate_world(0)
    s = world.summary()
    assert s["entities"] >= 1000
    assert set(s["entities_by_type"]) == set(ENTITY_TYPES)
    assert s["tasks"] >= 3000
    assert set(s["tasks_by_kind"]) == {"single", "bridge", "comparison"}
    assert {r.predicate for r in world.relations} >= {
        "born_in", "founded_by", "headquartered_in", "member_of", "located_in", "founded_year"}
    assert 0.15 < s["test"] / s["tasks"] < 0.25
    assert len(world.documents) == len(world.entities)
    assert len({d.id for d in world.documents}) == len(world.documents)
    assert len({d.title for d in world.documents}) == len(world.documents)
    assert len({t.id for t in world.tasks}) == len(world.tasks)
    assert world.documents[123].id == "w0-e000123"
    assert all(len(re.findall(r"[.!?](\s|$)", d.text)) >= 3 for d in world.documents)


def test_byte_identical_for_same_seed_in_fresh_process():
    code = "from zerosearch_env.data.world import generate_world; print(generate_world(3).fingerprint())"
    a = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    b = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout
    assert a == b and len(a.strip()) == 64
    assert generate_world(3).fingerprint() == a.strip()
    assert generate_world(3).to_json() == generate_world.__wrapped__(3).to_json()
    assert generate_world(4).fingerprint() != a.strip()


def test_generation_under_ten_seconds():
    t = time.perf_counter()
    generate_world.__wrapped__(11)
    assert time.perf_counter() - t < 10.0


def test_names_are_invented():
    world = generate_world(0)
    tokens = {t.lower() for t in _name_tokens(world)}
    generic = {"the", "of", "river"} | {w.lower() for w in (
        "Institute Company Guild Society Foundation Works Academy Trust Press Observatory Bank "
        "Conservatory Lantern Orchard Harbor Mirror Winter Garden Tower Letters Voyage Silence Ashes "
        "Crown Bridge Compass Feather Tide").split()}
    invented = tokens - generic
    assert len(invented) > 1000
    assert not (invented & REAL), sorted(invented & REAL)


def test_gold_answers_in_supporting_articles_and_not_in_question():
    world = generate_world(0)
    docs = {d.title: d for d in world.documents}
    for t in world.tasks:
        assert t.supporting_titles and all(title in docs for title in t.supporting_titles)
        assert t.template in TEMPLATES and TEMPLATES[t.template][0] == t.kind
        last = docs[t.supporting_titles[-1]] if t.kind != "comparison" else None
        text = " " + normalize_answer(" ".join(docs[x].text for x in t.supporting_titles)) + " "
        assert any(" " + normalize_answer(a) + " " in text for a in t.answers), t
        if last is not None:
            # the final hop's article holds the answer
            assert any(normalize_answer(a) in normalize_answer(last.text) for a in t.answers), t
        if t.kind != "comparison":
            assert not any(normalize_answer(a) in normalize_answer(t.question).split() for a in t.answers), t
        # every supporting title is named in the question or in the previous hop's article
        assert t.supporting_titles[0] in t.question
        for prev, nxt in zip(t.supporting_titles, t.supporting_titles[1:]):
            assert nxt in t.question or nxt in docs[prev].text


def test_bridge_needs_second_hop():
    """The first article of a bridge question does not already hold its answer."""
    world = generate_world(0)
    docs = {d.title: d for d in world.documents}
    bridges = [t for t in world.tasks if t.kind == "bridge"]
    assert len(bridges) > 500
    leaks = sum(any(" " + normalize_answer(a) + " " in " " + normalize_answer(docs[t.supporting_titles[0]].text) + " "
                    for a in t.answers) for t in bridges)
    assert leaks / len(bridges) < 0.05


def test_prior_only_guess_scores_low():
    world = generate_world(0)
    prior = {}
    for tpl in TEMPLATES:
        counts = collections.Counter(t.answers[0] for t in world.split("train") if t.template == tpl)
        if counts:
            prior[tpl] = counts.most_common(1)[0][0]
    test = world.split("test")
    em = sum(exact_match(prior.get(t.template, ""), t.answers) for t in test) / len(test)
    assert em <= 0.05


def _final_hop_fact(task) -> tuple[str, str]:
    """The answer-bearing article and the answer: what a question asks the agent to retrieve last."""
    return task.supporting_titles[-1], task.answers[0]


def test_split_is_fact_disjoint_and_byte_stable():
    """No held-out question is answered by a fact that a training question retrieves, at any hop."""
    world = generate_world.__wrapped__(0)
    train, test = world.split("train"), world.split("test")
    train_final = {_final_hop_fact(t) for t in train}
    shared = [t for t in test if _final_hop_fact(t) in train_final]
    assert not shared, f"{len(shared)} of {len(test)} test questions share their final-hop fact with training"
    # stronger: a test question's answer-bearing article is read by no training question at any hop
    train_articles = {title for t in train for title in t.supporting_titles}
    assert not {t.supporting_titles[-1] for t in test} & train_articles
    for kind in ("single", "bridge", "comparison"):
        n_train, n_test = (sum(t.kind == kind for t in s) for s in (train, test))
        assert n_test >= 80 and 0.1 < n_test / (n_train + n_test) < 0.3, (kind, n_train, n_test)
    assert world.to_json() == generate_world.__wrapped__(0).to_json()


def test_loaders_of_data_package():
    world = generate_world(0)
    assert load_tasks("world", "test", 0) == world.split("test")
    assert load_tasks("world", "all", 0) == list(world.tasks)
    assert load_corpus("world", 0) == list(world.documents)
    with pytest.raises(ValueError, match=r"no 'dev' split.*'test', 'train'"):
        load_tasks("world", "dev", 0)


@pytest.mark.parametrize("seed", [1, 2])
def test_other_seeds_work(seed):
    world = generate_world(seed)
    assert world.documents[0].id == f"w{seed}-e000000"
    assert len(world.tasks) >= 3000
