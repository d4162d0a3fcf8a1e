"""`grpo.trainer: trl`: checkpoints hold the trained weights and TRL's step, metrics rows are written as
the steps happen, and a resumed run continues where it stopped (step, optimizer, RNG, data order,
curriculum) and reproduces an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch

from agents.train_config import TrainConfig
from agents.trainer import train
from tests.train_helpers import TASKS, lookup_backend, tiny_model, tiny_tokenizer
from zerosearch_env.search.base import SearchBackend


def _cfg() -> TrainConfig:
    return TrainConfig.model_validate({
        "preset": "tiny", "seed": 3, "trainable_layers": None, "precision": "fp32", "checkpoint_every": 2,
        "env": {"backend": "simulator", "max_turns": 2, "top_k": 1, "max_doc_chars": 120},
        "curriculum": {"type": "exponential", "p_start": 0.0, "p_end": 0.5, "total_steps": 4},
        # a warm-up that memorises the 6 oracle trajectories: sampled episodes then score unevenly, so GRPO's
        # advantages (and updates) are not zero
        "warmup": {"num_tasks": 6, "batch_size": 6, "epochs": 120, "micro_batch_size": 6, "learning_rate": 3e-3},
        "grpo": {"trainer": "trl", "steps": 3, "prompts_per_step": 2, "group_size": 4, "max_new_tokens": 40,
                 "learning_rate": 1e-3, "temperature": 1.0},
    })


class StepRecorder(SearchBackend):
    """The lookup backend, recording the training steps the trainer sets; raises at `crash_at` (a
    crash between steps: the step's rollouts never start)."""

    name = "lookup"

    def __init__(self, crash_at: int | None = None):
        self.inner = lookup_backend()
        self.crash_at = crash_at
        self.steps: list[int] = []

    def search(self, requests):
        return self.inner.search(requests)

    def set_training_step(self, step: int) -> None:
        if step == self.crash_at:
            raise RuntimeError(f"crash at step {step}")
        self.steps.append(int(step))


def _run(out, backend, resume=False):
    return train(_cfg(), out, resume=resume, progress=False, model=tiny_model(seed=21), tokenizer=tiny_tokenizer(),
                 tasks=TASKS, backend=backend, warmup_backend=lookup_backend())


def _grpo_rows(path):
    return [json.loads(x) for x in path.read_text().splitlines() if json.loads(x)["phase"] == "grpo"]


def test_trl_run_checkpoints_trained_weights_and_resumes_at_its_step(tmp_path):
    from safetensors.torch import load_file

    full = _run(tmp_path / "full", StepRecorder())
    rows_full = [r for r in full.rows if r["phase"] == "grpo"]
    assert [r["grpo_step"] for r in rows_full] == [0, 1, 2]
    n_warm = sum(r["phase"] == "warmup" for r in full.rows)

    with pytest.raises(RuntimeError, match="crash at step 2"):
        _run(tmp_path / "part", StepRecorder(crash_at=2))
    part = tmp_path / "part"
    # the rows of the two finished steps were written as they happened, and the checkpoint after step 2
    # holds the trained weights and TRL's step
    assert [r["grpo_step"] for r in _grpo_rows(part / "metrics.jsonl")] == [0, 1]
    state = json.loads((part / "checkpoint" / "trainer_state.json").read_text())
    assert state["grpo_step"] == 2 and state["phase"] == "grpo"
    assert state["global_step"] == n_warm + 2
    trained = load_file(str(part / "checkpoint" / "model.safetensors"))
    warm = load_file(str(part / "warmup_model" / "model.safetensors"))
    assert any(not torch.equal(trained[k], warm[k]) for k in warm)

    backend = StepRecorder()
    resumed = _run(part, backend, resume=True)
    assert backend.steps and backend.steps[0] == 2  # the curriculum continues at step 2, not 0
    rows_res = [r for r in resumed.rows if r["phase"] == "grpo"]
    assert [r["grpo_step"] for r in rows_res] == [0, 1, 2]
    a, b = rows_full[2], rows_res[2]
    assert b["noise_probability"] == a["noise_probability"] > rows_full[0]["noise_probability"]
    for k in ("reward", "em", "searches_per_episode", "invalid_rate", "loss", "grad_norm", "learning_rate"):
        assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), (k, a[k], b[k])
    wa = load_file(str(tmp_path / "full" / "checkpoint" / "model.safetensors"))
    wb = load_file(str(part / "checkpoint" / "model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    final = json.loads((part / "checkpoint" / "trainer_state.json").read_text())
    assert final["grpo_step"] == 3 and final["global_step"] == n_warm + 3
    assert len((part / "metrics.jsonl").read_text().splitlines()) == len(full.rows)


def test_environment_factory_envs_share_one_backend_that_follows_the_trainer_step(tmp_path):
    """TRL's `environment_factory` makes one `SearchToolEnv` per rollout slot: they share one simulator
    (one model), and `CurriculumCallback` on that backend moves every env's noise with TRL's step."""
    import pickle
    from types import SimpleNamespace

    from agents.trl_integration import CurriculumCallback, SearchToolEnv

    sim_dir = tmp_path / "sim"
    tiny_model(seed=2).save_pretrained(sim_dir)
    tiny_tokenizer().save_pretrained(sim_dir)
    cfg = {"backend": "simulator", "top_k": 1, "max_doc_chars": 100,
           "backend_options": {"engine": "transformers", "model": str(sim_dir), "max_new_tokens": 12,
                               "max_regenerations": 0,
                               "curriculum": {"type": "linear", "p_start": 0.0, "p_end": 1.0, "total_steps": 4}}}
    envs = [SearchToolEnv(cfg), SearchToolEnv(cfg)]
    try:
        for i, env in enumerate(envs):
            env.reset(question="Where was person Alva Renn born?", answers=["Quorth"], task_id=f"t{i}")
            env.search("Alva Renn")
        assert envs[0].backend is envs[1].backend
        assert pickle.loads(pickle.dumps(envs[0])).backend is envs[0].backend  # no copy after pickling
        assert [env.search_infos[-1]["p_noisy"] for env in envs] == [0.0, 0.0]

        callback = CurriculumCallback(backend=SearchToolEnv.shared_backend(cfg))
        callback.on_step_begin(None, SimpleNamespace(global_step=2), None)  # what TRL calls before step 2
        for env in envs:
            env.search("Alva Renn birthplace")
        assert [env.search_infos[-1]["p_noisy"] for env in envs] == [0.5, 0.5]
    finally:
        SearchToolEnv.release_shared_backends()
