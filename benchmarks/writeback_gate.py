"""How often `WriteBackCorpus`'s gate accepts right and wrong write-backs of world questions.

For the test questions of the built-in world (seeds given), candidates of the form
"question answer." are proposed to a corpus over the world's articles:
- `gold`: the gold answer citing the supporting articles (the gate should accept);
- `wrong_in_source`: another name or year that the cited articles hold (an agent that read the
  right article and took the wrong span: only a semantic check can catch it);
- `wrong_cited_elsewhere`: a wrong entity of the answer's type, citing the supporting articles
  plus the article about that entity (an agent that took its answer from an off-topic hit);
- `wrong_uncited`: the same wrong entity, citing only the supporting articles;
- `fake_citation`: the gold answer citing an id the corpus does not hold.
Each with the path check on and off (`require_path`). The acceptance rate of the wrong families
bounds the pollution the gate lets through from agents that make that kind of mistake.

Last output line: a JSON object {"require_path=True": {family: {kind: accept rate}}, ...} plus counts.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import defaultdict

from zerosearch_env.data.world import generate_world
from zerosearch_env.rewards import normalize_answer
from zerosearch_env.search.writeback import WriteBackCandidate, WriteBackCorpus

_YEAR = re.compile(r"\b1\d{3}\b|\b20\d{2}\b")


def families(world, rng: random.Random, limit: int) -> list[tuple[str, str, WriteBackCandidate]]:
    """(family, question kind, candidate) for up to `limit` test questions of `world`."""
    docs = {d.title: d for d in world.documents}
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
        out.append(("fake_citation", task.kind, cand(gold, ("w9-e999999",))))
        text = " ".join(d.text for d in cited)
        spans = [n for n in by_name if n in text] + _YEAR.findall(text)
        spans = [s for s in dict.fromkeys(spans) if normalize_answer(s) not in golds
                 and normalize_answer(s) not in normalize_answer(task.question)
                 and not any(normalize_answer(s) in g or g in normalize_answer(s) for g in golds)]
        if spans:
            out.append(("wrong_in_source", task.kind, cand(rng.choice(spans), ids)))
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
    ap.add_argument("--questions", type=int, default=400, help="test questions per world (default 400)")
    args = ap.parse_args(argv)
    rng = random.Random(0)
    accepted: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    reasons: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for seed in args.seeds:
        world = generate_world(seed)
        cands = families(world, rng, args.questions)
        for require_path in (True, False):
            corpus = WriteBackCorpus(world.documents, require_path=require_path)
            key = f"require_path={require_path}"
            for family, kind, c in cands:
                d = corpus.propose(c)
                accepted[key][family][kind].append(d.accepted)
                accepted[key][family]["all"].append(d.accepted)
                reasons[key][family][d.reason] += 1
    result: dict = {}
    for key, fams in accepted.items():
        result[key] = {f: {k: round(sum(v) / len(v), 4) for k, v in kinds.items()} for f, kinds in fams.items()}
        result[key + ":n"] = {f: len(kinds["all"]) for f, kinds in fams.items()}
        result[key + ":reasons"] = {f: dict(r) for f, r in reasons[key].items()}
    kinds = ["single", "bridge", "comparison", "all"]
    for key in ("require_path=True", "require_path=False"):
        print(f"{key}: share accepted")
        print(f"  {'family':24s}" + "".join(f"{k:>12s}" for k in kinds) + f"{'n':>8s}")
        for f, by_kind in result[key].items():
            print(f"  {f:24s}" + "".join(f"{by_kind.get(k, float('nan')):12.3f}" for k in kinds)
                  + f"{result[key + ':n'][f]:8d}")
        print("  reasons: " + "; ".join(f"{f}: {r}" for f, r in result[key + ":reasons"].items()))
    print(json.dumps(result, sort_keys=True))
    return result


if __name__ == "__main__":
    main()
