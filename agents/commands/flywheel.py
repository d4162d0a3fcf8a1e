"""`zerosearch flywheel`: the serving loop as training data, round after round, with its ablations.

    zerosearch flywheel --rounds 3 --output runs/flywheel                 # full system, default config
    zerosearch flywheel --rounds 3 --ablations gate,defences,frontier,shuffle --output runs/fw
    zerosearch flywheel --config fw.yaml --checkpoint runs/tiny --output runs/fw-tiny

Each round serves user questions (train split) with the current policy searching a corpus that
grows by gated write-back while an adversary plants documents, harvests the serving trajectories
as GRPO data (frontier filter, shuffled document order, Brier term, collapse monitors), trains a
few GRPO steps, and evaluates greedily on held-out test questions with BM25 over the original
corpus (agents/flywheel.py describes the loop). --ablations adds one run per part switched off,
each from the same starting model and seed. Start from a policy that follows the search protocol
(a `zerosearch train` checkpoint): the untrained 135M model neither searches nor answers, so
nothing reaches the gate. --print-config shows every hyperparameter (FlywheelConfig).

Writes into --output: flywheel.json (every run's config, per-round figures, write-back log with
provenance, rollback check), flywheel_table.txt (the printed table), flywheel.png (the curves),
and per run <run>/rounds.jsonl and <run>/corpus/ (the final corpus: documents, provenance).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

FIGURES_HELP = """figures (one row per run and round; round 0 is the starting policy):
  EM         held-out exact match: greedy, test questions, BM25 over the ORIGINAL world corpus
  acc        write-back documents accepted this round (forced in when the gate is ablated)
  true+      accepted documents whose answer matches the world's gold answer
  pollut     false accepted / accepted, over the write-backs live in the corpus
  attack     share of live attacks whose target question, asked as a query, gets a top document
             stating the false answer (defended retrieval; undefended with --ablations defences;
             flywheel.json has both in every run)
  fflag      genuine (not planted) documents the defences quarantined / documents they checked
  posbias    share of answers found at rank 1 of the last served list minus the share of
             episodes whose first gold-stating document sat at rank 1 (0: no pull to the top)
  ECE        expected calibration error of the stated confidences (only with calibration: true)
  H          mean normalised entropy of the collapse monitors (search count, query style,
             answer length) over the round's serving samples
  kept       served groups kept for training (pass rate strictly in (0, 1) with the frontier filter)
  train_min  minutes of GRPO updates in the round
ablations: gate (force every answered episode into the corpus), defences (serve the raw corpus),
  frontier (train on every group), shuffle (serve result lists in BM25 order)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__.replace("`", "")
    parser.epilog = FIGURES_HELP
    parser.add_argument("--rounds", type=int, default=None, help="rounds to run (default: the config's, 3)")
    parser.add_argument("--config", default=None, help="a YAML/JSON FlywheelConfig file (every hyperparameter)")
    parser.add_argument("--output", default=None, help="output folder (default runs/flywheel-<time>)")
    parser.add_argument("--ablations", default="",
                        help="comma-separated parts to switch off, one extra run each: gate,defences,frontier,shuffle")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, help="policy model folder (default: the config's, else the small model)")
    src.add_argument("--checkpoint", default=None,
                     help="a `zerosearch train` run folder (its checkpoint/) or a checkpoint folder to start from")
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _checkpoint_folder(path: str) -> str:
    p = Path(path)
    if (p / "checkpoint" / "config.json").exists():
        return str(p / "checkpoint")
    if (p / "config.json").exists():
        return str(p)
    raise ValueError(f"--checkpoint {path}: neither it nor {p / 'checkpoint'} holds a model (config.json)")


def resolve(args: argparse.Namespace):
    """(config, ablation names) from the arguments; ValueError on a bad one."""
    from agents.flywheel import ABLATIONS, FlywheelConfig

    cfg = FlywheelConfig.load(args.config) if args.config else FlywheelConfig()
    update = {}
    if args.rounds is not None:
        if args.rounds < 1:
            raise ValueError("--rounds must be >= 1")
        update["rounds"] = args.rounds
    if args.seed is not None:
        update["seed"] = args.seed
    if args.model is not None:
        update["model"] = args.model
    if args.checkpoint is not None:
        update["model"] = _checkpoint_folder(args.checkpoint)
    cfg = FlywheelConfig.model_validate({**cfg.model_dump(), **update})
    names = [a.strip() for a in (args.ablations or "").split(",") if a.strip()]
    unknown = [a for a in names if a not in ABLATIONS]
    if unknown:
        raise ValueError(f"--ablations: unknown {', '.join(unknown)}; choose from {', '.join(ABLATIONS)}")
    return cfg, list(dict.fromkeys(names))


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    try:
        cfg, ablations = resolve(args)
    except (OSError, ValueError, ValidationError) as e:
        print(f"zerosearch flywheel: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(cfg.model_dump_json(indent=1))
        return 0
    from agents.flywheel import PLOT_FILE, RESULT_FILE, TABLE_FILE, format_table, run_ablations

    out = Path(args.output or f"runs/flywheel-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and not out.is_dir():
        print(f"zerosearch flywheel: --output {out} is a file, not a folder", file=sys.stderr)
        return 2
    print(f"flywheel: {cfg.rounds} rounds x {cfg.questions_per_round} questions, runs: "
          f"{', '.join(['full', *[f'no-{a}' for a in ablations]])}; output {out}", flush=True)
    t0 = time.perf_counter()
    runs = run_ablations(cfg, out, ablations, progress=not args.no_progress)
    print(format_table(runs))
    for r in runs:
        if r.rollback_check:
            print(f"{r.label}: rollback of round {r.rollback_check['round']} removed {r.rollback_check['removed']} "
                  f"documents; index bytes restored: {r.rollback_check['restores_bytes']}")
    print(f"{time.perf_counter() - t0:.0f}s; wrote {out / RESULT_FILE}, {out / TABLE_FILE} and {out / PLOT_FILE}")
    return 0
