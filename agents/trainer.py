"""The training run behind `zerosearch train`: warm-up, then GRPO, with checkpoints and curves.

CleanRL-style and linear on purpose:

1. load the policy (default: SmolLM2-135M-Instruct) and pick bf16 autocast only where supported;
2. warm-up: record oracle episodes with a real backend (BM25), fine-tune on the agent tokens;
3. GRPO: every step, `prompts_per_step` training questions (in a seeded order) x `group_size`
   samples are rolled out against the simulator (`vec_env.set_training_step(step)` moves the
   noise curriculum), rewards -> group advantages -> one `grpo_update` (or TRL's GRPOTrainer with
   `grpo.trainer: trl`);
4. every step appends one row to `metrics.jsonl` (and the `report_to` trackers: TensorBoard, W&B,
   `agents.reporting`); `curves.png` is redrawn at each checkpoint;
   checkpoints (`checkpoint/`: model, tokenizer, optimizer, curriculum state, RNG states, data
   order position) are written after warm-up, every `checkpoint_every` GRPO steps and at the end.
   `resume=True` continues from `checkpoint/`: rows after it in `metrics.jsonl` are dropped and
   recomputed, so a resumed run reproduces an uninterrupted one under deterministic settings.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import pickle
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from agents.grpo import GRPOSettings, grpo_update
from agents.reporting import MetricsLogger
from agents.policy import Policy
from agents.rollout import collect_rollouts, trajectory_metrics
from agents.train_config import TrainConfig
from agents.warmup import FrozenPrefix, build_oracle_dataset, warmup_epoch_order, warmup_step
from zerosearch_env.data.task import Task

CHECKPOINT = "checkpoint"
HELDOUT_FILE = "eval_heldout.json"  # the end-of-training held-out evaluation (`eval_tasks`)


# ---------------------------------------------------------------------------------- setup helpers
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def set_torch_threads(requested: int | None) -> int:
    """Set torch's CPU threads: `requested`, or for None one per core not already busy with another
    running process (read from /proc/loadavg at this instant; all cores where it is unreadable).
    OpenMP threads that share a core with another process stall at every barrier: on this 2-core
    machine a forward pass measured 14x slower with 2 threads than with 1 while other jobs ran."""
    n = requested
    if n is None:
        cores = os.cpu_count() or 1
        try:
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            running = 1
        n = max(1, min(cores, cores - (running - 1)))
    torch.set_num_threads(int(n))
    return int(n)


def resolve_autocast(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast for `bf16`; for `auto`, only on CUDA with bf16 or a CPU with native bf16."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    from zerosearch_env.models import cpu_supports_bf16

    return torch.bfloat16 if cpu_supports_bf16() else None


def load_policy_model(path: str | Path | None, device: str | None = None):
    """(model, tokenizer) from a folder; None -> the default small model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if path is None:
        from zerosearch_env.models import default_model_path

        path = default_model_path()
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(dev), tok


def set_trainable(model, top_layers: int | None) -> list[torch.nn.Parameter]:
    """Train only the top `top_layers` transformer blocks and the final norm (None: everything);
    returns the trainable parameters. Frozen lower layers skip their backward pass entirely."""
    params = list(model.parameters())
    if top_layers is None:
        for p in params:
            p.requires_grad_(True)
        return params
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError("trainable_layers needs a decoder with a `layers` list; use trainable_layers: null")
    for p in params:
        p.requires_grad_(False)
    keep = list(layers[max(0, len(layers) - int(top_layers)):])
    norm = getattr(decoder, "norm", None)
    if norm is not None:
        keep.append(norm)
    for module in keep:
        for p in module.parameters():
            p.requires_grad_(True)
    return [p for p in params if p.requires_grad]


class PreparedPolicy(NamedTuple):
    """What `prepare_policy` returns; unpack it or read it by name."""

    model: Any
    tokenizer: Any
    trainable: list[torch.nn.Parameter]
    device: torch.device
    autocast: torch.dtype | None
    pad_id: int


