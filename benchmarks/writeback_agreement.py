"""Does `WriteBackCorpus`'s own BM25 index rank like `BM25Search` (bm25s) on the same corpus?

Every question of the built-in world (seeds given) is searched through both, and at each k:
- `strict_overlap`: mean share of the top-k ids both return;
- `tie_aware_overlap`: mean share of BM25Search's top-k that score at least our k-th score
  in our index (documents that tie at the cut-off count as agreeing: bm25s breaks ties
  arbitrarily, we by insertion order);
- `score_match`: share of queries whose scores agree at every rank (relative 1e-5; bm25s keeps
  float32 scores);
- `exact_untied`: among queries with no tie inside the top k or at the cut-off, the share with
  exactly the same ranked ids.

Last output line: a JSON object {"k=<k>": {those four, "n", "n_untied"}}.
"""

from __future__ import annotations

import argparse
import json
import tempfile

from zerosearch_env.data.world import generate_world
from zerosearch_env.search.base import SearchRequest
from zerosearch_env.search.bm25 import BM25Search
from zerosearch_env.search.writeback import WriteBackCorpus


def agreement(bm: BM25Search, ours: WriteBackCorpus, queries: list[str], k: int) -> dict:
    theirs_all = bm.search([SearchRequest(q, top_k=k) for q in queries])
    strict = tie_aware = 0.0
    score_match = n = n_untied = exact_untied = 0
    for q, theirs in zip(queries, theirs_all):
        ranked = ours.ranked(q)
        mine = ranked[:k]
        if not mine and not theirs:
            continue
        n += 1
        if len(mine) == len(theirs) and all(abs(a.score - s) <= 1e-5 * max(1.0, s) for a, (_, s) in zip(theirs, mine)):
            score_match += 1
        if not mine or not theirs:
            continue
        kth = mine[-1][1]
        full = dict(ranked)
        strict += len({d.id for d in theirs} & {i for i, _ in mine}) / len(mine)
        tie_aware += sum(full.get(d.id, 0.0) >= kth * (1 - 1e-6) for d in theirs) / len(theirs)
        scores = [s for _, s in mine]
        no_tie_inside = all(a - b > 1e-6 * a for a, b in zip(scores, scores[1:]))
        no_tie_at_cut = len(ranked) == len(mine) or ranked[len(mine)][1] < kth * (1 - 1e-6)
        if no_tie_inside and no_tie_at_cut:
            n_untied += 1
            exact_untied += [d.id for d in theirs] == [i for i, _ in mine]
    return {"strict_overlap": round(strict / n, 4), "tie_aware_overlap": round(tie_aware / n, 4),
            "score_match": round(score_match / n, 4), "exact_untied": round(exact_untied / max(1, n_untied), 4),
            "n": n, "n_untied": n_untied}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="world seeds (default 0)")
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5, 10], help="cut-offs (default 1 3 5 10)")
    args = ap.parse_args(argv)
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            world = generate_world(seed)
            bm = BM25Search(world.documents, index_dir=f"{tmp}/{seed}")
            ours = WriteBackCorpus(world.documents)
            queries = [t.question for t in world.tasks]
            for k in args.ks:
                r = agreement(bm, ours, queries, k)
                result[f"seed={seed},k={k}"] = r
                print(f"world {seed}  k={k:<3d} strict overlap {r['strict_overlap']:.4f}  tie-aware overlap "
                      f"{r['tie_aware_overlap']:.4f}  scores match {r['score_match']:.4f}  exact when untied "
                      f"{r['exact_untied']:.4f} ({r['n_untied']} of {r['n']} queries untied)")
    print(json.dumps(result, sort_keys=True))
    return result


if __name__ == "__main__":
    main()
