"""Paired EM difference between two evaluations of the same questions (eval_matrix's test)."""

import math

import pytest

from agents.evaluate import paired_em_difference


def _recs(ems, ids=None):
    ids = ids if ids is not None else range(len(ems))
    return [{"task_id": f"q{i}", "em": e} for i, e in zip(ids, ems)]


def test_paired_difference_hand_built():
    a = _recs([1, 0, 0, 0, 1, 0])
    b = _recs([1, 1, 1, 0, 0, 1])
    out = paired_em_difference(a, b)
    assert out["n"] == 6 and out["b_only"] == 3 and out["a_only"] == 1
    assert out["em_a"] == pytest.approx(2 / 6) and out["em_b"] == pytest.approx(4 / 6)
    assert out["diff"] == pytest.approx(2 / 6)
    d = [0, 1, 1, 0, -1, 1]
    mean = sum(d) / 6
    assert out["se"] == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in d) / 5 / 6))
    # exact McNemar: 4 discordant pairs, 1 against: 2 * P(X <= 1), X ~ Bin(4, 1/2) = 2 * 5/16
    assert out["p_mcnemar"] == pytest.approx(10 / 16)


def test_paired_matches_by_task_id_and_ignores_unshared():
    a = _recs([1, 0, 1], ids=[0, 1, 2])
    b = _recs([0, 1, 1], ids=[2, 1, 7])  # q2: 1 -> 0, q1: 0 -> 1; q0 and q7 unshared
    out = paired_em_difference(a, b)
    assert out["n"] == 2 and out["b_only"] == 1 and out["a_only"] == 1 and out["diff"] == 0.0
    assert out["p_mcnemar"] == 1.0


def test_paired_strong_effect_is_significant_and_identical_is_not():
    a = _recs([0] * 40)
    b = _recs([1] * 20 + [0] * 20)
    assert paired_em_difference(a, b)["p_mcnemar"] < 1e-5
    same = paired_em_difference(a, a)
    assert same["diff"] == 0.0 and same["p_mcnemar"] == 1.0


def test_paired_no_shared_question_is_an_error():
    with pytest.raises(ValueError, match="share no task_id"):
        paired_em_difference(_recs([1], ids=[0]), _recs([1], ids=[1]))
