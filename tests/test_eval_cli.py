"""`zerosearch eval` options of the main job: --paired-with (paired EM difference against an
earlier report on the same questions) and --max-invalid-streak."""

from __future__ import annotations

import json

import pytest

from agents.cli import main
from agents.evaluate import paired_em_difference


def _eval(tmp_path, name: str, *extra: str) -> dict:
    out = tmp_path / f"{name}.json"
    assert main(["eval", "--n", "12", "--no-progress", "--output", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_paired_with_reports_the_paired_difference(tmp_path, capsys):
    base = _eval(tmp_path, "random", "--agent", "random", "--records")
    oracle = _eval(tmp_path, "oracle", "--agent", "oracle", "--paired-with", str(tmp_path / "random.json"))
    pair = oracle["paired"]
    want = paired_em_difference(base["records"], oracle["records"])
    assert pair["n"] == 12 and pair["diff"] == pytest.approx(want["diff"]) and pair["se"] == pytest.approx(want["se"])
    assert pair["em_b"] == pytest.approx(oracle["summary"]["em"]) and pair["em_a"] == pytest.approx(base["summary"]["em"])
    assert pair["diff"] > 0.5 and pair["baseline_agent"] == "random"
    assert "paired with random on 12 questions" in capsys.readouterr().out


def test_paired_with_needs_records(tmp_path, capsys):
    _eval(tmp_path, "norecords", "--agent", "random")
    assert main(["eval", "--agent", "oracle", "--n", "4", "--no-progress",
                 "--paired-with", str(tmp_path / "norecords.json")]) == 2
    assert "--records" in capsys.readouterr().err
    assert main(["eval", "--agent", "oracle", "--n", "4", "--paired-with", str(tmp_path / "missing.json")]) == 2


def test_max_invalid_streak_caps_turns_of_a_model_that_never_acts(tmp_path):
    # the random agent with only malformed turns stands for a model that never writes a tag
    from agents.baselines import RandomAgent
    from agents.evaluate import run_episodes
    from zerosearch_env import EnvConfig
    from zerosearch_env.data import load_tasks
    from zerosearch_env.vector_env import make_vec

    tasks = load_tasks("world", split="test")[:6]
    agent = RandomAgent(seed=0, p_search=0.0, p_answer=0.0, p_malformed=1.0)
    for streak, turns in ((None, 4), (2, 2)):
        vec = make_vec(3, EnvConfig(split="test", max_turns=4, max_invalid_streak=streak), tasks=tasks)
        recs = run_episodes(agent, vec, tasks, progress=False)
        assert [r["turns"] for r in recs] == [turns] * 6 and all(r["truncated"] for r in recs)
    assert main(["eval", "--agent", "oracle", "--n", "2", "--max-invalid-streak", "0"]) == 2


def test_missing_split_of_a_file_is_a_clear_cli_error(tmp_path, capsys):
    data = tmp_path / "only_train.jsonl"
    data.write_text(json.dumps({"id": "a", "question": "Who?", "golden_answers": ["X"], "split": "train"}) + "\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"env:\n  dataset: {data}\n  backend: bm25\n")
    assert main(["eval", "--agent", "oracle", "--config", str(cfg), "--n", "1"]) == 2
    assert "no 'test' split" in capsys.readouterr().err
