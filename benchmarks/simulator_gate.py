"""The oracle ablation's answer-checking gate (`knowledge="oracle"`: the gold answer in every useful
prompt) with the default small model: how often the simulator gets it right on the first try, and
what the gate leaves after regenerations and repairs. The grounded simulator's gate (knowledge
sources, fallback) is tested in tests/test_simulator_gate.py.

    python benchmarks/simulator_gate.py            # 64 test questions of the built-in world

For each question the simulator answers one search (query = the question) in useful mode
(p_noisy = 0) and one in noisy mode (p_noisy = 1). Reported per mode: the first-try gate pass rate
(before any regeneration or repair), the pass rate after the regenerations, the repair share, and
after the gate the share of useful results containing a gold alias (goal 100%) and of noisy results
leaking one (goal 0%). Per-request records go to --out/gate_records.jsonl; the last output line is
one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Sequence


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="test questions")
    ap.add_argument("--model", default=None, help="model folder (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch-size", type=int, default=16, help="requests per search call")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--words-per-doc", type=int, default=25)
    ap.add_argument("--max-regenerations", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (1 avoids oversubscription stalls on a shared, busy CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--world-seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="folder for per-request records (JSONL)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from tqdm import tqdm

    from curricula import ConstantCurriculum
    from zerosearch_env.data import load_tasks
    from zerosearch_env.engines import TransformersEngine
    from zerosearch_env.engines.base import SamplingParams
    from zerosearch_env.search import SearchRequest
    from zerosearch_env.search.simulator import SimulatedSearch, contains_answer

    tasks = load_tasks("world", "test", world_seed=args.world_seed)
    random.Random(args.seed).shuffle(tasks)
    tasks = tasks[: args.n]
    engine = TransformersEngine(args.model, device=args.device, dtype=args.dtype)
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=0.95, seed=args.seed)
    records: list[dict] = []
    figures: dict = {"n": len(tasks), "model": args.model or "smollm2-135m-instruct", "top_k": args.top_k,
                     "words_per_doc": args.words_per_doc, "max_regenerations": args.max_regenerations,
                     "max_new_tokens": args.max_new_tokens}
    t_start = time.perf_counter()
    for mode, p in (("useful", 0.0), ("noisy", 1.0)):
        sim = SimulatedSearch(engine, curriculum=ConstantCurriculum(p), seed=args.seed, words_per_doc=args.words_per_doc,
                              max_regenerations=args.max_regenerations, sampling=sampling, knowledge="oracle")
        reqs = [SearchRequest(t.question, top_k=args.top_k, question=t.question, answers=t.answers,
                              episode_id=f"gate-{t.id}", search_index=0) for t in tasks]
        rows = []
        for i in tqdm(range(0, len(reqs), args.batch_size), desc=f"{mode} mode", file=sys.stdout):
            chunk = reqs[i: i + args.batch_size]
            docs, infos = sim.search_with_info(chunk)
            for r, d, info in zip(chunk, docs, infos):
                assert info["mode"] == mode
                row = {"mode": mode, "question": r.question, "answers": list(r.answers), "gate": info["gate"],
                       "attempts": info["attempts"], "n_docs": len(d),
                       "contains_answer": contains_answer(d, r.answers), "docs": [x.to_dict() for x in d]}
                rows.append(row)
        n = len(rows)
        first = sum(r["gate"] == "pass" and r["attempts"] == 1 for r in rows)
        after_regen = sum(r["gate"] == "pass" for r in rows)
        repaired = sum(r["gate"] == "repaired" for r in rows)
        hits = sum(r["contains_answer"] for r in rows)
        figures[f"{mode}_first_pass_rate"] = round(first / n, 4)
        figures[f"{mode}_pass_after_regenerations"] = round(after_regen / n, 4)
        figures[f"{mode}_repaired_rate"] = round(repaired / n, 4)
        figures[f"{mode}_mean_docs"] = round(sum(r["n_docs"] for r in rows) / n, 3)
        figures[f"{mode}_engine_calls"] = sim.stats()["engine_calls"]
        if mode == "useful":
            figures["useful_contains_answer_after_gate"] = round(hits / n, 4)
        else:
            figures["noisy_leak_after_gate"] = round(hits / n, 4)
        records.extend(rows)
        print(f"{mode}: {json.dumps({k: v for k, v in figures.items() if k.startswith(mode)})}", flush=True)
    figures["seconds"] = round(time.perf_counter() - t_start, 1)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "gate_records.jsonl").open("w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(json.dumps(figures), flush=True)
    return figures


if __name__ == "__main__":
    main()
