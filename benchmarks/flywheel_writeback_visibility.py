"""Are the flywheel's own write-backs served once the retrieval-time defences are on?

    python benchmarks/flywheel_writeback_visibility.py            # 200 train questions of world 0, top 3
    python benchmarks/flywheel_writeback_visibility.py --n 400 --top-k 5

A flywheel write-back is a "question answer." document (agents/flywheel.py). For `--n` train
questions of the world (single, bridge and comparison, in a seeded order), the gold write-back
citing the supporting articles is proposed to a `WriteBackCorpus` over the world's articles and
added when the gate accepts it. Each question is then asked (query = the question, top k) through
the undefended corpus, through `DefendedSearch` (partition + mask, defaults), and through the
flywheel's `ServingSearch` over the defences with the write-backs trusted (`trust_writebacks`).
Reported: the share of accepted write-backs served for their own question by each, and how many
the mask quarantined. A write-back has the shape of a query-copy attack (the question followed by
a short payload), which is what the defences are built to stop.

Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.flywheel import ServingSearch  # noqa: E402
from zerosearch_env.data.world import generate_world  # noqa: E402
from zerosearch_env.search.base import SearchRequest  # noqa: E402
from zerosearch_env.search.defences import DefendedSearch  # noqa: E402
from zerosearch_env.search.writeback import Provenance, WriteBackCandidate, WriteBackCorpus  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="train questions (all kinds, seeded order)")
    ap.add_argument("--top-k", type=int, default=3, help="documents served per query")
    ap.add_argument("--world-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.n < 1 or args.top_k < 1:
        ap.error("--n and --top-k must be >= 1")
    t0 = time.perf_counter()
    world = generate_world(args.world_seed)
    ids = {d.title: d.id for d in world.documents}
    tasks = list(world.split("train"))
    random.Random(args.seed).shuffle(tasks)
    corpus = WriteBackCorpus(world.documents)
    added = []
    for task in tasks[: args.n]:
        cand = WriteBackCandidate(task.question, task.answers[0], tuple(ids[t] for t in task.supporting_titles),
                                  f"{task.question} {task.answers[0]}.")
        if corpus.propose(cand).accepted:
            added.append((task, corpus.add(cand, Provenance(task.id, "gold", 0)).doc_id))
    reqs = [SearchRequest(t.question, args.top_k, episode_id=t.id) for t, _ in added]
    defended = DefendedSearch(corpus)
    raw = corpus.search(reqs)
    got = defended.search(reqs)
    trusted = ServingSearch(DefendedSearch(corpus), raw=corpus, trusted={i for _, i in added}).search(reqs)
    quarantined = {q.doc_id for q in defended.quarantine}

    def served(results) -> dict:
        hit = [any(d.id == i for d in docs) for (_, i), docs in zip(added, results)]
        by_kind = {}
        for (t, _), h in zip(added, hit):
            by_kind.setdefault(t.kind, []).append(h)
        return {"all": round(sum(hit) / len(hit), 4) if hit else None,
                **{k: round(sum(v) / len(v), 4) for k, v in sorted(by_kind.items())}}

    result = {"world_seed": args.world_seed, "questions": args.n, "top_k": args.top_k, "accepted": len(added),
              "served_undefended": served(raw), "served_defended": served(got),
              "served_trusted": served(trusted),
              "quarantined": sum(i in quarantined for _, i in added),
              "seconds": round(time.perf_counter() - t0, 1)}
    print(f"{len(added)} of {args.n} gold write-backs accepted; served for their own question in the top {args.top_k}:")
    for key in ("served_undefended", "served_defended", "served_trusted"):
        print(f"  {key:18} {result[key]}")
    print(f"  quarantined by the mask: {result['quarantined']}")
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
