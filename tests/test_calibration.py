"""ECE, Brier score and AUROC against hand computations; the Brier reward and confidence parsing."""

import math

import pytest

from agents.calibration import (auroc, bin_index, brier_score, calibration_report, expected_calibration_error,
                                reliability_bins)
from zerosearch_env.rewards import brier_reward, parse_confidence


def test_ece_hand_computed():
    q = [0.05, 0.15, 0.15, 0.95, 1.0]
    c = [0, 1, 0, 1, 1]
    # bin 0: |0 - .05| * 1/5 ; bin 1: |.5 - .15| * 2/5 ; bin 9: |1 - .975| * 2/5
    assert expected_calibration_error(q, c) == pytest.approx(0.01 + 0.14 + 0.01)
    bins = reliability_bins(q, c)
    assert [b["count"] for b in bins] == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert bins[2]["accuracy"] is None


def test_ece_perfect_and_worst():
    assert expected_calibration_error([1.0, 1.0, 0.0], [1, 1, 0]) == pytest.approx(0.0)
    assert expected_calibration_error([1.0, 0.0], [0, 1]) == pytest.approx(1.0)
    assert expected_calibration_error([], []) is None


def test_bin_edges_are_left_closed():
    assert [bin_index(k / 10) for k in range(10)] == list(range(10))
    assert bin_index(1.0) == 9 and bin_index(0.0999) == 0


def test_brier_score_hand():
    assert brier_score([0.8, 0.3, 0.5], [1, 0, 1]) == pytest.approx((0.04 + 0.09 + 0.25) / 3)
    assert brier_score([], []) is None
    with pytest.raises(ValueError):
        brier_score([1.2], [1])
    with pytest.raises(ValueError):
        brier_score([0.5, 0.5], [1])


def test_auroc_with_ties_hand():
    # positives 0.9, 0.8, 0.1 ; negatives 0.8, 0.3 -> pairs: 1 + 1 + .5 + 1 + 0 + 0 = 3.5 of 6
    assert auroc([0.9, 0.8, 0.8, 0.3, 0.1], [1, 1, 0, 0, 1]) == pytest.approx(3.5 / 6)
    assert auroc([0.1, 0.2, 0.3], [0, 0, 1]) == pytest.approx(1.0)
    assert auroc([0.3, 0.2], [0, 1]) == pytest.approx(0.0)
    assert auroc([0.5] * 4, [0, 1, 0, 1]) == pytest.approx(0.5)


def test_auroc_undefined_for_one_class_and_rejects_bad_labels():
    assert auroc([0.1, 0.9], [1, 1]) is None
    assert auroc([0.1, 0.9], [0, 0]) is None
    with pytest.raises(ValueError):
        auroc([0.1, 0.9], [0.5, 1])
    with pytest.raises(ValueError):
        auroc([float("nan"), 0.9], [0, 1])


def test_report_counts_missing_confidences():
    r = calibration_report([0.9, None, 0.2, None], [1, 1, 0, 0])
    assert r["n"] == 4 and r["stated"] == 2 and r["missing"] == 2
    assert r["brier_stated"] == pytest.approx((0.01 + 0.04) / 2)
    assert r["brier"] == pytest.approx((0.01 + 0.04 + 1 + 1) / 4)
    assert r["auroc"] == pytest.approx(1.0)
    assert calibration_report([None], [1])["auroc"] is None


def test_brier_reward_values():
    assert brier_reward(1, 1.0) == pytest.approx(1.0)
    assert brier_reward(1, 0.7) == pytest.approx(1 - 0.09)
    assert brier_reward(0, 0.7) == pytest.approx(-0.49)
    assert brier_reward(0, 0.0) == pytest.approx(0.0)
    assert brier_reward(True, "80%") == pytest.approx(1 - 0.04)
    # missing / unparseable / out of range: worst claim, never better than stating any confidence
    for bad in (None, "very sure", "1.5", "nan", float("nan"), 2.0):
        for c in (0, 1):
            assert brier_reward(c, bad) == pytest.approx(c - 1.0)
            assert all(brier_reward(c, q / 10) >= brier_reward(c, bad) for q in range(11))


def test_brier_reward_is_proper():
    # expected reward under true probability p is maximised by reporting q = p
    for p in (0.2, 0.5, 0.9):
        exp = [p * brier_reward(1, q / 100) + (1 - p) * brier_reward(0, q / 100) for q in range(101)]
        assert max(range(101), key=lambda i: exp[i]) == round(p * 100)


def test_parse_confidence():
    assert parse_confidence(" .7 ") == pytest.approx(0.7)
    assert parse_confidence("70%") == pytest.approx(0.7)
    assert parse_confidence("1") == 1.0
    for bad in (None, "", "%", "high", "-0.1", "101%", "inf", "nan", "0.5 0.6"):
        assert parse_confidence(bad) is None, bad
    assert math.isfinite(brier_reward(1, parse_confidence("0.3")))
