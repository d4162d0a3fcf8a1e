"""`zerosearch train` / `eval`: resume reproduces an uninterrupted run; CLI smoke on a tiny config."""

from __future__ import annotations

import json

import pytest
import torch

from agents.train_config import TrainConfig
from agents.trainer import train
from tests.train_helpers import TASKS, lookup_backend, tiny_model, tiny_tokenizer, write_cli_config


def length_hook(cfg, model, tokenizer):
    """A GRPO plug-in (see `grpo.hooks`): reward = share of even token ids the agent wrote, so a
    random tiny model gets nonzero advantages and the resume test covers real optimiser steps."""
    def even_share(trajs):
        return [sum(i % 2 == 0 for i, m in zip(t.completion_ids, t.env_mask) if m) / max(1, sum(t.env_mask))
                for t in trajs]
    return {"reward_fns": [(even_share, 1.0)]}


def _cfg(**over) -> TrainConfig:
    base = {
        "preset": "tiny", "seed": 7, "trainable_layers": 1, "precision": "fp32", "checkpoint_every": 2,
        "env": {"backend": "simulator", "max_turns": 2, "top_k": 1, "max_doc_chars": 120},
        "curriculum": {"type": "exponential", "p_start": 0.0, "p_end": 0.5, "total_steps": 4},
        "warmup": {"num_tasks": 6, "batch_size": 3, "epochs": 1, "micro_batch_size": 2},
        "grpo": {"steps": 4, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 8, "micro_batch_size": 2,
                 "learning_rate": 1e-3, "hooks": ["tests.test_train:length_hook"]},
    }
    base.update(over)
    return TrainConfig.model_validate(base)


