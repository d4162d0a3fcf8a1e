"""`report_to`: every metrics.jsonl row reaches TensorBoard (read back from the event file) and
W&B (offline, where installed) with the same values."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from agents.train_config import TrainConfig
from agents.trainer import train
from tests.train_helpers import TASKS, lookup_backend, tiny_model, tiny_tokenizer


def _cfg(**over) -> TrainConfig:
    base = {
        "preset": "tiny", "seed": 5, "trainable_layers": 1, "precision": "fp32", "checkpoint_every": 1,
        "env": {"backend": "simulator", "max_turns": 2, "top_k": 1, "max_doc_chars": 120},
        "warmup": {"num_tasks": 4, "batch_size": 2, "epochs": 1, "micro_batch_size": 2},
        "grpo": {"steps": 2, "prompts_per_step": 1, "group_size": 2, "max_new_tokens": 6, "micro_batch_size": 2},
        "report_to": ["tensorboard"],
    }
    return TrainConfig.model_validate({**base, **over})


def _run(cfg, out, max_steps=None, resume=False):
    return train(cfg, out, max_steps=max_steps, resume=resume, progress=False, model=tiny_model(seed=4),
                 tokenizer=tiny_tokenizer(), tasks=TASKS, backend=lookup_backend(), warmup_backend=lookup_backend())


def _tensorboard_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _expected(rows) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        for k, v in r.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                out.setdefault(f"{r['phase']}/{k}", []).append((r["step"], float(v)))
    return out


def _assert_same(got, want):
    assert sorted(got) == sorted(want)
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6, abs=1e-6), tag


def test_tensorboard_events_hold_every_metrics_row(tmp_path):
    out = tmp_path / "run"
    _run(_cfg(), out)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["warmup", "warmup", "grpo", "grpo"]
    got = _tensorboard_scalars(out / "tensorboard")
    assert {"warmup/loss", "grpo/reward", "grpo/em", "grpo/noise_probability", "grpo/loss"} <= set(got)
    _assert_same(got, _expected(rows))


def test_trl_trainer_rows_reach_tensorboard_too(tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(warmup={"enabled": False}, grpo={**_cfg().grpo.model_dump(), "trainer": "trl"})
    _run(cfg, out)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r.get("trainer")) for r in rows] == [("grpo", "trl")] * 2
    got = _tensorboard_scalars(out / "tensorboard")
    assert {"grpo/loss", "grpo/noise_probability"} <= set(got)
    _assert_same(got, _expected(rows))
    assert not list((out / "trl").rglob("events.out.tfevents.*"))  # TRL's own report_to stays off: no second copy


def test_a_resumed_run_replaces_the_events_of_the_steps_it_recomputes(tmp_path):
    """A run interrupted after logging a step but before checkpointing it: the resumed run logs that
    step again, and TensorBoard keeps only the new events (one point per step)."""
    out = tmp_path / "run"
    cfg = _cfg(grpo={**_cfg().grpo.model_dump(), "steps": 3})
    _run(cfg, out, max_steps=1)
    shutil.copytree(out / "checkpoint", tmp_path / "ckpt_at_1")
    _run(cfg, out, max_steps=2, resume=True)  # logs grpo step 1, checkpoints it ...
    shutil.rmtree(out / "checkpoint")  # ... which the "crash" loses
    shutil.copytree(tmp_path / "ckpt_at_1", out / "checkpoint")
    _run(cfg, out, max_steps=3, resume=True)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("grpo_step") for r in rows if r["phase"] == "grpo"] == [0, 1, 2]
    _assert_same(_tensorboard_scalars(out / "tensorboard"), _expected(rows))


def test_unknown_tracker_is_rejected():
    with pytest.raises(ValueError, match="report_to"):
        _cfg(report_to=["mlflow"])


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_missing_names_the_package(tmp_path):
    from agents.reporting import MetricsLogger

    with pytest.raises(ImportError, match="pip install wandb"):
        MetricsLogger(tmp_path, ["wandb"])


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed (optional tracker)")
def test_wandb_offline_run_gets_every_row(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    import wandb

    logged: list[tuple[dict, int]] = []
    real_log = wandb.sdk.wandb_run.Run.log

    def spy(self, data, step=None, **kw):
        logged.append((dict(data), step))
        return real_log(self, data, step=step, **kw)

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", spy)
    out = tmp_path / "run"
    _run(_cfg(report_to=["wandb"]), out)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    want = _expected(rows)
    got: dict[str, list[tuple[int, float]]] = {}
    for data, step in logged:
        for tag, v in data.items():
            got.setdefault(tag, []).append((step, v))
    _assert_same(got, want)
    assert list((out / "wandb").glob("offline-run-*"))  # written offline, under the run folder
