"""Collapse monitors: categories, shares, normalised entropy, unique answers, the warning, the plot."""

import logging
import math

import pytest

from agents.monitors import (CollapseMonitor, TrajectorySummary, answer_length_bucket, collapse_metrics,
                             normalized_entropy, plot_monitor_curves, query_style, unique_answer_ratio)

Q = "Who founded the Velmora Guild?"


def test_categories():
    assert query_style(Q, "who founded the Velmora guild") == "copied"
    assert query_style(Q, "Velmora Guild founder") == "reformulated"
    assert query_style(Q, None) == "none" and query_style(Q, "  ?? ") == "none"
    assert answer_length_bucket(None) == "none" and answer_length_bucket("The Idra") == "1-2"
    assert answer_length_bucket("a b c d") == "3-5" and answer_length_bucket("one two three four five six") == "6+"


def test_normalized_entropy_hand():
    assert normalized_entropy([5, 0, 0, 0], 4) == 0.0
    assert normalized_entropy([1, 1, 1, 1], 4) == pytest.approx(1.0)
    assert normalized_entropy([1, 1, 0, 0], 4) == pytest.approx(math.log(2) / math.log(4))
    assert normalized_entropy({}, None) == 0.0


def test_collapse_metrics_shares_and_unique_answers():
    trajs = [
        TrajectorySummary(Q, ["who founded the velmora guild"], "Ansel Quorrin", group=0),
        TrajectorySummary(Q, ["Velmora founder", "Ansel Quorrin"], "ansel quorrin", group=0),
        TrajectorySummary(Q, [], "Tarsk", group=1),
        TrajectorySummary(Q, ["x", "y", "z", "w"], None, group=1),
    ]
    m = collapse_metrics(trajs)
    assert m["share/search_count/0"] == 0.25 and m["share/search_count/3+"] == 0.25
    assert m["share/query_style/copied"] == 0.25 and m["share/query_style/reformulated"] == 0.5
    assert m["share/answer_length/1-2"] == 0.75 and m["share/answer_length/none"] == 0.25
    assert m["entropy/search_count"] == pytest.approx(normalized_entropy([1, 1, 1, 1], 4))
    # group 0: one distinct answer of two (normalised), group 1: two of two
    assert m["unique_answers"] == pytest.approx((0.5 + 1.0) / 2)
    assert unique_answer_ratio([TrajectorySummary(Q, [], "a"), TrajectorySummary(Q, [], "a")]) == 1.0
    with pytest.raises(ValueError):
        collapse_metrics([])


def _step_trajs(diverse: bool, reward: float):
    if diverse:
        return [TrajectorySummary(Q, ["q"] * k, "ans " * (k + 1), group=0, reward=reward) for k in range(4)]
    return [TrajectorySummary(Q, ["Velmora founder"], "Ansel", group=0, reward=reward) for _ in range(4)]


def test_warning_when_entropy_falls_while_reward_rises(caplog):
    mon = CollapseMonitor(window=4)
    flags = []
    with caplog.at_level(logging.WARNING, logger="agents.monitors"):
        for step in range(8):
            out = mon.update(step, _step_trajs(diverse=step < 4, reward=0.1 * step))
            flags.append(out["collapse_warning"])
    assert flags[:3] == [0, 0, 0] and any(flags[4:])
    assert "possible collapse" in caplog.text
    assert mon.warnings and out["entropy_slope"] <= 0 and out["reward_slope"] > 0


def test_no_warning_when_reward_flat_or_entropy_steady():
    flat = CollapseMonitor(window=4)
    steady = CollapseMonitor(window=4)
    for step in range(8):
        assert flat.update(step, _step_trajs(step < 4, reward=0.5))["collapse_warning"] == 0
        assert steady.update(step, _step_trajs(True, reward=0.1 * step))["collapse_warning"] == 0
    restored = CollapseMonitor(window=4)
    restored.load_state_dict(steady.state_dict())
    assert restored.history == steady.history


def test_plot_monitor_curves(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mon = CollapseMonitor(window=2)
    rows = [{"step": s, **mon.update(s, _step_trajs(s < 2, 0.2 * s))} for s in range(4)]
    fig, (a, b) = plt.subplots(1, 2)
    assert plot_monitor_curves(a, rows) is True
    assert plot_monitor_curves(b, [{"step": 0, "reward": 1.0}]) is False
    fig.savefig(tmp_path / "c.png")
    plt.close(fig)
    assert (tmp_path / "c.png").stat().st_size > 0
