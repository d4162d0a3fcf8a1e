"""Self-supervised signals on the tiny setting: SPRM AUROC, best-of-N, calibration with/without Brier.

One run, from the default small model (SmolLM2-135M-Instruct) on the built-in world:

1. supervised warm-up on oracle trajectories (agents.warmup), the env in calibration mode;
2. two GRPO runs from the same warm-up weights, identical except for the Brier reward:
   `brier` (SPRM + PCL + Brier reward) and `no_brier` (SPRM + PCL; the confidence is still
   written after the answer, but nothing rewards it);
3. after each run, held-out test questions, `--best-of` sampled trajectories each:
   - AUROC of the SPRM trajectory score (geometric mean of step scores) for exact match,
   - best-of-N EM (the trajectory SPRM scores highest) against best-of-1 EM (the mean EM of single
     samples, i.e. the expected EM of one sample) and pass@N (an oracle picking any correct one),
   - ECE (10 bins), Brier score and AUROC of the stated confidences against EM, confidences read
     greedily after each answered trajectory.
   Also the held-out AUROC logged during training (`sprm_auroc_window`: the head's scores on each
   step's fresh rollouts before it trains on them).

Figures go to `--out` (metrics JSONL per run, results.json, curves.png); the last line printed is a
JSON object of the figures. Timing is not the point here; every number is measured in this run.

Measured once on an H200 (fp32, BM25, 320 warm-up questions x 2 epochs, 16 GRPO steps of 8 x 4,
80 test questions x 4 samples): `benchmarks/results/self_signals_h200.json`. That run used the
strict dynamic weighting of the SPR loss, whose head collapsed to "always correct" (mean score
0.50 -> 0.99); `spr_weights` now keeps every step of a class that has no agreeing step. A 2-core
CPU is too slow for this script with the real model (a warm-up step alone takes minutes).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: the default small model)")
    p.add_argument("--backend", default="bm25", help="search backend of training and evaluation")
    p.add_argument("--warmup-tasks", type=int, default=320)
    p.add_argument("--warmup-epochs", type=int, default=2)
    p.add_argument("--warmup-lr", type=float, default=5e-5)
    p.add_argument("--steps", type=int, default=20, help="GRPO steps per run")
    p.add_argument("--prompts", type=int, default=8, help="questions per GRPO step")
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-6)
    p.add_argument("--sprm-lr", type=float, default=1e-3)
    p.add_argument("--test-tasks", type=int, default=100)
    p.add_argument("--best-of", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--runs", default="brier,no_brier")
    p.add_argument("--no-pcl", action="store_true")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on CUDA (default fp32)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/self_signals")
    return p.parse_args(argv)


def _nan_to_none(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def evaluate_heldout(policy, signals, vec_env, tasks, best_of: int, step: int, generator, autocast) -> dict:
    """Sample `best_of` trajectories per held-out task: SPRM AUROC, best-of-N, calibration."""
    from agents.sprm import best_of_n

    _, fig = best_of_n(policy, signals.head, vec_env, tasks, best_of, step, generator, autocast, confidence=True)
    fig[f"best_of_{best_of}_em"] = fig["best_of_n_em"]
    fig[f"pass_at_{best_of}"] = fig["pass_at_n"]
    fig["calibration_chosen"] = fig.pop("calibration")
    fig["calibration"] = fig.pop("calibration_all_samples")
    return fig


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm.auto import tqdm

    from agents.grpo import GRPOSettings, grpo_update
    from agents.monitors import plot_monitor_curves
    from agents.policy import Policy
    from agents.rollout import collect_rollouts, trajectory_metrics
    from agents.signals import SelfSignals, SignalsConfig
    from agents.warmup import build_oracle_dataset, warmup_epoch_order, warmup_step
    from zerosearch_env.config import EnvConfig
    from zerosearch_env.data import load_tasks
    from zerosearch_env.vector_env import make_vec

    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    from agents.trainer import load_policy_model

    model, tok = load_policy_model(args.model, device)
    # fp32 by default: bf16 autocast turns the float32 attention mask of left-padded rows into -inf
    # rows whose backward pass is NaN on CUDA (seen on an H200); --bf16 to try anyway.
    autocast = torch.bfloat16 if (device == "cuda" and args.bf16) else None
    pad_id = tok.pad_token_id
    env_cfg = EnvConfig(backend=args.backend, calibration=True, max_turns=4, top_k=3, max_doc_chars=300, reward="f1")
    train_tasks = load_tasks("world", split="train", world_seed=0)
    test_tasks = load_tasks("world", split="test", world_seed=0)
    rng = random.Random(args.seed)
    rng.shuffle(train_tasks)
    rng.shuffle(test_tasks)
    test_tasks = test_tasks[: args.test_tasks]
    policy = Policy(model, tok, max_new_tokens=args.max_new_tokens, temperature=1.0, autocast_dtype=autocast)
    generator = torch.Generator(device=device).manual_seed(args.seed)  # multinomial needs one on the device
    figures: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "backend": args.backend}

    # ---------------------------------------------------------------- warm-up
    t0 = time.perf_counter()
    wtasks = train_tasks[: args.warmup_tasks]
    wvec = make_vec(min(32, max(1, len(wtasks))), env_cfg, tasks=train_tasks)
    data = build_oracle_dataset(policy, wvec, wtasks)
    order = warmup_epoch_order(len(data), args.warmup_epochs, args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.warmup_lr)
    bs = 8
    for k in tqdm(range(math.ceil(len(order) / bs)), desc="warm-up"):
        warmup_step(model, opt, [data[i] for i in order[k * bs:(k + 1) * bs]], pad_id, 4 if device == "cpu" else 8,
                    1.0, autocast)
    del opt
    figures["warmup"] = {"oracle_trajectories": len(data), "steps": math.ceil(len(order) / bs),
                         "seconds": time.perf_counter() - t0}
    warm = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rest = train_tasks[args.warmup_tasks:] or train_tasks

    settings = GRPOSettings(group_size=args.group, micro_batch_size=8 if device == "cuda" else 4)
    vec = make_vec(args.prompts * args.group, env_cfg, tasks=train_tasks)
    per_eval = max(1, (32 if device == "cuda" else 4) // args.best_of)
    eval_vec = make_vec(per_eval * args.best_of, env_cfg, tasks=test_tasks)
    runs = [r for r in args.runs.split(",") if r]
    all_rows: dict[str, list[dict]] = {}
    for run in runs:
        model.load_state_dict(warm)
        sig_cfg = SignalsConfig(sprm=True, sprm_lr=args.sprm_lr, pcl=not args.no_pcl, brier=(run == "brier"))
        signals = SelfSignals(sig_cfg, model, tok, calibration=True)
        opt = torch.optim.AdamW([{"params": list(model.parameters()), "lr": args.lr}] + signals.param_groups())
        rows = []
        metrics_path = out / f"metrics_{run}.jsonl"
        metrics_path.write_text("", encoding="utf-8")
        t0 = time.perf_counter()
        for step in tqdm(range(args.steps), desc=f"GRPO {run}"):
            batch_tasks = [rest[(step * args.prompts + i) % len(rest)] for i in range(args.prompts)]
            trajs = collect_rollouts(policy, vec, batch_tasks, args.group, step, generator=generator)
            extra = signals.after_rollout(policy, trajs, generator)
            upd = grpo_update(model, opt, trajs, settings, pad_id, reward_fns=signals.reward_fns(),
                              extra_loss_fns=signals.extra_loss_fns(), autocast_dtype=autocast, **signals.grpo_kwargs())
            row = {"run": run, "step": step, **trajectory_metrics(trajs), **upd, **extra,
                   **signals.step_metrics(step, trajs)}
            rows.append(row)
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(_nan_to_none(row)) + "\n")
        train_s = time.perf_counter() - t0
        ev = evaluate_heldout(policy, signals, eval_vec, test_tasks, args.best_of, args.steps, generator, autocast)
        last = rows[-1] if rows else {}
        ev.update({"train_seconds": train_s, "train_sprm_auroc_window": last.get("sprm_auroc_window"),
                   "train_em_last": last.get("em"), "train_calib_ece_last": last.get("calib_ece"),
                   "train_confidence_parse_rate_last": last.get("confidence_parse_rate"),
                   "train_pcl_parse_rate_last": last.get("pcl_parse_rate")})
        figures[run] = ev
        all_rows[run] = rows
        (out / "results.json").write_text(json.dumps(_nan_to_none(figures), indent=1), encoding="utf-8")
        print(run, json.dumps(_nan_to_none(ev)), flush=True)

    # ---------------------------------------------------------------- curves
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for run, rows in all_rows.items():
        xs = [r["step"] for r in rows]
        axes[0].plot(xs, [r.get("em") for r in rows], label=f"EM {run}")
        axes[1].plot(xs, [r.get("sprm_auroc_window") for r in rows], label=f"SPRM AUROC (held-out window) {run}")
        axes[2].plot(xs, [r.get("calib_ece") for r in rows], label=f"ECE {run}")
        plot_monitor_curves(axes[3], rows)
    for ax, t in zip(axes[:3], ("EM", "SPRM AUROC", "ECE of confidences")):
        ax.set_title(t)
        ax.legend(fontsize=7)
        ax.set_xlabel("GRPO step")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=90)
    plt.close(fig)
    figures["wall_s"] = time.perf_counter() - t_start
    (out / "results.json").write_text(json.dumps(_nan_to_none(figures), indent=1), encoding="utf-8")
    flat = {"device": figures["device"], "wall_s": round(figures["wall_s"], 1)}
    for run in runs:
        ev = figures[run]
        flat[f"{run}/sprm_auroc"] = ev["sprm_auroc"]
        flat[f"{run}/best_of_1_em"] = ev["best_of_1_em"]
        flat[f"{run}/best_of_{args.best_of}_em"] = ev[f"best_of_{args.best_of}_em"]
        flat[f"{run}/pass_at_{args.best_of}"] = ev[f"pass_at_{args.best_of}"]
        for k in ("ece", "brier", "auroc", "missing", "mean_confidence", "accuracy"):
            flat[f"{run}/calib_{k}"] = ev["calibration"].get(k)
    print(json.dumps(_nan_to_none(flat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
