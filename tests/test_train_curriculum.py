"""The trainer's noise curriculum is ONE object: the trainer updates it from every GRPO batch's
success rate (an adaptive curriculum moves), the simulator it builds draws from that same object,
and a checkpoint saves and restores its state."""

from __future__ import annotations

import json
import re

import pytest

from agents.train_config import TrainConfig
from agents.trainer import train
from tests.test_simulator import CannedEngine
from tests.train_helpers import TASKS, lookup_backend, tiny_model, tiny_tokenizer

ADAPTIVE = {"type": "adaptive", "target_success": 0.5, "p_init": 0.5, "max_delta": 0.05, "window": 8}


def _cfg() -> TrainConfig:
    return TrainConfig.model_validate({
        "preset": "tiny", "seed": 3, "trainable_layers": 1, "precision": "fp32", "checkpoint_every": 2,
        "env": {"backend": "simulator", "max_turns": 2, "top_k": 1, "max_doc_chars": 120},
        # the fictional TASKS are not world facts: the simulator is told the answer (ZeroSearch's hint)
        "simulator": {"engine": "transformers", "words_per_doc": 12, "max_regenerations": 0, "knowledge": "answer_hint"},
        "curriculum": ADAPTIVE, "warmup": {"enabled": False},
        "grpo": {"steps": 4, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 8, "micro_batch_size": 2},
    })


def lookup_like(prompt: str, params, call: int) -> str:
    """The simulator's LLM as a stand-in: a useful result states the answer the way
    `tests.train_helpers.lookup_backend` does; a noisy one (no answer in its prompt) does not."""
    query = re.search(r"Search query: (.*)", prompt).group(1)
    answer = re.search(r"The correct answer is: (.*)", prompt)
    ans = answer.group(1).strip() if answer else "nowhere"
    return f"Doc 1 (Title: {ans}) {query}: the answer is {ans}."


@pytest.fixture
def canned_simulator_engine(monkeypatch):
    """The simulator is built by the trainer from the config, as in a real run; only its LLM is a
    canned stand-in (no model download)."""
    import zerosearch_env.search.simulator.backend as simulator

    monkeypatch.setattr(simulator, "make_engine", lambda kind, opts: CannedEngine(lookup_like))


def _run(out, max_steps, resume=False):
    return train(_cfg(), out, max_steps=max_steps, resume=resume, progress=False, model=tiny_model(seed=5),
                 tokenizer=tiny_tokenizer(), tasks=TASKS)


def test_adaptive_noise_follows_the_batch_success_rate_in_the_simulator_and_resumes(tmp_path, canned_simulator_engine):
    full = [r for r in _run(tmp_path / "full", 4).rows if r["phase"] == "grpo"]
    assert [r["em"] for r in full] == [0.0] * 4  # a random model never answers right: success 0 < target 0.5
    # p falls by max_delta after every batch, from p_init
    assert [r["noise_probability"] for r in full] == pytest.approx([0.5, 0.45, 0.40, 0.35])
    # the simulator the trainer built draws from the same object: its own p is the row's
    assert [r["gate/p_noisy"] for r in full] == pytest.approx([r["noise_probability"] for r in full])

    _run(tmp_path / "part", 2)
    state = json.loads((tmp_path / "part" / "checkpoint" / "trainer_state.json").read_text())
    assert state["curriculum"]["p"] == pytest.approx(0.40) and state["curriculum"]["num_updates"] == 2
    resumed = [r for r in _run(tmp_path / "part", 4, resume=True).rows if r["phase"] == "grpo"]
    assert [r["noise_probability"] for r in resumed] == pytest.approx([0.5, 0.45, 0.40, 0.35])
    assert [r["gate/p_noisy"] for r in resumed[2:]] == pytest.approx([0.40, 0.35])
    state = json.loads((tmp_path / "part" / "checkpoint" / "trainer_state.json").read_text())
    assert state["curriculum"]["p"] == pytest.approx(0.30) and state["curriculum"]["num_updates"] == 4


def test_adaptive_noise_rises_while_the_policy_succeeds(tmp_path, canned_simulator_engine):
    """A warm-up that memorises the oracle trajectories makes the policy succeed; with success above
    the target the noise rises, step by step as the batch's EM says, in the simulator too."""
    cfg = TrainConfig.model_validate({**_cfg().model_dump(),
        "curriculum": {**ADAPTIVE, "target_success": 0.25, "p_init": 0.2},
        "trainable_layers": None,
        "warmup": {"num_tasks": 6, "batch_size": 6, "epochs": 120, "micro_batch_size": 6, "learning_rate": 3e-3},
        "grpo": {"steps": 3, "prompts_per_step": 2, "group_size": 4, "max_new_tokens": 40, "micro_batch_size": 8,
                 "learning_rate": 1e-4},
    })
    rows = [r for r in train(cfg, tmp_path / "run", progress=False, model=tiny_model(seed=21), tokenizer=tiny_tokenizer(),
                             tasks=TASKS, warmup_backend=lookup_backend()).rows if r["phase"] == "grpo"]
    p = [r["noise_probability"] for r in rows]
    assert sum(r["em"] for r in rows) / len(rows) > 0.25 and p[-1] > p[0] == pytest.approx(0.2)
    for r, p_next in zip(rows, p[1:]):  # window 8 = one batch of 8 episodes: the window mean is the batch EM
        assert p_next == pytest.approx(min(1.0, max(0.0, r["noise_probability"] + max(-0.05, min(0.05, r["em"] - 0.25)))))
    assert [r["gate/p_noisy"] for r in rows] == pytest.approx(p)


def test_the_simulator_built_for_grpo_shares_the_trainers_curriculum(canned_simulator_engine):
    """High success reported to the trainer's curriculum raises the simulator's noise probability."""
    from agents.trainer import grpo_backend
    from curricula import from_spec

    cfg = _cfg()
    curriculum = from_spec(dict(cfg.curriculum))
    backend = grpo_backend(cfg.env_config(), curriculum)
    assert backend.p_noisy() == pytest.approx(0.5)
    curriculum.update([1.0] * 4)
    assert backend.p_noisy() == pytest.approx(0.55)
    bm25 = grpo_backend(cfg.env_config().updated(backend="bm25", backend_options={}), curriculum)
    assert bm25.name == "bm25"  # a real engine has no noise to schedule
