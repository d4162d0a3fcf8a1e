"""Cost of growing a `WriteBackCorpus` one document at a time against rebuilding the index.

Over the built-in world's articles (several seeds' worlds concatenated for a bigger corpus), in
one run and side by side:
- *incremental*: the index update alone per added document, and a whole gated `add` (the gate's
  BM25 novelty search plus the index update);
- *rebuild*: building the index from scratch over the grown corpus, both ours
  (`WriteBackCorpus(documents)`) and `bm25s`'s (what `BM25Search` builds, in memory, not saved);
- *query*: one search through each index (`WriteBackCorpus` vs `BM25Search`).
The ratios say how many incremental additions cost as much as one rebuild.

Last output line: a JSON object with `insert_us_per_doc`, `gated_add_us_per_doc`,
`rebuild_ms_writeback`, `rebuild_ms_bm25s`, `rebuild_over_insert`, `rebuild_bm25s_over_insert`,
`rebuild_over_gated_add`, `query_us_writeback`, `query_us_bm25search` and `query_ratio`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from zerosearch_env.data.world import generate_world
from zerosearch_env.search.base import Document, SearchRequest
from zerosearch_env.search.bm25 import BM25Search, tokenize
from zerosearch_env.search.writeback import Provenance, WriteBackCandidate, WriteBackCorpus


def candidates_from(world, limit: int) -> list[WriteBackCandidate]:
    """Write-backs of `world`'s questions: "question answer." citing the supporting articles."""
    by_title = {d.title: d.id for d in world.documents}
    out = []
    for task in world.tasks:
        ids = tuple(by_title[t] for t in task.supporting_titles if t in by_title)
        if ids:
            out.append(WriteBackCandidate(task.question, task.answers[0], ids, f"{task.question} {task.answers[0]}."))
        if len(out) == limit:
            break
    return out


def timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` runs."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", type=int, default=4, help="how many world seeds make the base corpus (default 4)")
    ap.add_argument("--adds", type=int, default=300, help="documents added incrementally (default 300)")
    ap.add_argument("--repeats", type=int, default=5, help="rebuild timings to take the median of (default 5)")
    ap.add_argument("--queries", type=int, default=500, help="queries for the search timing (default 500)")
    args = ap.parse_args(argv)
    import bm25s

    worlds = [generate_world(seed) for seed in range(args.worlds)]
    base = [d for w in worlds for d in w.documents]
    cands = candidates_from(worlds[0], args.adds)
    print(f"base corpus: {len(base)} documents ({args.worlds} worlds); adding {len(cands)}")

    # the index update alone: new documents straight into the inverted index
    corpus = WriteBackCorpus(base)
    new_docs = [Document(f"new-{i}", c.question, c.text) for i, c in enumerate(cands)]
    t = time.perf_counter()
    for d in new_docs:
        corpus._insert(d, None)  # the index update `add` performs after the gate
    insert_s = (time.perf_counter() - t) / len(new_docs)

    # a whole gated add (forced, so that every candidate is indexed whatever the gate says)
    corpus = WriteBackCorpus(base, clock=lambda: 0.0)
    t = time.perf_counter()
    accepted = 0
    for i, c in enumerate(cands):
        accepted += not corpus.add(c, Provenance(f"ep{i}", "bench"), force=True).forced
    gated_s = (time.perf_counter() - t) / len(cands)
    grown = corpus.documents

    rebuild_ours = timed(lambda: WriteBackCorpus(grown), args.repeats)

    def build_bm25s():
        tokens = [tokenize(f"{d.title}\n{d.text}") or ["\x00empty"] for d in grown]
        bm25s.BM25(k1=1.5, b=0.75).index(tokens, show_progress=False)

    rebuild_bm25s = timed(build_bm25s, args.repeats)

    queries = [SearchRequest(t.question, top_k=5) for w in worlds for t in w.tasks][:: 7][: args.queries]
    with tempfile.TemporaryDirectory() as tmp:
        bm = BM25Search(base, index_dir=tmp)
        bm.search(queries[:5])
        ours = WriteBackCorpus(base)
        q_bm = timed(lambda: bm.search(queries), 3) / len(queries)
        q_ours = timed(lambda: ours.search(queries), 3) / len(queries)

    result = {
        "base_docs": len(base), "added_docs": len(cands), "gate_accepted": accepted,
        "insert_us_per_doc": round(insert_s * 1e6, 1), "gated_add_us_per_doc": round(gated_s * 1e6, 1),
        "rebuild_ms_writeback": round(rebuild_ours * 1e3, 2), "rebuild_ms_bm25s": round(rebuild_bm25s * 1e3, 2),
        "rebuild_over_insert": round(rebuild_ours / insert_s, 1),
        "rebuild_bm25s_over_insert": round(rebuild_bm25s / insert_s, 1),
        "rebuild_over_gated_add": round(rebuild_ours / gated_s, 1),
        "rebuild_bm25s_over_gated_add": round(rebuild_bm25s / gated_s, 1),
        "query_us_writeback": round(q_ours * 1e6, 1), "query_us_bm25search": round(q_bm * 1e6, 1),
        "query_ratio": round(q_ours / q_bm, 2),
    }
    print(f"{'':28s}{'incremental':>14s}{'rebuild (ours)':>16s}{'rebuild (bm25s)':>17s}")
    print(f"{'index update per doc':28s}{result['insert_us_per_doc']:>11.1f} us"
          f"{result['rebuild_ms_writeback']:>13.2f} ms{result['rebuild_ms_bm25s']:>14.2f} ms"
          f"   ratio x{result['rebuild_over_insert']:.0f} / x{result['rebuild_bm25s_over_insert']:.0f}")
    print(f"{'gated add per doc':28s}{result['gated_add_us_per_doc']:>11.1f} us"
          f"{result['rebuild_ms_writeback']:>13.2f} ms{result['rebuild_ms_bm25s']:>14.2f} ms"
          f"   ratio x{result['rebuild_over_gated_add']:.0f} / x{result['rebuild_bm25s_over_gated_add']:.0f}")
    print(f"{'search per query':28s}{result['query_us_writeback']:>11.1f} us (ours)"
          f"   {result['query_us_bm25search']:.1f} us (BM25Search)   ratio x{result['query_ratio']:.2f}")
    print(json.dumps(result, sort_keys=True))
    return result


if __name__ == "__main__":
    main()
