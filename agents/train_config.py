"""`TrainConfig`: every hyperparameter of `zerosearch train`, with the presets `tiny` and `gpu`.

- `tiny` (the embedded default, sized for a 2-core CPU): SmolLM2-135M-Instruct policy (the top 6
  of 30 blocks trained, `trainable_layers: null` for full fine-tuning; bf16 autocast only where the
  CPU has native bf16; torch threads from the idle cores), the same small model as the simulator (a
  separate frozen copy; 24-word documents, no regeneration round: the gate repairs or flags), the
  built-in fictional world (k = 2 documents of <= 200 characters, 4 turns), the exponential
  (ZeroSearch) curriculum 0 -> 0.5, a supervised warm-up on 128 oracle trajectories x 3 epochs
  (BM25, single-hop and multi-hop; the frozen blocks' states are computed once and reused), then 4
  GRPO steps of 2 questions x 4 samples with our minimal loop (`trainer: ours`; `trainer: trl`
  runs TRL's GRPOTrainer on the same rollouts).
- `gpu` (documented, not run here): ZeroSearch-style. A Qwen2.5-3B-Instruct policy trained with
  TRL's GRPOTrainer, a 14B simulator behind OpenAI-compatible vLLM/SGLang servers (several URLs
  = replicas), k = 5, max_turns = 5, curriculum 0 -> 0.5.

A config file (YAML or JSON) holds the same fields; `preset:` in a file starts from a preset and
overrides what the file sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.signals_config import SignalsConfig
from zerosearch_env.config import EnvConfig, read_mapping


class WarmupConfig(BaseModel):
    """Supervised warm-up on oracle trajectories (env tokens masked)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    num_tasks: int = Field(128, ge=0, description="training questions the oracle runs on (correct ones are kept)")
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(8, ge=1)
    micro_batch_size: int = Field(1, ge=1, description=(
        "trajectories per forward pass; 1 wastes nothing on padding, which on a CPU is the fastest"))
    learning_rate: float = Field(2e-4, gt=0)
    backend: str = Field("bm25", description="the real backend the oracle searches")
    max_grad_norm: float = 1.0
    cache_frozen: bool = Field(True, description=(
        "compute the frozen lower blocks once per trajectory and reuse their states in later epochs "
        "(only with trainable_layers set; checked against a full pass first)"))


class GRPOLossConfig(BaseModel):
    """The GRPO loss and update settings (`agents.grpo.GRPOSettings`) that `zerosearch train` and
    `zerosearch flywheel` both take; their config models inherit these fields."""

    loss_type: Literal["dapo", "grpo", "bnpo"] = "dapo"
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    scale_rewards: Literal["group", "batch", "none"] = "group"
    micro_batch_size: int = Field(4, ge=1)
    max_grad_norm: float = 1.0


class GRPOConfigModel(GRPOLossConfig):
    """GRPO on rollouts against the simulator."""

    model_config = ConfigDict(extra="forbid")
    trainer: Literal["ours", "trl"] = Field("ours", description="ours: agents/grpo.py loop; trl: trl.GRPOTrainer")
    steps: int = Field(4, ge=0)
    prompts_per_step: int = Field(2, ge=1)
    group_size: int = Field(4, ge=2)
    learning_rate: float = Field(5e-5, gt=0)
    temperature: float = Field(0.7, gt=0, description=(
        "sampling temperature of rollouts; at 1.0 the warmed-up 135M policy wrote invalid turns 62-67% of the time "
        "and every group scored 0 (no GRPO signal) in the measured tiny run"))
    max_new_tokens: int = Field(40, ge=4, description="tokens per agent turn")
    max_completion_tokens: int = Field(1024, ge=16, description="agent + env tokens per episode")
    format_reward_weight: float = Field(0.0, ge=0, description="weight of rewards.format_reward added to the env reward")
    hooks: list[str] = Field(default_factory=list, description=(
        "plug-ins 'module:function'; each function(config, model, tokenizer) returns a dict with optional "
        "'reward_fns' [(fn, weight)], 'extra_loss_fns' [fn], 'need_hidden' bool, 'hidden_layer' int"))