def _run(out, max_steps, resume=False):
    return train(_cfg(), out, max_steps=max_steps, resume=resume, progress=False, model=tiny_model(seed=11),
                 tokenizer=tiny_tokenizer(), tasks=TASKS, backend=lookup_backend(), warmup_backend=lookup_backend())


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    full = _run(tmp_path / "full", 4)
    part = _run(tmp_path / "part", 2)
    assert [r["phase"] for r in part.rows].count("grpo") == 2
    resumed = _run(tmp_path / "part", 4, resume=True)
    rows_full = [r for r in full.rows if r["phase"] == "grpo"]
    rows_res = [r for r in resumed.rows if r["phase"] == "grpo"]
    assert [r["grpo_step"] for r in rows_res] == [0, 1, 2, 3]
    keys = ["noise_probability", "reward", "em", "agent_tokens", "searches_per_episode", "invalid_rate", "loss", "grad_norm"]
    for a, b in zip(rows_full[2:], rows_res[2:]):
        for k in keys:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (k, a[k], b[k])
    assert rows_full[3]["noise_probability"] > rows_full[0]["noise_probability"]
    assert sum(r["grad_norm"] > 0 and r["adv_abs_mean"] > 0 for r in rows_full) >= 2  # real updates happened
    # the saved weights agree too
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "full" / "checkpoint" / "model.safetensors"))
    wb = load_file(str(tmp_path / "part" / "checkpoint" / "model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(full.rows)  # one row per step, none duplicated by the resume
    assert (tmp_path / "part" / "curves.png").stat().st_size > 1000
    state = json.loads((tmp_path / "part" / "checkpoint" / "trainer_state.json").read_text())
    assert state["grpo_step"] == 4 and state["curriculum"]["type"] == "exponential"


def test_warmup_masks_environment_tokens_and_learns(tmp_path):
    from agents.policy import Policy
    from agents.warmup import build_oracle_dataset, sft_loss, warmup_step
    from zerosearch_env import make_vec

    model, tok = tiny_model(seed=2), tiny_tokenizer()
    policy = Policy(model, tok)
    vec = make_vec(3, backend=lookup_backend(), tasks=TASKS, max_turns=3, top_k=1)
    data = build_oracle_dataset(policy, vec, TASKS)
    assert len(data) == len(TASKS) and all(0 in t.env_mask and 1 in t.env_mask for t in data)
    assert tok.decode(data[0].completion_ids) == data[0].text
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = float(sft_loss(model, data, tok.pad_token_id).detach())
    for _ in range(5):
        warmup_step(model, opt, data, tok.pad_token_id, micro_batch_size=3)
    assert float(sft_loss(model, data, tok.pad_token_id)) < before


def test_frozen_prefix_cache_gives_the_full_pass_loss_and_gradients():
    """The warm-up's cache of the frozen lower blocks changes nothing but the work done: loss and
    gradients equal a full pass, whatever padding the batch has."""
    from agents.policy import Policy
    from agents.trainer import set_trainable
    from agents.warmup import FrozenPrefix, build_oracle_dataset, sft_loss
    from zerosearch_env import make_vec

    model, tok = tiny_model(seed=3), tiny_tokenizer()
    pad = tok.pad_token_id
    vec = make_vec(3, backend=lookup_backend(), tasks=TASKS, max_turns=3, top_k=1)
    data = build_oracle_dataset(Policy(model, tok), vec, TASKS)
    assert FrozenPrefix.for_model(model, pad) is None  # nothing frozen yet: no cache
    trainable = set_trainable(model, 1)
    prefix = FrozenPrefix.for_model(model, pad)
    assert prefix is not None and prefix.start == 1 and prefix.check(data[0])
    lengths = {len(t.completion_ids) for t in data[:3]}
    assert len(lengths) > 1  # the batch below is padded

    def loss_and_grads(**kw):
        model.zero_grad(set_to_none=True)
        loss = sft_loss(model, data[:3], pad, **kw)
        loss.backward()
        return float(loss), [p.grad.clone() for p in trainable]

    full_loss, full_grads = loss_and_grads()
    for _ in range(2):  # the second time the states come from the cache
        loss, grads = loss_and_grads(prefix=prefix, keys=[0, 1, 2])
        assert loss == pytest.approx(full_loss, rel=1e-5)
        assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(grads, full_grads))
    assert sorted(prefix.states) == [0, 1, 2]
    with pytest.raises(ValueError, match="one key per trajectory"):
        sft_loss(model, data[:3], pad, prefix=prefix, keys=[0])


def test_cli_train_and_eval_smoke(tmp_path):
    from agents.cli import main

    # 3 turns: the oracle needs two searches for a bridge question (its first 4 warm-up questions hold 2)
    path = write_cli_config(tmp_path, env={"max_turns": 3}, warmup={"num_tasks": 4, "batch_size": 4, "epochs": 1})
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--output", str(out), "--no-progress"]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["warmup", "grpo"]
    assert (out / "curves.png").exists() and (out / "checkpoint" / "config.json").exists()
    assert json.loads((out / "train_summary.json").read_text())["grpo_steps"] == 1
    report = tmp_path / "report.json"
    assert main(["eval", "--checkpoint", str(out), "--config", str(path), "--backend", "bm25", "--n", "4",
                 "--max-new-tokens", "6", "--output", str(report), "--no-progress"]) == 0
    rep = json.loads(report.read_text())
    assert rep["n"] == 4 and set(rep["summary"]) >= {"em", "f1", "format_compliance", "invalid_rate", "by_kind"}
    assert main(["eval", "--agent", "oracle", "--config", str(path), "--n", "4", "--no-progress"]) == 0
    assert main(["train", "--config", str(tmp_path / "missing.json"), "--output", str(out)]) == 2


def test_torch_threads_follow_the_request_or_the_idle_cores():
    import os

    from agents.trainer import set_torch_threads

    before = torch.get_num_threads()
    try:
        assert set_torch_threads(1) == 1 and torch.get_num_threads() == 1
        n = set_torch_threads(None)
        assert 1 <= n <= (os.cpu_count() or 1) and torch.get_num_threads() == n
    finally:
        torch.set_num_threads(before)


def test_curves_mark_panels_without_data(tmp_path):
    from agents.trainer import plot_curves

    grpo = [{"phase": "grpo", "step": i, "reward": 0.1 * i, "em": 0.1 * i, "noise_probability": 0.05 * i,
             "searches_per_episode": 1.0, "invalid_rate": 0.0} for i in range(3)]
    empty = plot_curves(grpo, tmp_path / "curves.png")
    assert empty == ["warm-up loss"]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    warm = [{"phase": "warmup", "step": 0, "loss": 2.0}]
    assert plot_curves(warm + grpo, tmp_path / "curves2.png") == []
