"""`zerosearch sprm-fit`: fit a checkpoint's SPRM head on the policy's own rollouts.

    zerosearch sprm-fit --checkpoint runs/sig --calibration --tasks 160 --samples 4
    zerosearch eval --checkpoint runs/sig --calibration --best-of 4 --sprm-head runs/sig/checkpoint/sprm_head_fit.pt

The policy is frozen. It samples `--samples` trajectories (at the training temperature) for each of
`--tasks` seeded *training* questions; each is labelled by exact match, its step states are read
once, and the head trains on them for `--epochs` full-batch epochs, holding out
`--val-fraction` of the questions to choose the epoch (`agents.sprm_fit`). Test questions are
never seen, so `zerosearch eval --best-of N` on the test split stays a held-out measurement.

Writes the head (`--output`, default `<checkpoint>/sprm_head_fit.pt`; the checkpoint's own
`sprm_head.pt` is left as it is), a JSON report and a PNG of loss and AUROC against epoch next to
it. `--states FILE` keeps the sampled step states: when FILE exists it is read instead of
sampling, so other fitting settings cost seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.add_argument("--checkpoint", required=True, help="a run folder (its checkpoint/) or a model folder")
    parser.add_argument("--config", default=None, help="TrainConfig file for env/simulator settings (default: tiny preset)")
    parser.add_argument("--backend", choices=("bm25", "simulator"), default="bm25", help="search backend of the rollouts")
    parser.add_argument("--noise", type=float, default=0.0, help="simulator: probability of noisy results")
    parser.add_argument("--calibration", action="store_true",
                        help="the calibration-mode prompt (use it when the policy was trained with env.calibration)")
    parser.add_argument("--tasks", type=int, default=160, help="training questions to sample on")
    parser.add_argument("--samples", type=int, default=4, help="trajectories per question")
    parser.add_argument("--num-envs", type=int, default=32, help="episodes run side by side (a multiple of --samples)")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--dynamic", action="store_true",
                        help="dynamic weighting of the SPR loss (default: plain class balance; see agents/sprm_fit.py)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of questions held out to pick the epoch")
    parser.add_argument("--mlp-size", type=int, default=None,
                        help="head width (default: the checkpoint head's, else 128; 0 = a linear probe)")
    parser.add_argument("--states", default=None, help="step-state file: read if it exists, else written after sampling")
    parser.add_argument("--output", default=None, help="head file to write (default: <checkpoint>/sprm_head_fit.pt)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")


def _fail(msg: str) -> int:
    print(f"zerosearch sprm-fit: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from agents.train_config import TrainConfig, preset

    if not 0.0 <= args.noise <= 1.0:
        return _fail("--noise must be in [0, 1]")
    if args.tasks < 2 or args.samples < 1 or args.epochs < 1:
        return _fail("--tasks must be >= 2, --samples and --epochs >= 1")
    if not 0.0 <= args.val_fraction < 1.0:
        return _fail("--val-fraction must be in [0, 1)")
    if args.mlp_size is not None and args.mlp_size < 0:
        return _fail("--mlp-size must be >= 0")
    try:
        cfg = TrainConfig.load(args.config) if args.config else preset("tiny")
        from agents.commands.compare import find_checkpoint
        from agents.evaluate import env_for

        model_dir = find_checkpoint(args.checkpoint)
    except (OSError, ValueError) as e:
        return _fail(str(e))
    import torch

    from agents.policy import Policy
    from agents.rollout import collect_groups
    from agents.sprm import HEAD_FILE, SPRMHead
    from agents.sprm_fit import StepStates, extract_step_states, fit_head, plot_fit
    from agents.trainer import load_policy_model, resolve_autocast, set_torch_threads
    from zerosearch_env.data import load_tasks
    from zerosearch_env.vector_env import make_vec

    set_torch_threads(cfg.threads)
    progress = not args.no_progress
    model, tok = load_policy_model(model_dir)
    model.eval()
    device = next(model.parameters()).device
    autocast = resolve_autocast(cfg.precision, device)
    t0 = time.perf_counter()
    sampled = None
    if args.states and Path(args.states).exists():
        data = StepStates.load(args.states)
        print(f"step states: {args.states} ({data.num_trajectories} trajectories, {data.states.shape[0]} steps)")
    else:
        env = env_for(cfg, args.backend, args.noise, args.calibration)
        tasks = load_tasks(env.dataset, split="train", world_seed=env.world_seed)
        random.Random(args.seed).shuffle(tasks)
        tasks = tasks[: args.tasks]
        per = max(1, args.num_envs // args.samples)
        vec = make_vec(per * args.samples, env, tasks=tasks)
        sampler = Policy(model, tok, max_new_tokens=cfg.grpo.max_new_tokens, temperature=cfg.grpo.temperature,
                         autocast_dtype=autocast)
        gen = torch.Generator(device=device).manual_seed(args.seed)
        trajs = collect_groups(sampler, vec, tasks, args.samples, generator=gen, salt="sprm-fit",
                               progress=progress, desc="rollouts", max_completion_tokens=cfg.grpo.max_completion_tokens)
        sampled = {"backend": args.backend, "noise": args.noise if args.backend == "simulator" else None,
                   "calibration": env.calibration, "tasks": len(tasks), "samples": args.samples,
                   "em": sum(float(t.info.get("em") or 0.0) for t in trajs) / len(trajs),
                   "seconds": round(time.perf_counter() - t0, 1)}
        t1 = time.perf_counter()
        data = extract_step_states(model, trajs, tok, think_paragraphs=cfg.signals.sprm_think_paragraphs,
                                   autocast_dtype=autocast, progress=progress)
        sampled["state_seconds"] = round(time.perf_counter() - t1, 1)
        print(f"sampled {len(trajs)} rollouts of {len(tasks)} training questions: EM {sampled['em']:.3f} "
              f"({sampled['seconds']:.0f} s), step states {data.states.shape[0]} ({sampled['state_seconds']:.0f} s)")
        if args.states:
            data.save(args.states)
            print(f"step states: {args.states}")
    mlp = args.mlp_size
    if mlp is None:
        own = Path(model_dir) / HEAD_FILE
        mlp = SPRMHead.load(own).mlp_size if own.exists() else 128
    head = SPRMHead(int(model.config.hidden_size), mlp)
    try:
        report = fit_head(head, data, epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                          dynamic=args.dynamic, val_fraction=args.val_fraction, seed=args.seed, progress=progress)
    except ValueError as e:
        return _fail(str(e))
    output = Path(args.output) if args.output else Path(model_dir) / "sprm_head_fit.pt"
    if output.suffix != ".pt":
        return _fail(f"--output must name a .pt file, got {output}")
    head.save(output)
    report = {"checkpoint": str(model_dir), "head": str(output), "mlp_size": mlp, "rollouts": sampled,
              "states_file": args.states, **report}
    report_path = output.with_suffix(".json")
    report_path.write_text(json.dumps(report, indent=1), encoding="utf-8")
    plot_fit(report, output.with_suffix(".png"))
    sel = report["val_selection"]
    print(f"kept epoch {report['best_epoch']}: AUROC training questions {report['train_auroc']:.3f}, held-out "
          f"questions {report['val_auroc'] if report['val_auroc'] is None else round(report['val_auroc'], 3)} "
          f"({report['val_questions']} questions; chosen on them, so optimistic)")
    if sel["questions"]:
        print(f"held-out best-of-{args.samples} EM {sel['best_of_n_em']:.3f} | best-of-1 {sel['best_of_1_em']:.3f} | "
              f"pass@{args.samples} {sel['pass_at_n']:.3f}")
    print(f"head: {output}\nreport: {report_path} (+ {output.with_suffix('.png').name})")
    return 0
