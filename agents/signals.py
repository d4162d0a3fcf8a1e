"""Self-supervised training signals wired into the GRPO loop: SPRM, PCL, Brier calibration, monitors.

`SignalsConfig` (a section of the training config, everything off by default except the
monitors) says which signals run; `SelfSignals` gives the training loop what it plugs in:

    signals = SelfSignals(cfg.signals, model, tokenizer, calibration=env_config.calibration)
    optimizer.add_param_group(...)  for g in signals.param_groups()       # the SPRM head's own group
    trajs = collect_rollouts(...)
    extra = signals.after_rollout(policy, trajs, generator)                # confidence / PCL segments
    out = grpo_update(..., reward_fns=signals.reward_fns(), extra_loss_fns=signals.extra_loss_fns(),
                      **signals.grpo_kwargs())
    row.update(extra); row.update(signals.step_metrics(step, trajs))       # monitors, AUROC, ECE...
    signals.save(checkpoint_dir) / signals.load(checkpoint_dir)

* SPRM: the SPR loss is added to the GRPO loss (`agents.sprm.SPRMLoss`, the backbone gradient
  scaled by `sprm_grad_scale`), the head trains in its own optimiser group at `sprm_lr`. Each step
  logs `sprm_auroc_batch`: the AUROC of the head's trajectory scores for EM on that step's rollouts,
  scored before the head has trained on them (held out), and `sprm_auroc_window` over the last
  `sprm_auroc_window` steps. `sprm_shaping_weight > 0` adds `w * trajectory_score` to the reward.
  `sprm_fit_tasks > 0` warms the head up before the first GRPO step: the policy samples
  `sprm_fit_samples` trajectories of that many training questions and the head is fitted offline
  on their step states (`agents.sprm_fit`; the trainer writes `sprm_fit.json`/`.png`).
* PCL: after each answered training trajectory the policy writes `<reward>q</reward>`; the
  consistency reward (weight `pcl_weight`) joins the reward, `pcl_sft_weight > 0` adds the
  supervised segment loss. Never at inference (generation there stops at `</answer>`).
* Brier: with `EnvConfig(calibration=True)` the policy writes `<confidence>q</confidence>` after
  its answer; `brier=True` adds RLCR's `-(q - r) ** 2` (missing: -1) to the reward, where r is
  the env reward itself (EM or F1, `agents.calibration.confidence_target`), so the total is the
  proper scoring rule `r - (q - r) ** 2`. The logged calibration (`calib_*`) uses the same r.
* Monitors: `agents.monitors.CollapseMonitor` over each step's rollouts.
"""

from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path
from typing import Sequence

import torch

from agents.calibration import add_confidence, auroc, brier_reward_fn, calibration_report, confidence_target
from agents.monitors import CollapseMonitor, TrajectorySummary
from agents.pcl import PCLSupervisedLoss, add_post_completion, pcl_reward_fn
from agents.signals_config import SignalsConfig
from agents.sprm import SPRMHead, SPRMLoss, head_param_group, score_trajectories
from zerosearch_env.protocol import parse_action

SIGNALS_FILE = "signals_state.json"


def summarize_for_monitor(traj) -> TrajectorySummary:
    """Queries, answer, group and reward of a rollout `Trajectory` for the collapse monitors."""
    queries = []
    for text, is_agent in traj.segments:
        if is_agent:
            act = parse_action(text)
            if act.kind == "search":
                queries.append(act.content)
    question = traj.task.question if getattr(traj, "task", None) is not None else ""
    return TrajectorySummary(question=question, queries=queries, answer=(traj.info or {}).get("answer"),
                             group=traj.group, reward=float(traj.reward))


