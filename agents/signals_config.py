"""`SignalsConfig`: which self-supervised training signals a run uses (SPRM, PCL, Brier, monitors).

Kept apart from `agents.signals` so that configs load without importing torch. Everything is off
by default except the collapse monitors (logging only).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_GRAD_SCALE = 1e-4  # the SPRM head's gradient into the shared backbone is multiplied by this


class SignalsConfig(BaseModel):
    """Which self-supervised signals a training run uses (all off except the monitors)."""

    model_config = ConfigDict(extra="forbid")

    sprm: bool = False
    sprm_weight: float = Field(1.0, ge=0)
    sprm_grad_scale: float = Field(DEFAULT_GRAD_SCALE, ge=0)
    sprm_lr: float = Field(1e-3, gt=0)
    sprm_mlp_size: int = Field(128, ge=0)
    sprm_think_paragraphs: bool = True
    sprm_label: str = "em"
    sprm_dynamic: bool = True
    sprm_shaping_weight: float = 0.0
    sprm_auroc_window: int = Field(10, ge=1)
    # head warm-up before GRPO (agents.sprm_fit): sample the policy on training questions, fit the head offline
    sprm_fit_tasks: int = Field(0, ge=0, description="questions of the head warm-up before GRPO (0: off)")
    sprm_fit_samples: int = Field(4, ge=1, description="trajectories per question of the head warm-up")
    sprm_fit_epochs: int = Field(300, ge=1)
    sprm_fit_lr: float = Field(1e-3, gt=0)

    pcl: bool = False
    pcl_weight: float = 0.5
    pcl_mode: Literal["abs", "sq"] = "abs"
    pcl_max_tokens: int = Field(12, ge=2)
    pcl_missing_penalty: float = -1.0
    pcl_sft_weight: float = Field(0.0, ge=0)

    brier: bool = Field(False, description=(
        "add RLCR's calibration term -(q - r)^2 for the <confidence> q written after the answer "
        "(missing: -1), where r is the environment's reward itself (EM with env.reward: em, token F1 "
        "with env.reward: f1): the total r - (q - r)^2 is a proper scoring rule, best at q = the "
        "expected reward; needs env.calibration"))
    brier_weight: float = 1.0
    confidence_max_tokens: int = Field(8, ge=2)

    monitors: bool = True
    monitor_window: int = Field(8, ge=2)
