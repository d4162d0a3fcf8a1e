"""`zerosearch eval`: EM, F1, format compliance, searches per episode and invalid-action rate of a
policy or a baseline agent on a split, per question kind, with BM25 or the simulator.

    zerosearch eval --checkpoint runs/tiny --backend bm25 --n 300 --output runs/tiny/eval_bm25.json
    zerosearch eval --base-model --backend simulator --noise 0.5 --n 300 --output base_sim05.json
    zerosearch eval --agent oracle --backend bm25

Env settings (top_k, max_doc_chars, max_turns) and the simulator's options come from the tiny
preset, or from --config (a TrainConfig file), so evaluation matches training. Policies decode
greedily.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--checkpoint", default=None, help="a run folder (its checkpoint/) or a model folder")
    who.add_argument("--base-model", nargs="?", const="", default=None,
                     help="an untrained model folder (no value: the default small model)")
    who.add_argument("--agent", choices=("oracle", "closedbook", "random"), default=None, help="a baseline agent")
    parser.add_argument("--backend", choices=("bm25", "simulator"), default="bm25")
    parser.add_argument("--noise", type=float, default=0.0, help="simulator: probability of noisy results")
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--n", type=int, default=300, help="questions (a seeded sample of the split; 0: all)")
    parser.add_argument("--config", default=None, help="TrainConfig file for env/simulator settings (default: tiny preset)")
    parser.add_argument("--num-envs", type=int, default=32, help="episodes run side by side")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="tokens per agent turn (default: the config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="write the JSON report here")
    parser.add_argument("--records", action="store_true", help="include per-question records in the report")
    parser.add_argument("--paired-with", default=None, metavar="REPORT", help=(
        "an earlier eval report written with --records on the same questions (e.g. the base model's): print "
        "and store the paired EM difference (this run minus that one) with its standard error and an exact "
        "McNemar test; implies --records"))
    parser.add_argument("--max-invalid-streak", type=int, default=None, metavar="K", help=(
        "end an episode after K invalid turns in a row (default: only the turn budget ends it); an untrained "
        "model that never writes a tag then costs K turns, not max_turns. Use the same K for models you pair"))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--best-of", type=int, default=1, help=(
        "N > 1: also sample N trajectories per question and keep the one the checkpoint's SPRM head scores "
        "highest (a run trained with signals.sprm); reports best-of-N vs best-of-1 EM and SPRM AUROC"))
    parser.add_argument("--sprm-head", nargs="+", default=None, metavar="FILE", help=(
        "with --best-of: the SPRM head file(s) to rank with (default: the checkpoint's sprm_head.pt; "
        "`zerosearch sprm-fit` writes sprm_head_fit.pt). The first one chooses; every further one scores "
        "the same samples and is reported beside it"))
    parser.add_argument("--calibration", action="store_true", help=(
        "ask for <confidence>q</confidence> after the answer; the report adds ECE (10 bins), Brier score "
        "and AUROC of confidence vs EM"))


def run(args: argparse.Namespace) -> int:
    from agents.train_config import TrainConfig, preset

    if args.max_invalid_streak is not None and args.max_invalid_streak < 1:
        print("zerosearch eval: --max-invalid-streak must be >= 1", file=sys.stderr)
        return 2
    baseline = None
    if args.paired_with:
        try:
            baseline = json.loads(Path(args.paired_with).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            print(f"zerosearch eval: --paired-with: cannot read {args.paired_with}: {e}", file=sys.stderr)
            return 2
        if not isinstance(baseline, dict) or not baseline.get("records"):
            print(f"zerosearch eval: --paired-with: {args.paired_with} holds no per-question records "
                  "(write it with --records)", file=sys.stderr)
            return 2
        args.records = True
    if not 0.0 <= args.noise <= 1.0:
        print("zerosearch eval: --noise must be in [0, 1]", file=sys.stderr)
        return 2
    if args.sprm_head and args.best_of < 2:
        print("zerosearch eval: --sprm-head ranks the samples of --best-of N (N > 1)", file=sys.stderr)
        return 2
    if args.best_of < 1 or (args.best_of > 1 and not args.checkpoint):
        print("zerosearch eval: --best-of N needs N >= 1, and N > 1 needs --checkpoint of a run trained with "
              "signals.sprm (its SPRM head ranks the samples)", file=sys.stderr)
        return 2
    try:
        cfg = TrainConfig.load(args.config) if args.config else preset("tiny")
        from agents.commands.compare import find_checkpoint

        model_dir = find_checkpoint(args.checkpoint) if args.checkpoint else None
    except (OSError, ValueError) as e:
        print(f"zerosearch eval: {e}", file=sys.stderr)
        return 2
    import torch

    from agents.trainer import set_torch_threads

    set_torch_threads(cfg.threads)
    from agents.evaluate import env_for, greedy_agent, run_episodes, sample_tasks, summarize
    from zerosearch_env.data import load_tasks
    from zerosearch_env.vector_env import make_vec

    env = env_for(cfg, args.backend, args.noise, args.calibration)
    if args.max_invalid_streak is not None:
        env = env.updated(max_invalid_streak=args.max_invalid_streak)
    try:
        tasks = sample_tasks(env, args.split, args.n, args.seed)
    except (OSError, ValueError) as e:
        print(f"zerosearch eval: {e}", file=sys.stderr)
        return 2
    vec = make_vec(min(args.num_envs, len(tasks)), env, tasks=tasks)

    if args.agent:
        from agents.baselines import ClosedBookAgent, OracleAgent, RandomAgent

        all_tasks = load_tasks(env.dataset, split="all", world_seed=env.world_seed)
        agent = {"oracle": lambda: OracleAgent(tasks), "closedbook": lambda: ClosedBookAgent(all_tasks),
                 "random": lambda: RandomAgent(seed=args.seed)}[args.agent]()
        who = args.agent
    else:
        from agents.policy import Policy
        from agents.trainer import load_policy_model, resolve_autocast

        path = model_dir if model_dir is not None else (args.base_model or cfg.model)
        model, tok = load_policy_model(path)
        model.eval()
        autocast = resolve_autocast(cfg.precision, next(model.parameters()).device)
        policy = Policy(model, tok, max_new_tokens=args.max_new_tokens or cfg.grpo.max_new_tokens, autocast_dtype=autocast)
        agent = greedy_agent(policy, env, args.seed)
        who = f"policy:{path or 'default'}"
    t0 = time.perf_counter()
    records = run_episodes(agent, vec, tasks, progress=not args.no_progress)
    wall = time.perf_counter() - t0
    summary = summarize(records)
    report = {"agent": who, "backend": args.backend, "noise": args.noise if args.backend == "simulator" else None,
              "split": args.split, "n": len(tasks), "wall_s": round(wall, 1), "summary": summary,
              "env": json.loads(env.model_dump_json())}
    if env.calibration or any(r.get("confidence") is not None for r in records):
        from agents.calibration import calibration_report

        answered = [r for r in records if r.get("answer") is not None]
        report["calibration"] = calibration_report([r.get("confidence") for r in answered],
                                                   [float(r["em"]) for r in answered])
    if args.best_of > 1:
        policy.forget()  # the greedy episodes' keys/values are not needed by the sampled ones

        from agents.sprm import HEAD_FILE, SPRMHead, best_of_n

        try:
            head_files = [str(h) for h in (args.sprm_head or [Path(model_dir) / HEAD_FILE])]
            heads = {f: SPRMHead.load(f).to(next(model.parameters()).device) for f in head_files}
        except FileNotFoundError as e:
            print(f"zerosearch eval: {e}", file=sys.stderr)
            return 2
        sampler = Policy(model, tok, max_new_tokens=args.max_new_tokens or cfg.grpo.max_new_tokens,
                         temperature=cfg.grpo.temperature, autocast_dtype=autocast)
        per = max(1, args.num_envs // args.best_of)
        bvec = make_vec(per * args.best_of, env, tasks=tasks)
        device = next(model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(args.seed)
        _, fig = best_of_n(sampler, heads[head_files[0]], bvec, tasks, args.best_of, step=0, generator=gen,
                           autocast_dtype=autocast, confidence=env.calibration,
                           other_heads={f: heads[f] for f in head_files[1:]}, keep_samples=args.records,
                           progress=not args.no_progress, greedy_em=[float(r["em"]) for r in records])
        report["best_of"] = {**fig, "sprm_head": head_files[0]}
        print(f"best-of-1 EM {fig['best_of_1_em']:.3f} | pass@{args.best_of} {fig['pass_at_n']:.3f}")
        for f, o in [(head_files[0], fig), *fig.get("other_heads", {}).items()]:
            se = "" if o["gain_se"] is None else f" ± {o['gain_se']:.3f}"
            g_se = "" if o["gain_over_greedy_se"] is None else f" ± {o['gain_over_greedy_se']:.3f}"
            print(f"  head {f}: best-of-{args.best_of} EM {o['best_of_n_em']:.3f} (paired gain over best-of-1 "
                  f"{o['gain_over_best_of_1']:+.3f}{se}; over greedy {o['greedy_em']:.3f}: "
                  f"{o['gain_over_greedy']:+.3f}{g_se}) | SPRM AUROC {o['sprm_auroc']}")
    if "calibration" in report:
        c = report["calibration"]
        print(f"calibration: ECE {c['ece']} Brier {c['brier']} AUROC {c['auroc']} (stated {c['stated']}/{c['n']})")
    if baseline is not None:
        from agents.evaluate import paired_em_difference

        try:
            pair = paired_em_difference(baseline["records"], records)
        except ValueError as e:
            print(f"zerosearch eval: --paired-with: {e}", file=sys.stderr)
            return 2
        if pair["n"] < len(records):
            print(f"zerosearch eval: warning: only {pair['n']} of {len(records)} questions are in {args.paired_with}; "
                  "the paired difference uses those")
        report["paired"] = {"baseline": args.paired_with, "baseline_agent": baseline.get("agent"), **pair}
    if args.records:
        report["records"] = records
    line = (f"{who} | {args.backend}{'' if args.backend == 'bm25' else f' noise={args.noise}'} | n={len(tasks)} | "
            f"EM {summary['em']:.3f} F1 {summary['f1']:.3f} format {summary['format_compliance']:.3f} "
            f"searches/ep {summary['searches_per_episode']:.2f} invalid {summary['invalid_rate']:.3f}")
    print(line)
    for kind, s in summary.get("by_kind", {}).items():
        print(f"  {kind:<11} n={s['n']:<4} EM {s['em']:.3f} format {s['format_compliance']:.3f}")
    if "paired" in report:
        p = report["paired"]
        print(f"paired with {p['baseline_agent']} on {p['n']} questions: EM {p['em_b']:.3f} vs {p['em_a']:.3f}, "
              f"difference {p['diff']:+.3f} ± {p['se']:.3f} (s.e.), {p['b_only']} won / {p['a_only']} lost, "
              f"McNemar p = {p['p_mcnemar']:.3g}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=1), encoding="utf-8")
        print(f"report: {args.output}")
    return 0
