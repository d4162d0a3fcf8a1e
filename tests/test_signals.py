"""SelfSignals: all signals on in one real GRPO step of a tiny model; config checks; save/load."""

import math

import pytest
import torch

from agents.grpo import GRPOSettings, grpo_update
from agents.policy import Policy
from agents.signals import SelfSignals, SignalsConfig, summarize_for_monitor
from tests.h6_helpers import one_thread, tiny_llama, tiny_tokenizer
from tests.test_sprm_training import _batch

_single_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def test_brier_needs_calibration_mode():
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="calibration"):
        SelfSignals({"brier": True}, tiny_llama(len(tok)), tok, calibration=False)
    with pytest.raises(Exception):
        SignalsConfig(sprm_lr=0)


def test_all_signals_in_one_grpo_step_and_checkpoint(tmp_path):
    tok = tiny_tokenizer()
    model = tiny_llama(len(tok), seed=0, layers=3)
    cfg = SignalsConfig(sprm=True, sprm_mlp_size=16, sprm_shaping_weight=0.1, pcl=True, pcl_sft_weight=0.1,
                        brier=True, monitor_window=2)
    sig = SelfSignals(cfg, model, tok, calibration=True)
    opt = torch.optim.AdamW([{"params": list(model.parameters()), "lr": 1e-3}] + sig.param_groups())
    assert opt.param_groups[1]["lr"] == cfg.sprm_lr
    policy = Policy(model, tok, max_new_tokens=8)
    trajs = _batch(tok)
    rewards_env = [t.reward for t in trajs]
    n_before = [len(t.completion_ids) for t in trajs]
    extra = sig.after_rollout(policy, trajs, torch.Generator().manual_seed(0))
    assert extra["confidence_segments"] == 4 and extra["pcl_segments"] == 4
    for t, n in zip(trajs, n_before):
        assert t.info["post_answer_start"] == n and t.info["pcl_start"] > n and len(t.completion_ids) > t.info["pcl_start"]
        assert "sprm_score" in t.info and 0 < t.info["sprm_score"] < 1
        assert t.reward in rewards_env  # the env reward itself is never changed
    names = [getattr(fn, "__name__", "") for fn, _ in sig.reward_fns()]
    assert names == ["pcl_reward_fn", "brier_reward_fn", "_sprm_score_fn"]
    head_before = [p.detach().clone() for p in sig.head.parameters()]
    out = grpo_update(model, opt, trajs, GRPOSettings(group_size=2, micro_batch_size=2), tok.pad_token_id,
                      reward_fns=sig.reward_fns(), extra_loss_fns=sig.extra_loss_fns(), **sig.grpo_kwargs())
    assert math.isfinite(out["loss"]) and out["extra_loss"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(head_before, sig.head.parameters()))
    row = sig.step_metrics(0, trajs)
    for key in ("entropy_mean", "unique_answers", "collapse_warning", "sprm_auroc_batch", "sprm_auroc_window",
                "calib_ece", "calib_brier", "calib_missing"):
        assert key in row, key
    assert 0.0 <= row["sprm_auroc_batch"] <= 1.0  # two correct and two wrong trajectories
    sig.save(tmp_path)
    other = SelfSignals(cfg, tiny_llama(len(tok), seed=1, layers=3), tok, calibration=True)
    other.load(tmp_path)
    h = torch.randn(2, 64)
    assert torch.allclose(other.head(h), sig.head(h))
    assert other.monitor.history == sig.monitor.history


def test_monitor_summary_reads_agent_queries_only():
    tok = tiny_tokenizer()
    t = _batch(tok)[0]
    s = summarize_for_monitor(t)
    assert s.queries == ["x y"] and s.group == 0