class SelfSignals:
    """The training loop's handle on SPRM, PCL, Brier calibration and the collapse monitors."""

    def __init__(self, config: SignalsConfig | dict | None, model, tokenizer, calibration: bool = False):
        self.config = config if isinstance(config, SignalsConfig) else SignalsConfig(**(config or {}))
        cfg = self.config
        if cfg.brier and not calibration:
            raise ValueError("signals.brier needs the environment in calibration mode (EnvConfig(calibration=True)) "
                             "so that the prompt asks for <confidence>")
        self.calibration = calibration
        self.tokenizer = tokenizer
        self.head: SPRMHead | None = None
        self.sprm_loss: SPRMLoss | None = None
        if cfg.sprm:
            device = next(model.parameters()).device
            self.head = SPRMHead(int(model.config.hidden_size), cfg.sprm_mlp_size).to(device)
            self.sprm_loss = SPRMLoss(self.head, tokenizer, weight=cfg.sprm_weight, grad_scale=cfg.sprm_grad_scale,
                                      think_paragraphs=cfg.sprm_think_paragraphs, label=cfg.sprm_label,
                                      dynamic=cfg.sprm_dynamic)
        self.model = model
        self.monitor = CollapseMonitor(window=cfg.monitor_window) if cfg.monitors else None
        self._auroc_window: deque[tuple[list[float], list[float]]] = deque(maxlen=cfg.sprm_auroc_window)

    # ----------------------------------------------------------------- plug-ins for the GRPO step
    def param_groups(self) -> list[dict]:
        """Optimizer groups to add (the SPRM head's own learning rate)."""
        return [head_param_group(self.head, self.config.sprm_lr)] if self.head is not None else []

    def grpo_kwargs(self) -> dict:
        """Extra keyword arguments for `grpo_update` (SPRM reads the second-to-last layer)."""
        return {"need_hidden": True, "hidden_layer": -2} if self.head is not None else {}

    def reward_fns(self) -> list[tuple]:
        cfg = self.config
        fns: list[tuple] = []
        if cfg.pcl and cfg.pcl_weight:
            fns.append((pcl_reward_fn, cfg.pcl_weight))
        if cfg.brier and cfg.brier_weight:
            fns.append((brier_reward_fn, cfg.brier_weight))
        if self.head is not None and cfg.sprm_shaping_weight:
            fns.append((_sprm_score_fn, cfg.sprm_shaping_weight))
        return fns

    def extra_loss_fns(self) -> list:
        fns: list = []
        if self.sprm_loss is not None:
            fns.append(self.sprm_loss)
        if self.config.pcl and self.config.pcl_sft_weight > 0:
            fns.append(PCLSupervisedLoss(self.tokenizer, self.config.pcl_sft_weight))
        return fns

    def after_rollout(self, policy, trajs: Sequence, generator: torch.Generator | None = None) -> dict[str, float]:
        """Training only: write the confidence (calibration mode) and PCL segments after the answers,
        and score trajectories with SPRM when shaping uses the score. Returns figures to log."""
        out: dict[str, float] = {}
        if self.calibration:
            out.update(add_confidence(policy, trajs, generator, self.config.confidence_max_tokens))
        if self.config.pcl:
            out.update(add_post_completion(policy, trajs, generator, self.config.pcl_max_tokens,
                                           mode=self.config.pcl_mode, missing_penalty=self.config.pcl_missing_penalty))
        if self.head is not None and self.config.sprm_shaping_weight:
            score_trajectories(self.model, self.head, trajs, self.tokenizer,
                               think_paragraphs=self.config.sprm_think_paragraphs)
        return out

    # ----------------------------------------------------------------- per-step metrics
    def step_metrics(self, step: int, trajs: Sequence) -> dict[str, float]:
        """Monitors, SPRM held-out AUROC and loss figures, calibration of the stated confidences."""
        row: dict[str, float] = {}
        if self.monitor is not None and trajs:
            row.update(self.monitor.update(step, [summarize_for_monitor(t) for t in trajs]))
        if self.sprm_loss is not None:
            scores, labels = self.sprm_loss.pop_pre_update()
            row.update({k: v for k, v in self.sprm_loss.last.items()})
            a = auroc(scores, labels) if scores else None
            row["sprm_auroc_batch"] = float("nan") if a is None else a
            self._auroc_window.append((scores, labels))
            all_s = [x for s, _ in self._auroc_window for x in s]
            all_l = [x for _, l in self._auroc_window for x in l]
            aw = auroc(all_s, all_l) if all_s else None
            row["sprm_auroc_window"] = float("nan") if aw is None else aw
            row["sprm_score_mean"] = sum(scores) / len(scores) if scores else float("nan")
        if self.calibration:
            answered = [t for t in trajs if (t.info or {}).get("answered")]
            if answered:
                rep = calibration_report([t.info.get("confidence") for t in answered],
                                         [confidence_target(t) for t in answered])
                for k in ("ece", "brier", "auroc", "mean_confidence"):
                    row[f"calib_{k}"] = float("nan") if rep[k] is None else float(rep[k])
                row["calib_missing"] = rep["missing"] / rep["n"]
        return row

    # ----------------------------------------------------------------- checkpoints
    def save(self, directory: str | Path) -> None:
        """Write the SPRM head (`sprm_head.pt`) and the monitors' history into a checkpoint folder."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if self.head is not None:
            self.head.save(d)
        state = {"config": self.config.model_dump(),
                 "monitor": self.monitor.state_dict() if self.monitor is not None else None,
                 "auroc_window": list(self._auroc_window)}
        (d / SIGNALS_FILE).write_text(json.dumps(state, allow_nan=True), encoding="utf-8")

    def load(self, directory: str | Path) -> None:
        """Restore what `save` wrote (the head's weights in place, so optimizer groups stay valid)."""
        d = Path(directory)
        if self.head is not None:
            loaded = SPRMHead.load(d)
            self.head.load_state_dict(loaded.state_dict())
        path = d / SIGNALS_FILE
        if path.exists():
            state = json.loads(path.read_text(encoding="utf-8"))
            if self.monitor is not None and state.get("monitor"):
                self.monitor.load_state_dict(state["monitor"])
            self._auroc_window.clear()
            for s, l in state.get("auroc_window", []):
                self._auroc_window.append((list(s), list(l)))


def _sprm_score_fn(trajs: Sequence) -> list[float]:
    """Reward shaping term: the SPRM trajectory score stored by `after_rollout` (0 when missing)."""
    out = []
    for t in trajs:
        s = (t.info or {}).get("sprm_score")
        out.append(float(s) if s is not None and math.isfinite(float(s)) else 0.0)
    return out
