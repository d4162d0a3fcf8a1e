"""`zerosearch demo`: the three baseline agents on the built-in world with real BM25 search.

    zerosearch demo                       # 300 test questions, 32 parallel episodes
    zerosearch demo --episodes 0          # the whole split
    zerosearch demo --out runs/demo       # also write records.jsonl and summary.json

Oracle (follows the gold chain of supporting articles: search is sufficient), closed-book (the
most common training answer of each template: search is necessary) and random agents run on
`SearchVectorEnv` over the same sampled questions; a table of EM / F1 / searches / invalid rate
per agent is printed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

AGENTS = ("oracle", "closed_book", "random")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--episodes", type=int, default=300,
                        help="questions per agent, sampled from the split (0 or more than the split: all)")
    parser.add_argument("--split", default="test", choices=("train", "test", "all"))
    parser.add_argument("--num-envs", type=int, default=32, help="parallel episodes in the vector env")
    parser.add_argument("--seed", type=int, default=0, help="seed of the question sample and the random agent")
    parser.add_argument("--world-seed", type=int, default=0, help="seed of the built-in fictional world")
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--agents", default=",".join(AGENTS), help=f"comma-separated subset of {','.join(AGENTS)}")
    parser.add_argument("--out", default=None, help="folder for records.jsonl and summary.json")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def format_table(summaries: dict[str, dict]) -> str:
    """A plain-text table of the headline figures, one row per agent."""
    cols = [("EM", "em"), ("F1", "f1"), ("searches/ep", "searches_per_episode"),
            ("invalid rate", "invalid_rate"), ("format", "format_compliance"),
            ("ans in results", "answer_in_results"), ("n", "n")]
    rows = [["agent"] + [c for c, _ in cols]]
    for name, s in summaries.items():
        cells = [name]
        for _, key in cols:
            v = s.get(key)
            cells.append("-" if v is None else (str(v) if isinstance(v, int) else f"{v:.3f}"))
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from agents.baselines import ClosedBookAgent, OracleAgent, RandomAgent
    from agents.evaluate import run_episodes, summarize
    from zerosearch_env import EnvConfig, make_vec
    from zerosearch_env.data.world import generate_world
    from zerosearch_env.search.bm25 import BM25Search

    names = [a.strip() for a in args.agents.split(",") if a.strip()]
    bad = [a for a in names if a not in AGENTS]
    if bad or not names:
        print(f"zerosearch demo: unknown agent(s) {bad}; choose from {', '.join(AGENTS)}", file=sys.stderr)
        return 2
    if args.num_envs < 1:
        print("zerosearch demo: --num-envs must be >= 1", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    world = generate_world(args.world_seed)
    t_world = time.perf_counter() - t0
    tasks = world.split(args.split)
    if 0 < args.episodes < len(tasks):
        tasks = random.Random(args.seed).sample(tasks, args.episodes)
    t0 = time.perf_counter()
    backend = BM25Search(world.documents)
    t_index = time.perf_counter() - t0
    config = EnvConfig(world_seed=args.world_seed, split=args.split, max_turns=args.max_turns,
                       top_k=args.top_k, seed=args.seed)
    vec = make_vec(min(args.num_envs, len(tasks)), config, backend=backend, tasks=world.tasks)
    print(f"world seed {args.world_seed}: {len(world.entities)} entities, {len(world.documents)} articles, "
          f"{len(world.tasks)} questions (generated in {t_world:.2f}s); BM25 index "
          f"{'built' if backend.rebuilt else 'loaded'} in {t_index:.2f}s; {len(tasks)} {args.split} questions "
          f"per agent, {vec.num_envs} parallel episodes")

    builders = {"oracle": lambda: OracleAgent(world.tasks), "closed_book": lambda: ClosedBookAgent(world.tasks),
                "random": lambda: RandomAgent(seed=args.seed)}
    summaries: dict[str, dict] = {}
    all_records: list[dict] = []
    for name in names:
        agent = builders[name]()
        t0 = time.perf_counter()
        records = run_episodes(agent, vec, tasks, progress=not args.no_progress, desc=f"demo {name}")
        summaries[name] = {**summarize(records), "wall_s": time.perf_counter() - t0}
        all_records += [{"agent": name, **r} for r in records]
    vec.close()
    print(format_table(summaries))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "records.jsonl").open("w", encoding="utf-8") as f:
            for r in all_records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        (out / "summary.json").write_text(json.dumps(summaries, indent=2), encoding="utf-8")
        print(f"wrote {out / 'records.jsonl'} and {out / 'summary.json'}")
    return 0
