"""Draw useful simulated documents that passed the gate, for hand-labelling consistency errors.

    python benchmarks/consistency_sample.py OUT.jsonl --n 40 --seed 3

The simulator runs as the tiny preset trains against it (its `simulator` options, world knowledge,
noise 0, no regeneration) on the first-hop and second-hop queries of `--n` seeded bridge test
questions. Every document of a result that passed the gate on the engine's own text (not a
fallback, which is written from the facts and cannot contradict them) is one JSONL row: the query,
the knowledge's fact sentences, the document, and what the consistency check finds in it (nothing,
since it passed). A person then labels each row: does the document state a fact about a world
entity that the world contradicts, or invent one the closed world does not have? The labelled
file and its count are the "consistency errors per 100 useful documents after the gate" figure.
Prints the gate's pass and fallback shares of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="JSONL file of gate-passed useful documents")
    ap.add_argument("--n", type=int, default=40, help="bridge test questions (two queries each)")
    ap.add_argument("--seed", type=int, default=3, help="question sample and simulator seed")
    ap.add_argument("--batch", type=int, default=16, help="queries per simulator call")
    args = ap.parse_args(argv)

    from agents.fidelity import make_probes
    from agents.train_config import preset
    from zerosearch_env.search.base import SearchRequest
    from zerosearch_env.search.simulator import SimulatedSearch, make_engine
    from zerosearch_env.search.knowledge import knowledge_for_env
    from zerosearch_env.search.simulator.consistency import contradictions
    from curricula import ConstantCurriculum
    from zerosearch_env.data import load_tasks

    cfg = preset("tiny")
    env = cfg.env.updated(backend="simulator")
    tasks = [t for t in load_tasks("world", split="test", world_seed=env.world_seed) if t.kind == "bridge"]
    random.Random(args.seed).shuffle(tasks)
    probes = [p for p in make_probes(tasks[: args.n], pool=tasks, seed=args.seed)
              if p.kind in ("first_hop", "second_hop")]
    opts = dict(cfg.simulator)
    engine = make_engine(opts.pop("engine"), opts)
    knowledge = knowledge_for_env(env, "world")
    sim = SimulatedSearch(engine, curriculum=ConstantCurriculum(0.0),
                          max_doc_chars=env.max_doc_chars, knowledge=knowledge, seed=args.seed,
                          words_per_doc=opts.get("words_per_doc", 24), max_regenerations=opts.get("max_regenerations", 0))
    requests = [SearchRequest(p.query, top_k=env.top_k, question=p.task.question, answers=p.task.answers,
                              episode_id=f"consistency-{i}", supporting_titles=p.task.supporting_titles)
                for i, p in enumerate(probes)]
    rows, gates = [], []
    for start in range(0, len(requests), args.batch):
        chunk = requests[start:start + args.batch]
        docs, infos = sim.search_with_info(chunk)
        for req, ds, info in zip(chunk, docs, infos):
            gates.append(info["gate"])
            if info["gate"] != "pass":
                continue
            kn = knowledge.lookup(req)
            for d in ds:
                rows.append({"query": req.query, "facts": list(kn.sentences), "title": d.title, "text": d.text,
                             "flagged": [list(c) for c in contradictions(f"{d.title}\n{d.text}", kn)]})
        print(f"consistency_sample: {min(start + args.batch, len(requests))}/{len(requests)} queries", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    n = len(gates)
    print(json.dumps({"queries": n, "pass": gates.count("pass") / n, "fallback": gates.count("fallback") / n,
                      "documents": len(rows)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
