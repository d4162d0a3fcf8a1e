"""`zerosearch train`: warm-up on oracle trajectories, then GRPO against the simulator.

    zerosearch train --preset tiny --output runs/tiny          # the embedded default (CPU)
    zerosearch train --config my.yaml --max-steps 50 --output runs/x
    zerosearch train --preset tiny --output runs/tiny --resume # continue from runs/tiny/checkpoint

Writes into --output: metrics.jsonl (one row per training step), curves.png, checkpoint/
(model, tokenizer, optimizer, curriculum state, RNG states, data-order position) and
train_summary.json (wall time, peak memory) and, with `eval_tasks` > 0, eval_heldout.json (the
trained policy on that many test questions, greedy, BM25 by default: `eval_backend`).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=("tiny", "gpu"), default=None, help="a built-in configuration (default: tiny)")
    src.add_argument("--config", default=None, help="a YAML/JSON TrainConfig file (may name a preset to start from)")
    parser.add_argument("--output", default="runs/tiny", help="run folder (metrics.jsonl, curves.png, checkpoint/)")
    parser.add_argument("--max-steps", type=int, default=None, help="GRPO steps to run (default: the config's grpo.steps)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint")
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed")
    parser.add_argument("--no-warmup", action="store_true", help="skip the supervised warm-up")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def resolve_config(args: argparse.Namespace):
    from agents.train_config import TrainConfig, preset

    cfg = TrainConfig.load(args.config) if args.config else preset(args.preset or "tiny")
    if args.seed is not None:
        cfg = cfg.model_copy(update={"seed": int(args.seed)})
    if args.no_warmup:
        cfg = cfg.model_copy(update={"warmup": cfg.warmup.model_copy(update={"enabled": False})})
    return cfg


def run(args: argparse.Namespace) -> int:
    try:
        cfg = resolve_config(args)
    except (OSError, ValueError) as e:
        print(f"zerosearch train: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(cfg.model_dump_json(indent=1))
        return 0
    if args.max_steps is not None and args.max_steps < 0:
        print("zerosearch train: --max-steps must be >= 0", file=sys.stderr)
        return 2
    from agents.trainer import train

    t0 = time.perf_counter()
    result = train(cfg, args.output, max_steps=args.max_steps, resume=args.resume, progress=not args.no_progress)
    wall = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    out = Path(args.output)
    grpo = [r for r in result.rows if r.get("phase") == "grpo"]
    summary = {"preset": cfg.preset, "wall_s": round(wall, 1), "peak_rss_gb": round(peak_gb, 2),
               "warmup_steps": sum(r.get("phase") == "warmup" for r in result.rows), "grpo_steps": len(grpo),
               "last_grpo": grpo[-1] if grpo else None}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(f"trained in {wall:.0f} s, peak memory {peak_gb:.2f} GB")
    print(f"metrics: {out / 'metrics.jsonl'}\ncurves:  {out / 'curves.png'}\nmodel:   {out / 'checkpoint'}")
    if cfg.eval_tasks > 0:
        from agents.trainer import HELDOUT_FILE

        print(f"held-out evaluation: {out / HELDOUT_FILE}")
    return 0
