"""How often `WriteBackCorpus`'s gate accepts right and wrong write-backs of world questions.

For the test questions of the built-in world (seeds given), candidates of the form
"question answer." are proposed to a corpus over the world's articles:
- `gold`: the gold answer citing the supporting articles (the gate should accept);
- `gold_alias`: the gold answer's last alias (a family name, an organisation's stem) where it has
  one, citing the same articles (the gate should accept: evaluation counts it right);
- `wrong_in_source`: another name or year that the cited articles hold, one drawn per question (an
  agent that read the right article and took the wrong span: a wrong name or year copied from it);
- `wrong_in_source_every`: every such span of every question, not one drawn;
- `wrong_option`: for a comparison, the other of the two things compared;
- `wrong_cited_elsewhere`: a wrong entity of the answer's type, citing the supporting articles
  plus the article about that entity (an agent that took its answer from an off-topic hit);
- `wrong_uncited`: the same wrong entity, citing only the supporting articles;
- `fake_citation`: the gold answer citing an id the corpus does not hold;
- `gold_final_hop_only`: for a bridge, the gold answer citing only the article that states it
  (not the one that ties the question's subject to the bridge entity): right, but not shown to be;
- `gold_cite_holding`: the gold answer citing, of the BM25 top-`--top-k` documents served for the
  question and for each further supporting title (an agent's searches), those that state the
  answer (`knowledge.mentions`; the citing rule of `agents/flywheel.py`);
- `gold_cite_holding_or_named`: those plus the served documents whose title the question names;
- `wrong_served`: a wrong name or year drawn from those served documents (one per question),
  citing the served documents that state it plus those the question names.
Each under three gates: `lexical` (the gate before the relation check: answer in a cited sentence
on the question's path, `require_relation=False`), `default` (that plus the relation check) and
`relation_only` (`require_path=False`). The acceptance rate of each wrong family bounds the
pollution the gate lets through from agents that make that kind of mistake. The time per `propose`
of each gate is measured in the same run.

Last output line: a JSON object {gate: {family: {kind: accept rate}}, gate + ":n": {family: count},
gate + ":reasons": {...}, gate + ":ms_per_propose": float, "questions": n, "seeds": [...],
"gold_accept": default gate's gold rate, "wrong_accept_max": its highest wrong-family rate}.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections import defaultdict

from tqdm import tqdm

from zerosearch_env.data.world import generate_world
from zerosearch_env.rewards import normalize_answer
from zerosearch_env.search.knowledge import mentions
from zerosearch_env.search.writeback import WriteBackCandidate, WriteBackCorpus

_YEAR = re.compile(r"\b1\d{3}\b|\b20\d{2}\b")
GATES = {
    "lexical": {"require_relation": False},
    "default": {},
    "relation_only": {"require_path": False},
}
WRONG = ("wrong_in_source", "wrong_in_source_every", "wrong_served", "wrong_option", "wrong_cited_elsewhere",
         "wrong_uncited", "fake_citation")


def families(world, rng: random.Random, limit: int | None, top_k: int = 5) -> list[tuple[str, str, WriteBackCandidate]]:
    """(family, question kind, candidate) for up to `limit` test questions of `world` (all: None)."""
    docs = {d.title: d for d in world.documents}
    by_id = {d.id: d for d in world.documents}
    engine = WriteBackCorpus(world.documents)
    by_name = {e.name: e for e in world.entities}
    by_type = defaultdict(list)
    for e in world.entities:
        by_type[e.type].append(e)
    tasks = [t for t in world.tasks if t.split == "test"]
    rng.shuffle(tasks)
    out = []
    for task in tasks[:limit]:
        cited = [docs[t] for t in task.supporting_titles]
        ids = tuple(d.id for d in cited)
        gold = task.answers[0]
        golds = {normalize_answer(a) for a in task.answers}

        def cand(answer: str, cite: tuple[str, ...]) -> WriteBackCandidate:
            return WriteBackCandidate(task.question, answer, cite, f"{task.question} {answer}.")

        out.append(("gold", task.kind, cand(gold, ids)))
        if task.answers[-1] != gold:
            out.append(("gold_alias", task.kind, cand(task.answers[-1], ids)))
        out.append(("fake_citation", task.kind, cand(gold, ("w9-e999999",))))
        if task.kind == "bridge":
            out.append(("gold_final_hop_only", task.kind, cand(gold, ids[-1:])))
        # what an agent that searched the question, then each further supporting title, was served
        served = [i for q in (task.question, *task.supporting_titles[1:]) for i in engine.search_ids(q, top_k)]
        served = list(dict.fromkeys(served))
        holding = [i for i in served if mentions(by_id[i].text, [gold])]
        named = [i for i in served if f" {normalize_answer(by_id[i].title)} " in f" {normalize_answer(task.question)} "]
        if holding:
            out.append(("gold_cite_holding", task.kind, cand(gold, tuple(holding))))
        if holding or named:
            out.append(("gold_cite_holding_or_named", task.kind, cand(gold, tuple(dict.fromkeys(holding + named)))))
        served_text = " ".join(by_id[i].text for i in served)
        wrong = [x for x in dict.fromkeys([n for n in by_name if n in served_text] + _YEAR.findall(served_text))
                 if normalize_answer(x) not in golds and normalize_answer(x) not in normalize_answer(task.question)]
        if wrong:
            x = random.Random(task.id).choice(wrong)
            cite = [i for i in served if mentions(by_id[i].text, [x])]
            out.append(("wrong_served", task.kind, cand(x, tuple(dict.fromkeys(cite + named)))))
        text = " ".join(d.text for d in cited)
        spans = [n for n in by_name if n in text] + _YEAR.findall(text)
        spans = [s for s in dict.fromkeys(spans) if normalize_answer(s) not in golds
                 and normalize_answer(s) not in normalize_answer(task.question)
                 and not any(normalize_answer(s) in g or g in normalize_answer(s) for g in golds)]
        if spans:
            out.append(("wrong_in_source", task.kind, cand(rng.choice(spans), ids)))
        out.extend(("wrong_in_source_every", task.kind, cand(s, ids)) for s in spans)
        if task.kind == "comparison":
            other = next(t for t in task.supporting_titles if normalize_answer(t) not in golds)
            out.append(("wrong_option", task.kind, cand(other, ids)))
        kind_of_answer = by_name[gold].type if gold in by_name else None
        if kind_of_answer:
            pool = [e for e in by_type[kind_of_answer] if e.name not in text and normalize_answer(e.name) not in golds]
            other = rng.choice(pool)
            out.append(("wrong_cited_elsewhere", task.kind, cand(other.name, ids + (docs[other.name].id,))))
            out.append(("wrong_uncited", task.kind, cand(other.name, ids)))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="world seeds (default 0 1)")
    ap.add_argument("--questions", type=int, default=None,
                    help="test questions per world, drawn with a fixed seed (default: all of them)")
    ap.add_argument("--top-k", type=int, default=5, help="documents served per search for the gold_cite_* families (default 5)")
    args = ap.parse_args(argv)
    rng = random.Random(0)
    accepted: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    reasons: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    seconds: dict = defaultdict(float)
    proposals: dict = defaultdict(int)
    questions = 0
    for seed in args.seeds:
        world = generate_world(seed)
        cands = families(world, rng, args.questions, args.top_k)
        questions += sum(f == "gold" for f, _, _ in cands)
        for gate, config in GATES.items():
            corpus = WriteBackCorpus(world.documents, **config)
            start = time.perf_counter()
            for family, kind, c in tqdm(cands, desc=f"world {seed} gate {gate}", leave=False):
                d = corpus.propose(c)
                accepted[gate][family][kind].append(d.accepted)
                accepted[gate][family]["all"].append(d.accepted)
                reasons[gate][family][d.reason] += 1
            seconds[gate] += time.perf_counter() - start
            proposals[gate] += len(cands)
    result: dict = {"questions": questions, "seeds": args.seeds}
    for gate, fams in accepted.items():
        result[gate] = {f: {k: round(sum(v) / len(v), 4) for k, v in kinds.items()} for f, kinds in fams.items()}
        result[gate + ":n"] = {f: len(kinds["all"]) for f, kinds in fams.items()}
        result[gate + ":reasons"] = {f: dict(r) for f, r in reasons[gate].items()}
        result[gate + ":ms_per_propose"] = round(1000 * seconds[gate] / proposals[gate], 3)
    result["gold_accept"] = result["default"]["gold"]["all"]
    result["wrong_accept_max"] = max(result["default"][f]["all"] for f in WRONG if f in result["default"])
    kinds = ["single", "bridge", "comparison", "all"]
    print(f"{questions} test questions of worlds {args.seeds}")
    for gate in GATES:
        print(f"gate {gate} {GATES[gate]}: share accepted ({result[gate + ':ms_per_propose']} ms per propose)")
        print(f"  {'family':24s}" + "".join(f"{k:>12s}" for k in kinds) + f"{'n':>8s}")
        for f, by_kind in result[gate].items():
            print(f"  {f:24s}" + "".join(f"{by_kind.get(k, float('nan')):12.4f}" for k in kinds)
                  + f"{result[gate + ':n'][f]:8d}")
        print("  reasons: " + "; ".join(f"{f}: {r}" for f, r in result[gate + ":reasons"].items()))
    print(json.dumps(result, sort_keys=True))
    return result


if __name__ == "__main__":
    main()
