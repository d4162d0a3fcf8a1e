"""The trainer's noise curriculum is ONE object: the trainer updates it from every GRPO batch's
success rate (an adaptive curriculum moves), the simulator it builds draws from that same object,
and a checkpoint saves and restores its state."""

from __future__ import annotations

import json

import pytest

from agents.train_config import TrainConfig
from agents.trainer import train
from tests.test_simulator import CannedEngine, good_reply
from tests.train_helpers import TASKS, tiny_model, tiny_tokenizer

ADAPTIVE = {"type": "adaptive", "target_success": 0.5, "p_init": 0.5, "max_delta": 0.05, "window": 8}


def _cfg() -> TrainConfig:
    return TrainConfig.model_validate({
        "preset": "tiny", "seed": 3, "trainable_layers": 1, "precision": "fp32", "checkpoint_every": 2,
        "env": {"backend": "simulator", "max_turns": 2, "top_k": 1, "max_doc_chars": 120},
        "simulator": {"engine": "transformers", "words_per_doc": 12, "max_regenerations": 0},
        "curriculum": ADAPTIVE, "warmup": {"enabled": False},
        "grpo": {"steps": 4, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 8, "micro_batch_size": 2},
    })


@pytest.fixture
def canned_simulator_engine(monkeypatch):
    """The simulator is built by the trainer from the config, as in a real run; only its LLM is a
    canned stand-in (no model download)."""
    import zerosearch_env.search.simulator as simulator

    monkeypatch.setattr(simulator, "make_engine", lambda kind, opts: CannedEngine(good_reply("Quorth")))


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
