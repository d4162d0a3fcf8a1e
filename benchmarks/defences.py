"""Planted-document attacks on world 0 with BM25, with and without the retrieval-time defences.

    python benchmarks/defences.py                  # 120 questions, 2 and 5 planted docs each
    python benchmarks/defences.py --n 40 --docs 2  # quicker

For each attack style (`zerosearch_env.search.defences.ATTACK_STYLES`) and each number of planted
documents per question, the planted documents of all attacked questions (distinct subjects, test
split) join the world's articles in one BM25 index; each attacked question is then asked (query =
the question, top_k documents) through four backends: BM25 alone, BM25 + partition
(RAGPart-style), BM25 + mask (RAGMask-style), BM25 + both. Reported per cell: the attack success
rate (the top served document states the false answer and no gold alias), the share of served
documents that are planted, and how many planted and genuine documents the mask quarantined.

On the clean corpus (no planted documents), ordinary test questions of every kind are asked:
the **false-flag rate** is the share of the genuine articles BM25 serves (top_k per question) that
the mask test flags; utility is the share of questions whose first supporting article is among the
served top_k, and the share whose top document is the same as BM25's; cost is the time per query
of BM25 alone and with both defences (one batched call, best of 3). The last output line is one
JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

CONFIGS = ("none", "partition", "mask", "both")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=120, help="attacked questions (distinct subjects)")
    ap.add_argument("--docs", type=int, nargs="+", default=[2, 5], help="planted documents per attacked question")
    ap.add_argument("--styles", nargs="+", default=["query_prefix", "query_named", "stuffed", "article"],
                    help="attack styles")
    ap.add_argument("--clean-n", type=int, default=400, help="clean questions for the false-flag rate and utility")
    ap.add_argument("--top-k", type=int, default=5, help="documents served per question")
    ap.add_argument("--pool", type=int, default=20, help="candidates asked of BM25 before the defences")
    ap.add_argument("--n-fragments", type=int, default=3, help="partition: fragments per document body")
    ap.add_argument("--n-masked", type=int, default=2, help="mask: query-word occurrences masked")
    ap.add_argument("--min-relevance", type=float, default=0.8,
                    help="mask: test only documents scoring at least this share of the query's own score")
    ap.add_argument("--spread", type=float, default=0.5,
                    help="partition: majority-fragment share of the best fragment that keeps the full score")
    ap.add_argument("--threshold", type=float, default=0.5,
                    help="mask: flag when the masked relevance falls below this share of the original")
    ap.add_argument("--split", default="test", help="split the attacked and clean questions come from")
    ap.add_argument("--seed", type=int, default=0, help="seed of the question draw and the attacks")
    ap.add_argument("--world-seed", type=int, default=0, help="the built-in world to attack")
    ap.add_argument("--out", default=None, help="also write the figures to this JSON file")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    from tqdm import tqdm

    from zerosearch_env.data.world import generate_world
    from zerosearch_env.search import SearchRequest
    from zerosearch_env.search.bm25 import BM25Search, tokenize
    from zerosearch_env.search.defences import (DefendedSearch, MaskDefence, PartitionDefence, attack_success,
                                                choose_targets, craft_attacks)

    t0 = time.perf_counter()
    world = generate_world(args.world_seed)
    genuine = list(world.documents)
    targets = choose_targets(world, n=args.n, seed=args.seed, split=args.split)
    part = PartitionDefence(n_fragments=args.n_fragments, spread=args.spread)
    mask = MaskDefence(n_masked=args.n_masked, threshold=args.threshold, min_relevance=args.min_relevance)
    setting = {"none": (None, None), "partition": (part, None), "mask": (None, mask), "both": (part, mask)}
    figures: dict = {"world_seed": args.world_seed, "split": args.split, "questions": len(targets),
                     "top_k": args.top_k, "pool": args.pool, "n_fragments": args.n_fragments,
                     "spread": args.spread, "n_masked": args.n_masked, "threshold": args.threshold,
                     "min_relevance": args.min_relevance, "attack": {}}
    tmp = Path(tempfile.mkdtemp(prefix="defences-bench-"))
    cells = [(s, n) for s in args.styles for n in args.docs]
    for style, n_docs in tqdm(cells, desc="attack cells", file=sys.stdout):
        attacks = craft_attacks(targets, world, n_docs=n_docs, seed=args.seed, style=style)
        planted_ids = {d.id for a in attacks for d in a.documents}
        bm25 = BM25Search(genuine + [d for a in attacks for d in a.documents], index_dir=tmp / f"{style}-{n_docs}")
        reqs = [SearchRequest(a.question, top_k=args.top_k) for a in attacks]
        row = {}
        for cfg in CONFIGS:
            p, m = setting[cfg]
            backend = bm25 if cfg == "none" else DefendedSearch(
                bm25, partition=p, mask=m, reference_documents=genuine, pool_size=args.pool)
            served = backend.search(reqs)
            n_served = sum(len(s) for s in served)
            wins = sum(attack_success(a, s) for a, s in zip(attacks, served))
            planted_served = sum(d.id in planted_ids for s in served for d in s)
            cell = {"attack_success": round(wins / len(attacks), 4),
                    "planted_share_served": round(planted_served / max(1, n_served), 4)}
            if m is not None:
                cell["quarantined_planted"] = sum(r.doc_id in planted_ids for r in backend.quarantine)
                cell["quarantined_genuine"] = sum(r.doc_id not in planted_ids for r in backend.quarantine)
            row[cfg] = cell
        figures["attack"][f"{style}/{n_docs}"] = row

    # The clean corpus: false flags and utility on ordinary questions.
    clean = BM25Search(genuine, index_dir=tmp / "clean")
    tasks = list(world.split(args.split))
    random.Random(args.seed + 1).shuffle(tasks)
    tasks = tasks[: args.clean_n]
    reqs = [SearchRequest(t.question, top_k=args.top_k) for t in tasks]
    plain = clean.search(reqs)
    probe = DefendedSearch(clean, partition=False, mask=mask, reference_documents=genuine, pool_size=args.pool)
    checked = flagged = 0
    for r, docs in zip(reqs, plain):
        terms = list(dict.fromkeys(tokenize(r.query)))
        for d in docs:
            checked += 1
            flagged += mask.check(probe.scorer, terms, d).flagged
    clean_fig = {"questions": len(tasks), "served_checked": checked, "false_flags": flagged,
                 "false_flag_rate": round(flagged / max(1, checked), 4)}

    def hit(t, docs):
        return bool(t.supporting_titles) and any(d.title == t.supporting_titles[0] for d in docs)

    clean_fig["support_hit_at_k"] = {"none": round(sum(hit(t, d) for t, d in zip(tasks, plain)) / len(tasks), 4)}
    clean_fig["top1_unchanged"] = {}
    for cfg in CONFIGS[1:]:
        p, m = setting[cfg]
        served = DefendedSearch(clean, partition=p, mask=m, reference_documents=genuine,
                                pool_size=args.pool).search(reqs)
        clean_fig["support_hit_at_k"][cfg] = round(sum(hit(t, d) for t, d in zip(tasks, served)) / len(tasks), 4)
        same = sum(bool(a) and bool(b) and a[0].id == b[0].id for a, b in zip(plain, served))
        clean_fig["top1_unchanged"][cfg] = round(same / len(tasks), 4)
    # Cost: the same clean questions, one batched call each way, best of 3.
    def best_time(backend):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            backend.search(reqs)
            times.append(time.perf_counter() - t)
        return min(times)

    t_plain = best_time(clean)
    t_both = best_time(DefendedSearch(clean, partition=part, mask=mask, reference_documents=genuine,
                                      pool_size=args.pool))
    clean_fig["ms_per_query"] = {"none": round(1000 * t_plain / len(reqs), 3),
                                 "both": round(1000 * t_both / len(reqs), 3)}
    clean_fig["cost_ratio_both_vs_none"] = round(t_both / t_plain, 2)
    figures["clean"] = clean_fig
    figures["seconds"] = round(time.perf_counter() - t0, 1)

    print(f"\nattack success (top served document states the false answer), {len(targets)} questions, "
          f"top_k {args.top_k}:")
    print(f"{'style/planted':<20}" + "".join(f"{c:>12}" for c in CONFIGS) + "   planted quarantined (both)")
    for key, row in figures["attack"].items():
        print(f"{key:<20}" + "".join(f"{row[c]['attack_success']:>12.3f}" for c in CONFIGS)
              + f"   {row['both']['quarantined_planted']} (genuine {row['both']['quarantined_genuine']})")
    print(f"clean: false-flag rate {clean_fig['false_flag_rate']:.4f} ({flagged}/{checked} served genuine articles); "
          f"support hit@{args.top_k} {clean_fig['support_hit_at_k']}; top-1 unchanged {clean_fig['top1_unchanged']}")
    print(f"cost: {clean_fig['ms_per_query']['none']} ms per query for BM25, {clean_fig['ms_per_query']['both']} with "
          f"both defences (pool {args.pool}): x{clean_fig['cost_ratio_both_vs_none']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(figures), flush=True)
    return figures


if __name__ == "__main__":
    main()
