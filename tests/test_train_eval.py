"""`eval_tasks`: a held-out evaluation of the trained policy at the end of training, written next to
train_summary.json, the same evaluation `zerosearch eval` runs on the saved checkpoint."""

from __future__ import annotations

import json

from tests.train_helpers import write_cli_config


def test_train_evaluates_eval_tasks_held_out_questions_at_the_end(tmp_path):
    from agents.cli import main

    path = write_cli_config(tmp_path, eval_tasks=4)
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--output", str(out), "--no-progress"]) == 0
    assert (out / "train_summary.json").exists()
    held = json.loads((out / "eval_heldout.json").read_text())
    assert held["split"] == "test" and held["backend"] == "bm25" and held["n"] == 4
    assert set(held["summary"]) >= {"em", "f1", "format_compliance", "searches_per_episode", "invalid_rate"}
    from agents.train_config import TrainConfig
    from zerosearch_env.data import load_tasks

    env = TrainConfig.load(path).env
    test_ids = {t.id for t in load_tasks(env.dataset, split="test", world_seed=env.world_seed)}
    assert {r["task_id"] for r in held["records"]} <= test_ids  # held out: test questions only

    # the same questions and the same greedy answers as `zerosearch eval` on the saved checkpoint
    report = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(out), "--config", str(path), "--backend", "bm25", "--n", "4",
                 "--seed", "0", "--records", "--output", str(report), "--no-progress"]) == 0
    cli = json.loads(report.read_text())
    assert [r["task_id"] for r in held["records"]] == [r["task_id"] for r in cli["records"]]
    assert [r["agent_turns"] for r in held["records"]] == [r["agent_turns"] for r in cli["records"]]
    for key in ("em", "f1", "format_compliance", "searches_per_episode", "invalid_rate"):
        assert held["summary"][key] == cli["summary"][key], key
    # the held-out figures are a metrics row too (and so reach the report_to trackers)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["phase"] == "heldout_eval" and rows[-1]["em"] == held["summary"]["em"] and rows[-1]["n"] == 4
