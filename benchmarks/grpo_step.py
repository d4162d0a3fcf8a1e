"""One GRPO step, broken down: policy generation, simulator (search backend), and the update
(forward + backward + optimiser); then TRL's GRPOTrainer step against ours on the same setup.

    python benchmarks/grpo_step.py                    # the default small model as policy and simulator
    python benchmarks/grpo_step.py --tiny-random      # a random 2-layer Llama: seconds, for CI-like checks

Prints a table and, last, one JSON line with: generation_s, simulator_s, update_s, ours_step_s,
trl_step_s, trl_over_ours (ratio measured side by side in this run), and the shares of our step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from zerosearch_env.search.base import SearchBackend  # noqa: E402


class TimedBackend(SearchBackend):
    """Wraps a backend and adds up the wall time of its calls."""

    def __init__(self, inner: SearchBackend):
        self.inner = inner
        self.name = inner.name
        self.seconds = 0.0
        self.calls = 0

    def search(self, requests):
        return self.search_with_info(requests)[0]

    def search_with_info(self, requests):
        t0 = time.perf_counter()
        out = self.inner.search_with_info(requests)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out

    def set_training_step(self, step):
        self.inner.set_training_step(step)

    def stats(self):
        return self.inner.stats()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny-random", action="store_true", help="random tiny Llama policy + lookup backend (fast)")
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="tokens per agent turn (default: the tiny preset's)")
    ap.add_argument("--noise", type=float, default=0.5)
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--model", default=None, help="policy folder (e.g. RUN/warmup_model, so that the policy searches); "
                    "default: the base small model, which never writes a tag and so never calls the simulator")
    args = ap.parse_args()

    from agents.grpo import GRPOSettings, grpo_update
    from agents.policy import Policy
    from agents.rollout import collect_rollouts
    from agents.train_config import preset
    from agents.trainer import load_policy_model, set_trainable
    from zerosearch_env.vector_env import make_vec

    cfg = preset("tiny")
    from agents.trainer import set_torch_threads

    threads = set_torch_threads(cfg.threads)
    args.max_new_tokens = args.max_new_tokens or cfg.grpo.max_new_tokens
    temperature = cfg.grpo.temperature
    if args.tiny_random:
        from tests.train_helpers import TASKS, lookup_backend, tiny_model, tiny_tokenizer

        def fresh():
            return tiny_model(seed=0), tiny_tokenizer()
        tasks = list(TASKS)
        inner = lookup_backend()
        env_cfg = cfg.env.updated(backend="bm25", backend_options={})
        what = "tiny random Llama + lookup backend"
    else:
        from zerosearch_env.data import load_tasks
        from zerosearch_env.search import make_backend

        def fresh():
            return load_policy_model(args.model)
        tasks = load_tasks("world", "train", 0)
        env_cfg = cfg.env.updated(backend_options={**cfg.simulator, "curriculum": float(args.noise)})
        inner = make_backend(env_cfg)
        what = f"policy {args.model or 'SmolLM2-135M (base)'} + SmolLM2-135M simulator (noise {args.noise})"
    n = args.prompts * args.group
    batch_tasks = tasks[: args.prompts]

    # ---- ours
    model, tok = fresh()
    params = set_trainable(model, cfg.trainable_layers if not args.tiny_random else None)
    backend = TimedBackend(inner)
    vec = make_vec(n, env_cfg, backend=backend, tasks=tasks)
    policy = Policy(model, tok, max_new_tokens=args.max_new_tokens, temperature=temperature)
    opt = torch.optim.AdamW(params, lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    trajs = collect_rollouts(policy, vec, batch_tasks, args.group, step=0, generator=gen)
    t1 = time.perf_counter()
    grpo_update(model, opt, trajs, GRPOSettings(group_size=args.group, temperature=temperature,
                                                micro_batch_size=cfg.grpo.micro_batch_size),
                tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    t2 = time.perf_counter()
    sim_s = backend.seconds
    gen_s = (t1 - t0) - sim_s
    upd_s = t2 - t1
    ours = t2 - t0
    tokens = sum(len(t.completion_ids) for t in trajs)
    searches = sum(t.info["num_searches"] for t in trajs)

    # ---- TRL, same rollout code, same batch shape
    trl_s = None
    if not args.skip_trl:
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

        from agents.trl_integration import SearchRollout, env_reward

        model2, tok2 = fresh()
        set_trainable(model2, cfg.trainable_layers if not args.tiny_random else None)
        backend2 = TimedBackend(inner)
        rollout = SearchRollout(batch_tasks, env_cfg, backend=backend2, max_new_tokens=args.max_new_tokens)
        targs = GRPOConfig(output_dir="/tmp/zs-bench-trl", use_cpu=not torch.cuda.is_available(),
                           per_device_train_batch_size=n, num_generations=args.group, max_steps=1, report_to=[],
                           save_strategy="no", logging_steps=1, bf16=False, learning_rate=1e-5)
        trainer = GRPOTrainer(model=model2, reward_funcs=[env_reward], args=targs,
                              train_dataset=Dataset.from_list(rollout.dataset_rows()), processing_class=tok2,
                              rollout_func=rollout)
        t3 = time.perf_counter()
        trainer.train()
        trl_s = time.perf_counter() - t3

    fig = {
        "setup": what, "threads": threads, "episodes": n, "completion_tokens": tokens, "searches": searches,
        "generation_s": round(gen_s, 3), "simulator_s": round(sim_s, 3), "update_s": round(upd_s, 3),
        "ours_step_s": round(ours, 3), "generation_share": round(gen_s / ours, 3),
        "simulator_share": round(sim_s / ours, 3), "update_share": round(upd_s / ours, 3),
        "trl_step_s": None if trl_s is None else round(trl_s, 3),
        "trl_over_ours": None if trl_s is None else round(trl_s / ours, 3),
    }
    print(f"{what}: {n} episodes, {tokens} completion tokens, {searches} searches")
    print(f"  ours: generation {gen_s:.1f} s | simulator {sim_s:.1f} s | update (fwd+bwd+opt) {upd_s:.1f} s | step {ours:.1f} s")
    if trl_s is not None:
        print(f"  TRL GRPOTrainer step (same rollouts code): {trl_s:.1f} s  -> {trl_s / ours:.2f}x ours")
    print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
