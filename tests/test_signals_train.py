"""The trainer with every self-supervised signal on: rows, checkpointed SPRM head, resume."""

from __future__ import annotations

import pytest

from agents.signals import SIGNALS_FILE
from agents.sprm import HEAD_FILE, SPRMHead
from agents.train_config import TrainConfig
from agents.trainer import train
from tests.h6_helpers import one_thread
from tests.train_helpers import TASKS, lookup_backend, tiny_model, tiny_tokenizer, write_cli_config

_single_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def _cfg() -> TrainConfig:
    return TrainConfig.model_validate({
        "preset": "tiny", "seed": 3, "trainable_layers": 1, "precision": "fp32", "checkpoint_every": 10,
        "env": {"backend": "simulator", "max_turns": 2, "top_k": 1, "max_doc_chars": 120, "calibration": True},
        "curriculum": {"type": "constant", "p": 0.0},
        "warmup": {"enabled": False},
        "grpo": {"steps": 2, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 8, "micro_batch_size": 2,
                 "learning_rate": 1e-3},
        "signals": {"sprm": True, "sprm_mlp_size": 8, "pcl": True, "brier": True, "monitor_window": 2},
    })


def _run(out, max_steps, resume=False):
    return train(_cfg(), out, max_steps=max_steps, resume=resume, progress=False, model=tiny_model(seed=5),
                 tokenizer=tiny_tokenizer(), tasks=TASKS, backend=lookup_backend(), warmup_backend=lookup_backend())


def test_trainer_with_signals_logs_saves_and_resumes(tmp_path):
    full = _run(tmp_path / "full", 2)
    rows = [r for r in full.rows if r["phase"] == "grpo"]
    assert len(rows) == 2
    for key in ("entropy_mean", "unique_answers", "collapse_warning", "sprm_loss", "sprm_auroc_window",
                "confidence_segments", "pcl_segments"):
        assert all(key in r for r in rows), key
    ckpt = tmp_path / "full" / "checkpoint"
    assert (ckpt / HEAD_FILE).exists() and (ckpt / SIGNALS_FILE).exists()
    SPRMHead.load(ckpt)
    assert (tmp_path / "full" / "curves.png").stat().st_size > 1000

    _run(tmp_path / "part", 1)
    resumed = _run(tmp_path / "part", 2, resume=True)
    a, b = rows[1], [r for r in resumed.rows if r["phase"] == "grpo"][1]
    for k in ("reward", "loss", "extra_loss", "sprm_loss", "entropy_mean"):
        assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (k, a[k], b[k])


def test_trl_trainer_refuses_signals():
    cfg = _cfg()
    cfg.grpo.trainer = "trl"
    with pytest.raises(ValueError, match="ours"):
        train(cfg, "/tmp/unused-h6", max_steps=1, progress=False, model=tiny_model(seed=5), tokenizer=tiny_tokenizer(),
              tasks=TASKS, backend=lookup_backend(), warmup_backend=lookup_backend())


def test_cli_eval_best_of_and_calibration(tmp_path):
    import json

    from agents.cli import main

    path = write_cli_config(tmp_path, env={"calibration": True},
                            signals={"sprm": True, "sprm_mlp_size": 8, "brier": True})
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--output", str(out), "--no-progress"]) == 0
    report = tmp_path / "report.json"
    assert main(["eval", "--checkpoint", str(out), "--config", str(path), "--backend", "bm25", "--n", "3",
                 "--max-new-tokens", "6", "--best-of", "2", "--num-envs", "4", "--calibration",
                 "--output", str(report), "--no-progress"]) == 0
    rep = json.loads(report.read_text())
    assert rep["best_of"]["n"] == 2 and rep["best_of"]["trajectories"] == 6
    assert {"best_of_1_em", "best_of_n_em", "pass_at_n", "sprm_auroc"} <= set(rep["best_of"])
    assert rep["env"]["calibration"] is True
    # a checkpoint without an SPRM head, or --best-of without a checkpoint: clear errors, exit 2
    assert main(["eval", "--agent", "oracle", "--config", str(path), "--n", "2", "--best-of", "2"]) == 2
    (out / "checkpoint" / "sprm_head.pt").unlink()
    assert main(["eval", "--checkpoint", str(out), "--config", str(path), "--n", "2", "--best-of", "2",
                 "--max-new-tokens", "4", "--no-progress"]) == 2


def test_trainer_fits_the_sprm_head_on_its_own_rollouts_before_grpo(tmp_path):
    import json

    # a tiny policy that memorised the 6 oracle trajectories answers some sampled episodes right and some
    # wrong: both classes, so the head warm-up runs
    cfg = TrainConfig.model_validate({
        "preset": "tiny", "seed": 3, "trainable_layers": None, "precision": "fp32", "checkpoint_every": 10,
        "env": {"backend": "bm25", "max_turns": 2, "top_k": 1, "max_doc_chars": 120},
        "curriculum": {"type": "constant", "p": 0.0},
        "warmup": {"num_tasks": 6, "batch_size": 6, "epochs": 120, "micro_batch_size": 6, "learning_rate": 3e-3},
        "grpo": {"steps": 1, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 24, "micro_batch_size": 2},
        "signals": {"sprm": True, "sprm_mlp_size": 8, "sprm_fit_tasks": 6, "sprm_fit_samples": 4,
                    "sprm_fit_epochs": 20},
    })
    res = train(cfg, tmp_path / "run", progress=False, model=tiny_model(seed=5), tokenizer=tiny_tokenizer(),
                tasks=TASKS, backend=lookup_backend(), warmup_backend=lookup_backend())
    fit = [r for r in res.rows if r["phase"] == "sprm_fit"]
    assert len(fit) == 1 and fit[0]["trajectories"] == 24 and not fit[0]["skipped"]
    assert 0.0 < fit[0]["em"] < 1.0 and fit[0]["train_auroc"] > 0.9
    report = json.loads((tmp_path / "run" / "sprm_fit.json").read_text())
    assert report["best_epoch"] == fit[0]["best_epoch"] and report["questions"] == 6
    assert (tmp_path / "run" / "sprm_fit.png").exists()
    phases = [r["phase"] for r in res.rows]
    assert phases.index("sprm_fit") < phases.index("grpo")  # before the first GRPO step

    # all rollouts wrong (an untrained policy): the warm-up says so and GRPO goes on
    cfg.warmup.enabled = False
    res = train(cfg, tmp_path / "untrained", progress=False, model=tiny_model(seed=5), tokenizer=tiny_tokenizer(),
                tasks=TASKS, backend=lookup_backend(), warmup_backend=lookup_backend())
    fit = [r for r in res.rows if r["phase"] == "sprm_fit"]
    assert fit[0]["skipped"] and fit[0]["em"] == 0.0 and any(r["phase"] == "grpo" for r in res.rows)
