"""benchmarks/grpo_signal.py end to end on a tiny random model: groups per kind, shares, one JSON line."""

from __future__ import annotations

import json

import pytest

from tests.train_helpers import load_benchmark

pytestmark = pytest.mark.slow


def test_counts_one_group_per_question_by_kind(tiny_model_dir, capsys):
    rc = load_benchmark("grpo_signal").main([str(tiny_model_dir), "--per-kind", "1", "--group-size", "2",
                                             "--chunk", "3", "--temperatures", "1.0"])
    assert rc == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["questions"] == 3 and result["group_size"] == 2
    kinds = result["by_temperature"]["1.0"]["kinds"]
    assert set(kinds) == {"single", "bridge", "comparison", "all"}
    assert all(kinds[k]["groups"] == 1 for k in ("single", "bridge", "comparison"))
    assert kinds["all"]["groups"] == 3
    for row in kinds.values():
        assert 0.0 <= row["informative_share"] <= 1.0 and 0.0 <= row["any_right_share"] <= 1.0
        assert 0.0 <= row["mean_reward"] <= 1.0 and row["searches_per_episode"] >= 0.0
    per_kind = [kinds[k] for k in ("single", "bridge", "comparison")]
    assert kinds["all"]["mean_reward"] == pytest.approx(sum(r["mean_reward"] for r in per_kind) / 3)
    assert kinds["all"]["informative_share"] == pytest.approx(sum(r["informative_share"] for r in per_kind) / 3)
    assert "| all | 3 |" in out