def prepare_policy(model, tokenizer, path: str | Path | None, trainable_layers: int | None,
                   precision: str) -> PreparedPolicy:
    """Make a policy ready to train: load it from `path` when `model` is None, pad on the left,
    mark the top `trainable_layers` trainable, pick the autocast dtype and the pad token id."""
    if model is None:
        model, tokenizer = load_policy_model(path)
    if tokenizer is None:
        raise ValueError("a tokenizer is needed with the model")
    tokenizer.padding_side = "left"
    trainable = set_trainable(model, trainable_layers)
    device = next(model.parameters()).device
    autocast = resolve_autocast(precision, device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return PreparedPolicy(model, tokenizer, trainable, device, autocast, pad_id)


def load_hooks(names: Sequence[str], cfg: TrainConfig, model, tokenizer) -> dict:
    """Resolve `grpo.hooks` ('module:function') into reward_fns / extra_loss_fns / need_hidden."""
    out: dict[str, Any] = {"reward_fns": [], "extra_loss_fns": [], "need_hidden": False, "hidden_layer": -1}
    for name in names:
        mod, _, fn = name.partition(":")
        if not fn:
            raise ValueError(f"hook {name!r} must be 'module:function'")
        got = getattr(importlib.import_module(mod), fn)(cfg, model, tokenizer) or {}
        out["reward_fns"] += list(got.get("reward_fns", []))
        out["extra_loss_fns"] += list(got.get("extra_loss_fns", []))
        out["need_hidden"] = out["need_hidden"] or bool(got.get("need_hidden", False))
        if "hidden_layer" in got:
            out["hidden_layer"] = int(got["hidden_layer"])
    return out


def grpo_backend(env_cfg, curriculum):
    """The GRPO phase's backend, built from the env config. A simulator is handed the trainer's own
    curriculum object rather than building a copy from the spec: what the trainer updates from each
    batch's success (adaptive), saves and restores is what the simulator draws its noise from."""
    from zerosearch_env.search import make_backend

    return make_backend(env_cfg, curriculum=curriculum if env_cfg.backend == "simulator" else None)


def _format_reward_fn(trajs):
    from zerosearch_env.rewards import format_reward

    return [format_reward([t for t, agent in tr.segments if agent]) for tr in trajs]


# ---------------------------------------------------------------------------------- checkpoints
def _rng_state(generator: torch.Generator) -> dict:
    """Every RNG state as tensors and plain numbers (numpy's state is an ndarray, which only a full
    unpickler reads), so `trainer.pt` loads with `torch.load(..., weights_only=True)`."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": torch.get_rng_state(), "generator": generator.get_state()}


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])


def load_trainer_state(path: Path) -> dict:
    """`trainer.pt` (optimizer, LR scheduler, RNG states) read with `weights_only=True`: tensors and
    plain containers only, never arbitrary pickled objects (a downloaded run folder could run code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path} holds pickled Python objects that torch.load(weights_only=True) refuses (a "
                         "trainer state written before this version, or not by zerosearch); it is not unpickled "
                         "because that can run code. Start the run afresh without --resume.") from e


def save_checkpoint(out: Path, model, tokenizer, optimizer, state: dict, curriculum, generator,
                    lr_scheduler=None) -> Path:
    """Write `out/checkpoint` atomically (a temporary folder renamed into place)."""
    tmp = out / f".{CHECKPOINT}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save({"optimizer": optimizer.state_dict() if optimizer is not None else None,
                "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
                "rng": _rng_state(generator)}, tmp / "trainer.pt")
    full = {**state, "curriculum": curriculum.state_dict() if curriculum is not None else None}
    (tmp / "trainer_state.json").write_text(json.dumps(full, indent=1), encoding="utf-8")
    final = out / CHECKPOINT
    old = out / f".{CHECKPOINT}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def plot_curves(rows: Sequence[dict], path: Path) -> list[str]:
    """curves.png: warm-up loss, then per GRPO step reward, EM, noise probability, searches per
    episode and invalid rate. Returns the titles of the panels this run has no data for (drawn as
    "not in this run", e.g. the warm-up loss of a run started from a warmed-up model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    warm = [r for r in rows if r.get("phase") == "warmup"]
    grpo = [r for r in rows if r.get("phase") == "grpo"]
    panels = [("warm-up loss", warm, "loss"), ("reward", grpo, "reward"), ("EM", grpo, "em"),
              ("noise probability", grpo, "noise_probability"), ("searches / episode", grpo, "searches_per_episode"),
              ("invalid-action rate", grpo, "invalid_rate")]
    signal_rows = any("entropy_mean" in r or "sprm_auroc_window" in r for r in grpo)
    if signal_rows:  # agents.signals: collapse monitors, SPRM held-out AUROC, calibration / PCL
        panels += [("SPRM AUROC (held-out window)", grpo, "sprm_auroc_window"), ("ECE of confidences", grpo, "calib_ece")]
    fig, axes = plt.subplots(3 if signal_rows else 2, 3, figsize=(13, 10.5 if signal_rows else 7))
    if signal_rows:
        from agents.monitors import plot_monitor_curves

        plot_monitor_curves(axes[2, 2], grpo)
        axes[2, 2].grid(alpha=0.3)
    empty = []
    for ax, (title, data, key) in zip(axes.ravel(), panels):
        xs = [r["step"] for r in data if key in r]
        ys = [r[key] for r in data if key in r]
        if xs:
            ax.plot(xs, ys, marker="o" if len(xs) < 40 else None, ms=3)
        else:  # e.g. no warm-up in a run that starts from a warmed-up model
            empty.append(title)
            ax.text(0.5, 0.5, "not in this run", ha="center", va="center", transform=ax.transAxes, color="0.4")
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return empty


# ---------------------------------------------------------------------------------- the run
@dataclass
class TrainResult:
    output: Path
    rows: list[dict]
    wall_s: float


def train(cfg: TrainConfig, output: str | Path, max_steps: int | None = None, resume: bool = False,
          progress: bool = True, model=None, tokenizer=None, tasks: Sequence[Task] | None = None,
          backend=None, warmup_backend=None) -> TrainResult:
    """Run warm-up then GRPO as `cfg` says, into `output`. `max_steps` caps the GRPO steps (the
    curriculum's horizon stays `cfg.curriculum['total_steps']`). `model`/`tokenizer`/`tasks`/
    `backend`/`warmup_backend` may be passed in (tests, custom setups); by default they come from
    the config; a passed-in `backend` keeps its own curriculum (only one the trainer builds shares
    the trainer's, see `grpo_backend`)."""
    from tqdm.auto import tqdm

    from curricula import from_spec
    from zerosearch_env.vector_env import make_vec

    t_start = time.perf_counter()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    ckpt = out / CHECKPOINT
    threads = set_torch_threads(cfg.threads)
    if progress and not torch.cuda.is_available():
        print(f"zerosearch train: {threads} torch CPU thread(s)")
    seed_everything(cfg.seed)
    state: dict[str, Any] = {"phase": "warmup", "warmup_step": 0, "grpo_step": 0, "global_step": 0, "data_pos": 0}

    resuming = resume and (ckpt / "trainer_state.json").exists()
    if resume and not resuming:
        print(f"zerosearch train: no checkpoint in {out}; starting fresh")
    if resuming:
        saved = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
        if saved.get("config") != json.loads(cfg.model_dump_json()):
            print("zerosearch train: warning: the config differs from the checkpoint's; using the current one")
        state.update({k: saved[k] for k in ("phase", "warmup_step", "grpo_step", "global_step", "data_pos")})
        if model is None:
            model, tokenizer = load_policy_model(ckpt)
        else:
            from transformers import AutoModelForCausalLM

            model.load_state_dict(AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32).state_dict())
    model, tokenizer, trainable, device, autocast, pad_id = prepare_policy(
        model, tokenizer, cfg.model, cfg.trainable_layers, cfg.precision)
    env_cfg = cfg.env_config()
    if tasks is None:
        from zerosearch_env.data import load_tasks

        tasks = load_tasks(env_cfg.dataset, split="train", world_seed=env_cfg.world_seed)
    tasks = list(tasks)
    curriculum = from_spec(dict(cfg.curriculum))
    rows = [r for r in read_metrics(metrics_path) if r.get("step", -1) < state["global_step"]] if resuming else []
    config_json = json.loads(cfg.model_dump_json())
    logger = MetricsLogger(out, cfg.report_to, kept_rows=rows, config=config_json)  # metrics.jsonl + trackers
    opt_state = None
    generator = torch.Generator(device=device).manual_seed(cfg.seed)  # sampling draws on the model's device
    if resuming:
        blob = load_trainer_state(ckpt / "trainer.pt")
        opt_state = blob["optimizer"]
        _set_rng_state(blob["rng"], generator)
        if saved.get("curriculum"):
            curriculum.load_state_dict(saved["curriculum"])

    def log(row: dict) -> None:
        rows.append(row)
        logger.log(row)

    signals = None  # agents.signals.SelfSignals of the GRPO phase (SPRM head, monitors), saved with checkpoints

    def checkpoint(optimizer, lr_scheduler=None) -> None:
        final = save_checkpoint(out, model, tokenizer, optimizer, {**state, "config": config_json}, curriculum, generator,
                                lr_scheduler=lr_scheduler)
        if signals is not None:
            signals.save(final)
        plot_curves(rows, out / "curves.png")

    policy = Policy(model, tokenizer, max_new_tokens=cfg.grpo.max_new_tokens, temperature=cfg.grpo.temperature,
                    autocast_dtype=autocast)
    order_rng = random.Random(cfg.seed)
    shuffled = list(tasks)
    order_rng.shuffle(shuffled)

    # ------------------------------------------------------------------ warm-up
    w = cfg.warmup
    if state["phase"] == "warmup":
        if w.enabled and w.num_tasks > 0:
            wenv_cfg = env_cfg.updated(backend=w.backend, backend_options={})
            wtasks = shuffled[: w.num_tasks]
            wvec = make_vec(min(32, len(wtasks)), wenv_cfg, backend=warmup_backend, tasks=tasks)
            data = build_oracle_dataset(policy, wvec, wtasks)
            if not data:
                raise RuntimeError("the oracle solved none of the warm-up questions; check the warm-up backend")
            order = warmup_epoch_order(len(data), w.epochs, cfg.seed)
            n_steps = math.ceil(len(order) / w.batch_size)
            optimizer = torch.optim.AdamW(trainable, lr=w.learning_rate)
            if opt_state is not None:
                optimizer.load_state_dict(opt_state)
                opt_state = None
            prefix = FrozenPrefix.for_model(model, pad_id, autocast) if w.cache_frozen else None
            if prefix is not None and not prefix.check(min(data, key=lambda t: len(t.completion_ids))):
                print("zerosearch train: warning: cached frozen-block states differ from a full pass for this "
                      "model; the warm-up runs full passes")
                prefix = None
            bar = tqdm(total=n_steps, initial=state["warmup_step"], desc="warm-up", disable=not progress)
            while state["warmup_step"] < n_steps:
                k = state["warmup_step"]
                keys = order[k * w.batch_size:(k + 1) * w.batch_size]
                batch = [data[i] for i in keys]
                t0 = time.perf_counter()
                loss = warmup_step(model, optimizer, batch, pad_id, w.micro_batch_size, w.max_grad_norm, autocast,
                                   prefix=prefix, keys=keys)
                log({"phase": "warmup", "step": state["global_step"], "warmup_step": k, "loss": loss,
                     "oracle_trajectories": len(data), "single": sum(t.info.get("kind") == "single" for t in batch),
                     "multi_hop": sum(t.info.get("kind") != "single" for t in batch),
                     "seconds": time.perf_counter() - t0})
                state["warmup_step"] += 1
                state["global_step"] += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
            bar.close()
            del optimizer
        state["phase"] = "grpo"
        checkpoint(None)
        if w.enabled and w.num_tasks > 0:  # keep the warmed-up policy for evaluation
            model.save_pretrained(out / "warmup_model")
            tokenizer.save_pretrained(out / "warmup_model")
        opt_state = None

    # ------------------------------------------------------------------ GRPO
    g = cfg.grpo
    steps = g.steps if max_steps is None else int(max_steps)
    if state["grpo_step"] < steps:
        if backend is None:
            backend = grpo_backend(env_cfg, curriculum)
        if g.trainer == "trl":
            if cfg.signals.sprm or cfg.signals.pcl or cfg.signals.brier:
                raise ValueError("signals sprm/pcl/brier run in our GRPO loop only: set grpo.trainer: ours")
            _train_trl(cfg, out, model, tokenizer, tasks, shuffled, backend, curriculum, steps, state, log, checkpoint,
                       generator, autocast, resume=blob if state["grpo_step"] > 0 else None)
        else:
            n_envs = g.prompts_per_step * g.group_size
            vec = make_vec(n_envs, env_cfg, backend=backend, tasks=tasks)
            optimizer = torch.optim.AdamW(trainable, lr=g.learning_rate)
            from agents.signals import SIGNALS_FILE, SelfSignals

            signals = SelfSignals(cfg.signals, model, tokenizer, calibration=env_cfg.calibration)
            for group in signals.param_groups():  # the SPRM head's own group, before loading optimizer state
                optimizer.add_param_group(group)
            if resuming and (ckpt / SIGNALS_FILE).exists():
                signals.load(ckpt)
            if opt_state is not None:
                optimizer.load_state_dict(opt_state)
            if (signals.head is not None and cfg.signals.sprm_fit_tasks > 0 and state["grpo_step"] == 0
                    and not (resuming and (ckpt / SIGNALS_FILE).exists())):
                log(_fit_sprm_head(cfg, signals.head, policy, env_cfg, vec.backend, shuffled, generator, autocast,
                                   out, state["global_step"], progress))
                checkpoint(optimizer)  # a resumed run keeps this head instead of fitting again
            hooks = load_hooks(g.hooks, cfg, model, tokenizer)
            sig_kwargs = signals.grpo_kwargs()
            if sig_kwargs and not hooks["need_hidden"]:
                hooks["need_hidden"], hooks["hidden_layer"] = True, sig_kwargs["hidden_layer"]
            hooks["extra_loss_fns"] = list(hooks["extra_loss_fns"]) + signals.extra_loss_fns()
            reward_fns = list(hooks["reward_fns"]) + signals.reward_fns()
            if g.format_reward_weight > 0:
                reward_fns.append((_format_reward_fn, g.format_reward_weight))
            settings = GRPOSettings(group_size=g.group_size, temperature=g.temperature, loss_type=g.loss_type,
                                    epsilon_low=g.epsilon_low, epsilon_high=g.epsilon_high, scale_rewards=g.scale_rewards,
                                    micro_batch_size=g.micro_batch_size, max_grad_norm=g.max_grad_norm)
            bar = tqdm(total=steps, initial=state["grpo_step"], desc="GRPO", disable=not progress)
            while state["grpo_step"] < steps:
                step = state["grpo_step"]
                batch_tasks = []
                for _ in range(g.prompts_per_step):
                    batch_tasks.append(shuffled[state["data_pos"] % len(shuffled)])
                    state["data_pos"] += 1
                t0 = time.perf_counter()
                trajs = collect_rollouts(policy, vec, batch_tasks, g.group_size, step, generator=generator,
                                         max_completion_tokens=g.max_completion_tokens)
                sig_row = signals.after_rollout(policy, trajs, generator)  # confidence / PCL segments (training only)
                t1 = time.perf_counter()
                upd = grpo_update(model, optimizer, trajs, settings, pad_id, reward_fns=reward_fns,
                                  extra_loss_fns=hooks["extra_loss_fns"], autocast_dtype=autocast,
                                  need_hidden=hooks["need_hidden"], hidden_layer=hooks["hidden_layer"])
                t2 = time.perf_counter()
                row = {"phase": "grpo", "step": state["global_step"], "grpo_step": step,
                       "noise_probability": float(curriculum.probability(step)), **trajectory_metrics(trajs), **upd,
                       "rollout_s": t1 - t0, "update_s": t2 - t1, **sig_row, **signals.step_metrics(step, trajs)}
                for k, v in (vec.backend.stats() or {}).items():
                    if isinstance(v, (int, float)):
                        row[f"gate/{k}"] = float(v)
                log(row)
                curriculum.update([float(t.info.get("em", 0.0)) for t in trajs])  # moves an adaptive one
                state["grpo_step"] += 1
                state["global_step"] += 1
                bar.update(1)
                bar.set_postfix(reward=f"{row['reward']:.2f}", em=f"{row['em']:.2f}", p=f"{row['noise_probability']:.2f}")
                if state["grpo_step"] % cfg.checkpoint_every == 0 or state["grpo_step"] == steps:
                    checkpoint(optimizer)
            bar.close()
    plot_curves(rows, out / "curves.png")
    if not ckpt.exists():
        checkpoint(None)
    if cfg.eval_tasks > 0:
        report = heldout_eval(cfg, model, tokenizer, autocast, progress)
        (out / HELDOUT_FILE).write_text(json.dumps(report, indent=1), encoding="utf-8")
        log({"phase": "heldout_eval", "step": state["global_step"], "backend": cfg.eval_backend,
             **{k: v for k, v in report["summary"].items() if isinstance(v, (int, float))}})
    logger.close()
    return TrainResult(out, rows, time.perf_counter() - t_start)


def heldout_eval(cfg: TrainConfig, model, tokenizer, autocast, progress: bool) -> dict:
    """`cfg.eval_tasks` test questions with `cfg.eval_backend` (the simulator at noise 0), the
    policy decoding greedily: the questions, answers and report of `zerosearch eval --split test
    --n N --seed <config seed> --records` on the saved checkpoint."""
    from agents.evaluate import env_for, greedy_agent, run_episodes, sample_tasks, summarize
    from zerosearch_env.vector_env import make_vec

    env = env_for(cfg, cfg.eval_backend)
    tasks = sample_tasks(env, "test", cfg.eval_tasks, cfg.seed)
    vec = make_vec(min(32, len(tasks)), env, tasks=tasks)
    model.eval()
    policy = Policy(model, tokenizer, max_new_tokens=cfg.grpo.max_new_tokens, autocast_dtype=autocast)
    t0 = time.perf_counter()
    records = run_episodes(greedy_agent(policy, env, cfg.seed), vec, tasks, progress=progress, desc="held-out eval")
    vec.close()
    summary = summarize(records)
    print(f"zerosearch train: held-out {cfg.eval_backend} EM {summary['em']:.3f} F1 {summary['f1']:.3f} "
          f"on {len(tasks)} test questions")
    noise = 0.0 if cfg.eval_backend == "simulator" else None
    return {"agent": "trained policy", "backend": cfg.eval_backend, "noise": noise, "split": "test", "n": len(tasks),
            "wall_s": round(time.perf_counter() - t0, 1), "summary": summary,
            "env": json.loads(env.model_dump_json()), "records": records}


def _fit_sprm_head(cfg: TrainConfig, head, policy, env_cfg, backend, shuffled: Sequence[Task], generator,
                   autocast, out: Path, step: int, progress: bool) -> dict:
    """The SPRM head warm-up before GRPO (`signals.sprm_fit_*`): the policy samples on training
    questions (the last ones of the run's order, against the GRPO backend at step 0; `backend` is
    the GRPO vector env's, shared), the head is
    fitted on their step states (`agents.sprm_fit`), its report written to `sprm_fit.json`/`.png`.
    Returns the metrics row."""
    from agents.rollout import collect_groups
    from agents.sprm_fit import extract_step_states, fit_head, plot_fit
    from zerosearch_env.vector_env import make_vec

    sc = cfg.signals
    t0 = time.perf_counter()
    fit_tasks = list(shuffled[-sc.sprm_fit_tasks:])
    per = max(1, (cfg.grpo.prompts_per_step * cfg.grpo.group_size) // sc.sprm_fit_samples)
    vec = make_vec(per * sc.sprm_fit_samples, env_cfg, backend=backend, tasks=fit_tasks)
    trajs = collect_groups(policy, vec, fit_tasks, sc.sprm_fit_samples, generator=generator, salt="sprm-fit",
                           progress=progress, desc="SPRM head warm-up: rollouts",
                           max_completion_tokens=cfg.grpo.max_completion_tokens)
    data = extract_step_states(policy.model, trajs, policy.tokenizer, label=sc.sprm_label,
                               think_paragraphs=sc.sprm_think_paragraphs, autocast_dtype=autocast, progress=progress)
    row = {"phase": "sprm_fit", "step": step, "trajectories": data.num_trajectories,
           "em": float(data.labels.mean()) if data.num_trajectories else 0.0}
    if set(data.labels.tolist()) != {0.0, 1.0}:
        print(f"zerosearch train: SPRM head warm-up skipped: all {data.num_trajectories} rollouts are "
              f"{'right' if data.labels.any() else 'wrong'}, so there is nothing to rank")
        return {**row, "skipped": True, "seconds": time.perf_counter() - t0}
    report = fit_head(head, data, epochs=sc.sprm_fit_epochs, lr=sc.sprm_fit_lr, dynamic=False, seed=cfg.seed)
    (out / "sprm_fit.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    plot_fit(report, out / "sprm_fit.png")
    return {**row, "skipped": False, "best_epoch": report["best_epoch"], "train_auroc": report["train_auroc"],
            "val_auroc": report["val_auroc"], "seconds": time.perf_counter() - t0}


# TRL's per-step figures kept in a metrics row (besides the rollout's own metrics and the gate counters)
TRL_ROW_KEYS = ("loss", "grad_norm", "learning_rate", "entropy", "reward_std", "frac_reward_zero_std",
                "clip_ratio/region_mean", "step_time")


def _train_trl(cfg: TrainConfig, out: Path, model, tokenizer, tasks, order: Sequence[Task], backend, curriculum,
               steps: int, state: dict, log, checkpoint, generator: torch.Generator, autocast,
               resume: dict | None = None) -> None:
    """GRPO with `trl.GRPOTrainer` driving our rollouts (`grpo.trainer: trl`, the GPU path).

    TRL's global step is the GRPO step: the curriculum follows it, every step appends its metrics row
    (through `log`) as it happens and updates the curriculum, and `checkpoint(optimizer, lr_scheduler)`
    writes `checkpoint/` every `checkpoint_every` steps and at the last one. The questions come in the
    run's own `order` from `state["data_pos"]` (as in our loop; TRL does not shuffle them), and rollouts
    sample from `generator`, so both are part of the checkpoint. `resume` (the trainer.pt of a checkpoint
    taken inside this phase) restores TRL's step, optimizer, LR schedule and RNG states."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from agents.trl_integration import CurriculumCallback, SearchRollout, StepCallback, env_reward

    g = cfg.grpo
    start = state["grpo_step"]
    rollout = SearchRollout(tasks, cfg.env_config(), backend=backend, max_new_tokens=g.max_new_tokens,
                            max_completion_tokens=g.max_completion_tokens, generator=generator)
    questions = [order[(state["data_pos"] + i) % len(order)] for i in range((steps - start) * g.prompts_per_step)]
    args = GRPOConfig(
        output_dir=str(out / "trl"), use_cpu=not torch.cuda.is_available(),
        per_device_train_batch_size=g.prompts_per_step * g.group_size, num_generations=g.group_size,
        max_steps=steps, shuffle_dataset=False, learning_rate=g.learning_rate, temperature=g.temperature,
        loss_type=g.loss_type, epsilon=g.epsilon_low, epsilon_high=g.epsilon_high, scale_rewards=g.scale_rewards,
        max_grad_norm=g.max_grad_norm, bf16=autocast is torch.bfloat16, logging_steps=1, report_to=[],
        save_strategy="no", seed=cfg.seed, beta=0.0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=[env_reward], args=args,
                          train_dataset=Dataset.from_list(rollout.dataset_rows(questions)), processing_class=tokenizer,
                          rollout_func=rollout, callbacks=[CurriculumCallback(rollout, curriculum=curriculum)])

    def restore(optimizer, lr_scheduler) -> None:
        if resume.get("lr_scheduler") is None:
            raise ValueError("the checkpoint's GRPO steps were not run with grpo.trainer: trl (no LR scheduler "
                             "state); resume it with the trainer that wrote it")
        optimizer.load_state_dict(resume["optimizer"])
        lr_scheduler.load_state_dict(resume["lr_scheduler"])
        _set_rng_state(resume["rng"], generator)

    def after_step(step: int, logs: dict, optimizer, lr_scheduler) -> None:
        row = {"phase": "grpo", "step": state["global_step"], "grpo_step": step - 1, "trainer": "trl",
               "noise_probability": float(curriculum.probability(step - 1)), **rollout.last_metrics,
               **{k: float(logs[k]) for k in TRL_ROW_KEYS if k in logs}}
        for k, v in (rollout.backend.stats() or {}).items():
            if isinstance(v, (int, float)):
                row[f"gate/{k}"] = float(v)
        writer = trainer.is_world_process_zero()  # under `accelerate launch`, one process writes the run
        if writer:
            log(row)
        curriculum.update(rollout.last_em)  # moves an adaptive one
        state["grpo_step"] = step
        state["global_step"] += 1
        state["data_pos"] += g.prompts_per_step
        if writer and (step % cfg.checkpoint_every == 0 or step == steps):
            checkpoint(optimizer, lr_scheduler)

    trainer.add_callback(StepCallback(trainer, after_step, start_step=start,
                                      restore=restore if resume is not None else None))
    trainer.train()
