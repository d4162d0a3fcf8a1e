"""How much learning signal GRPO gets from a policy: sample groups on training questions against BM25
and count the groups whose rewards differ (the only groups with a non-zero advantage), by question kind
and sampling temperature. A budget is large enough only if enough informative groups reach the update.

    python benchmarks/grpo_signal.py CHECKPOINT --per-kind 8 --group-size 8 --temperatures 1.0,1.3

Prints, per temperature and question kind: groups, the share of informative groups, the mean reward,
the share of groups with at least one right answer, searches per episode; then one JSON line. The
questions are a seeded sample of the training split of world 0 (the questions GRPO trains on).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="policy folder (a zerosearch train checkpoint)")
    ap.add_argument("--per-kind", type=int, default=8, help="training questions per kind (single, bridge, comparison)")
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--temperatures", default="1.0", help="comma-separated sampling temperatures")
    ap.add_argument("--chunk", type=int, default=4, help="questions sampled side by side")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from agents.policy import Policy
    from agents.rollout import collect_groups
    from agents.train_config import preset
    from agents.trainer import load_policy_model, prepare_policy
    from zerosearch_env.data import load_tasks
    from zerosearch_env.vector_env import make_vec

    cfg = preset("tiny")
    env_cfg = cfg.env_config().updated(backend="bm25", backend_options={})
    tasks = load_tasks(env_cfg.dataset, split="train", world_seed=env_cfg.world_seed)
    rng = random.Random(args.seed)
    by_kind = defaultdict(list)
    for t in tasks:
        by_kind[t.kind].append(t)
    sample = [t for kind in sorted(by_kind) for t in rng.sample(by_kind[kind], min(args.per_kind, len(by_kind[kind])))]
    model, tokenizer = load_policy_model(args.checkpoint)
    prepared = prepare_policy(model, tokenizer, None, None, cfg.precision)
    vec = make_vec(args.chunk * args.group_size, env_cfg, tasks=sample)
    out = {"checkpoint": args.checkpoint, "group_size": args.group_size, "questions": len(sample), "by_temperature": {}}
    for temp in [float(x) for x in args.temperatures.split(",")]:
        policy = Policy(prepared.model, prepared.tokenizer, max_new_tokens=cfg.grpo.max_new_tokens, temperature=temp,
                        autocast_dtype=prepared.autocast)
        generator = torch.Generator(device=prepared.device).manual_seed(args.seed)
        t0 = time.perf_counter()
        trajs = collect_groups(policy, vec, sample, args.group_size, step=0, generator=generator, salt=f"t{temp}")
        seconds = time.perf_counter() - t0
        rows = defaultdict(lambda: {"groups": 0, "informative": 0, "reward": 0.0, "any_right": 0, "searches": 0.0})
        for g in range(len(sample)):
            group = trajs[g * args.group_size:(g + 1) * args.group_size]
            rewards = [t.reward for t in group]
            for kind in (sample[g].kind, "all"):
                r = rows[kind]
                r["groups"] += 1
                r["informative"] += int(max(rewards) > min(rewards))
                r["reward"] += sum(rewards) / len(rewards)
                r["any_right"] += int(any(t.info["em"] > 0 for t in group))
                r["searches"] += sum(t.info["num_searches"] for t in group) / len(group)
        table = {k: {"groups": r["groups"], "informative_share": r["informative"] / r["groups"],
                     "mean_reward": r["reward"] / r["groups"], "any_right_share": r["any_right"] / r["groups"],
                     "searches_per_episode": r["searches"] / r["groups"]} for k, r in rows.items()}
        out["by_temperature"][str(temp)] = {"seconds": seconds, "kinds": table}
        print(f"temperature {temp} ({seconds:.0f} s, {len(sample)} questions x {args.group_size})")
        print("| kind | groups | informative | mean reward | any right | searches/ep |\n|---|---|---|---|---|---|")
        for k in sorted(table):
            r = table[k]
            print(f"| {k} | {r['groups']} | {r['informative_share']:.2f} | {r['mean_reward']:.3f} | "
                  f"{r['any_right_share']:.2f} | {r['searches_per_episode']:.2f} |")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