class TrainConfig(BaseModel):
    """Everything `zerosearch train` needs. `model`/`simulator_model` None = the default small model."""

    model_config = ConfigDict(extra="forbid")
    preset: str = "tiny"
    seed: int = 0
    model: str | None = None
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 autocast only where the CPU/GPU supports it")
    threads: int | None = Field(None, ge=1, description=(
        "torch CPU threads; None: one per core not busy with another running process at start "
        "(agents.trainer.set_torch_threads). OpenMP threads that share a core with another process stall "
        "at barriers: on a shared 2-core machine a forward pass measured 14x slower with 2 threads than 1"))
    trainable_layers: int | None = Field(6, ge=1, description=(
        "train only the top N transformer blocks and the final norm (embeddings frozen); None: full fine-tuning"))
    env: EnvConfig = Field(default_factory=lambda: EnvConfig(
        backend="simulator", max_turns=4, top_k=2, max_doc_chars=200, reward="f1"))
    curriculum: dict[str, Any] = Field(default_factory=lambda: {
        "type": "exponential", "p_start": 0.0, "p_end": 0.5, "total_steps": 4, "base": 4.0})
    simulator: dict[str, Any] = Field(default_factory=lambda: {
        "engine": "transformers", "words_per_doc": 24, "max_new_tokens": 112, "max_regenerations": 0},
        description="backend_options of the simulator (the curriculum is added from `curriculum`)")
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    grpo: GRPOConfigModel = Field(default_factory=GRPOConfigModel)
    signals: SignalsConfig = Field(default_factory=SignalsConfig, description=(
        "self-supervised signals of our GRPO loop (agents/signals.py): SPRM, PCL, Brier reward (needs "
        "env.calibration), collapse monitors; all off but the monitors"))
    checkpoint_every: int = Field(2, ge=1, description="GRPO steps between checkpoints (also after warm-up and at the end)")
    eval_tasks: int = Field(0, ge=0, description=(
        "held-out (test split) questions the trained policy answers greedily at the end of training, reported in "
        "<run>/eval_heldout.json and as a metrics row (0: none)"))
    eval_backend: Literal["bm25", "simulator"] = Field("bm25", description=(
        "the search backend of that evaluation (the simulator at noise 0)"))
    report_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list, description=(
        "trackers that get every metrics.jsonl row as it is written (agents/reporting.py), on both trainers: "
        "tensorboard (events in <run>/tensorboard) and/or wandb (mode from WANDB_MODE); none by default"))

    def env_config(self) -> EnvConfig:
        """The training env config, with the simulator's options and curriculum filled in."""
        env = self.env
        if env.backend == "simulator":
            opts = {**self.simulator, **env.backend_options}
            opts.setdefault("curriculum", dict(self.curriculum))
            env = env.updated(backend_options=opts)
        return env

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        data = read_mapping(path)
        base = preset(data.get("preset", "tiny")).model_dump()
        return cls.model_validate(merge_config(base, data))


def merge_config(base: dict, over: dict) -> dict:
    """`over` laid over `base`, section by section (a `curriculum` is replaced whole, not merged)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_config(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "curriculum" else v
    return out


def preset(name: str) -> TrainConfig:
    """The named preset: "tiny" (CPU, embedded default) or "gpu" (ZeroSearch-style, documented)."""
    if name == "tiny":
        return TrainConfig(preset="tiny")
    if name == "gpu":
        return TrainConfig(
            preset="gpu", model="Qwen/Qwen2.5-3B-Instruct", precision="bf16", trainable_layers=None, threads=None,
            env=EnvConfig(backend="simulator", max_turns=5, top_k=5, max_doc_chars=600, reward="f1"),
            curriculum={"type": "exponential", "p_start": 0.0, "p_end": 0.5, "total_steps": 200, "base": 4.0},
            simulator={"engine": "openai", "model": "Qwen/Qwen2.5-14B-Instruct",
                       "base_urls": ["http://sim-0:8000/v1", "http://sim-1:8000/v1"], "words_per_doc": 60,
                       "max_new_tokens": 512},
            warmup=WarmupConfig(enabled=False),
            grpo=GRPOConfigModel(trainer="trl", steps=200, prompts_per_step=64, group_size=5, learning_rate=1e-6,
                                 max_new_tokens=512, max_completion_tokens=4096, micro_batch_size=8),
            checkpoint_every=50, eval_tasks=500,
        )
    raise ValueError(f"unknown preset {name!r}; choose 'tiny' or 'gpu'")
