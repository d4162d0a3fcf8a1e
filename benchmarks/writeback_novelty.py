"""Evidence for `WriteBackCorpus`'s novelty threshold: the max word-shingle Jaccard the gate sees
for true near duplicates of world documents against the one it sees for distinct documents.

For every document of the world (seeds given) the gate's similarity is measured three ways:
- *distinct*: the document's own text against the top BM25 hits of the corpus without itself
  (a new, genuinely different world article would look like this);
- *duplicate*: edited copies of it against the full corpus: exact copy, changed case and
  punctuation, sentences shuffled, one sentence dropped, one sentence of another article
  appended, one word replaced, a prefix added;
- *qa*: what a write-back of a world question would hold ("question answer."), against the corpus.
Printed per shingle size: quantiles of each, and for each threshold the share of distinct
documents it would wrongly reject and of duplicates it would let through.

Last output line: a JSON object with the quantiles, the error rates per threshold and the
threshold with the fewest errors, for each shingle size.
"""

from __future__ import annotations

import argparse
import json
import random
import re

import numpy as np

from zerosearch_env.data.world import generate_world
from zerosearch_env.search.writeback import WriteBackCorpus, jaccard, shingles

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def edited_copies(text: str, other_text: str, rng: random.Random) -> dict[str, str]:
    """Near duplicates of `text` made by the edits a rewriting agent makes."""
    sents = _SENTENCE_END.split(text)
    out = {"copy": text, "case_punct": text.upper().replace(".", " ;")}
    shuffled = sents[:]
    rng.shuffle(shuffled)
    out["shuffled"] = " ".join(shuffled)
    if len(sents) >= 3:
        i = rng.randrange(len(sents))
        out["drop_sentence"] = " ".join(sents[:i] + sents[i + 1:])
    out["append_sentence"] = f"{text} {_SENTENCE_END.split(other_text)[0]}"
    words = text.split()
    words[rng.randrange(len(words))] = "something"
    out["one_word"] = " ".join(words)
    out["prefixed"] = "According to the encyclopedia, " + text
    return out


def max_similarity(corpus: WriteBackCorpus, text: str, size: int, exclude: str | None = None) -> float:
    """The gate's novelty measure: max shingle Jaccard with the top BM25 hits of `text`."""
    mine, best = shingles(text, size), 0.0
    hits = corpus.search_ids(text, corpus.novelty_top_k + 1)
    for doc in (corpus.get(i) for i in hits if i != exclude):
        best = max(best, jaccard(mine, shingles(doc.text, size)))
    return best


def measure(seeds: list[int], sizes: list[int], thresholds: list[float]) -> dict:
    result: dict = {}
    rng = random.Random(0)
    sims: dict[int, dict[str, list[float]]] = {s: {"distinct": [], "duplicate": [], "qa": []} for s in sizes}
    by_kind: dict[int, dict[str, list[float]]] = {s: {} for s in sizes}
    for seed in seeds:
        world = generate_world(seed)
        corpus = WriteBackCorpus(world.documents)
        docs = world.documents
        tasks = world.tasks[:: max(1, len(world.tasks) // 1000)]
        for n, doc in enumerate(docs):
            copies = edited_copies(doc.text, docs[(n + 1 + rng.randrange(len(docs) - 1)) % len(docs)].text, rng)
            for size in sizes:
                sims[size]["distinct"].append(max_similarity(corpus, doc.text, size, exclude=doc.id))
                for kind, text in copies.items():
                    s = max_similarity(corpus, text, size)
                    sims[size]["duplicate"].append(s)
                    by_kind[size].setdefault(kind, []).append(s)
        for task in tasks:
            for size in sizes:
                sims[size]["qa"].append(max_similarity(corpus, f"{task.question} {task.answers[0]}.", size))
    for size in sizes:
        quant = {name: {p: round(float(np.quantile(v, q)), 3) for p, q in
                        (("min", 0), ("p01", .01), ("p05", .05), ("p50", .5), ("p95", .95), ("p99", .99), ("max", 1))}
                 for name, v in sims[size].items()}
        errors = {}
        for t in thresholds:
            false_reject = float(np.mean(np.asarray(sims[size]["distinct"]) >= t))
            missed = float(np.mean(np.asarray(sims[size]["duplicate"]) < t))
            qa_reject = float(np.mean(np.asarray(sims[size]["qa"]) >= t))
            errors[str(t)] = {"distinct_rejected": round(false_reject, 4), "duplicates_missed": round(missed, 4),
                              "qa_rejected": round(qa_reject, 4)}
        best = min(thresholds, key=lambda t: (errors[str(t)]["distinct_rejected"] + errors[str(t)]["duplicates_missed"], t))
        result[f"shingle_{size}"] = {
            "quantiles": quant, "errors": errors, "best_threshold": best,
            "duplicate_min_by_kind": {k: round(min(v), 3) for k, v in by_kind[size].items()},
            "n_distinct": len(sims[size]["distinct"]), "n_duplicate": len(sims[size]["duplicate"]),
            "n_qa": len(sims[size]["qa"])}
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="world seeds (default 0 1)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 3], help="shingle sizes in words (default 2 3)")
    ap.add_argument("--thresholds", type=float, nargs="+",
                    default=[0.3, 0.35, 0.375, 0.4, 0.45, 0.5, 0.6], help="Jaccard thresholds to score")
    args = ap.parse_args(argv)
    result = measure(args.seeds, args.sizes, args.thresholds)
    for name, r in result.items():
        print(f"{name}: {r['n_distinct']} distinct, {r['n_duplicate']} duplicates, {r['n_qa']} qa write-backs")
        for kind, q in r["quantiles"].items():
            print(f"  {kind:9s} " + "  ".join(f"{p} {v:.3f}" for p, v in q.items()))
        print("  duplicate min by edit: " + ", ".join(f"{k} {v:.3f}" for k, v in r["duplicate_min_by_kind"].items()))
        print("  threshold  distinct_rejected  duplicates_missed  qa_rejected")
        for t, e in r["errors"].items():
            print(f"  {t:>9s}  {e['distinct_rejected']:17.4f}  {e['duplicates_missed']:17.4f}  {e['qa_rejected']:11.4f}")
        print(f"  fewest errors at threshold {r['best_threshold']}")
    print(json.dumps(result, sort_keys=True))
    return result


if __name__ == "__main__":
    main()
