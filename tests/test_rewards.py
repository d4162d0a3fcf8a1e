import math

import pytest

from zerosearch_env.rewards import (
    brier_reward, exact_match, f1_score, format_reward, is_hedge, normalize_answer, parse_confidence,
)


def test_normalize_answer_squad_style():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("An apple, a pear") == "apple pear"
    assert normalize_answer("  A\tB\nC ") == "b c"  # "a" is an article
    assert normalize_answer("Ünïcode") == "ünïcode"


def test_exact_match_max_over_aliases():
    assert exact_match("the Ansel Quorrin", ["Ansel Quorrin"]) == 1.0
    assert exact_match("A. Quorrin", ["Ansel Quorrin", "A. Quorrin"]) == 1.0
    assert exact_match("Quorrin", ["Ansel Quorrin"]) == 0.0
    assert exact_match(None, ["x"]) == 0.0
    assert exact_match("", [""]) == 0.0


def test_f1_partial_and_max():
    assert f1_score("Ansel", ["Ansel Quorrin"]) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert f1_score("Ansel Quorrin", ["Bob", "Ansel Quorrin"]) == 1.0
    assert f1_score("nothing shared", ["Ansel Quorrin"]) == 0.0


@pytest.mark.parametrize("pred", ["Idra or Calvo", "Idra or Calvo or Sena", "Idra / Calvo", "Idra, Calvo", "Idra; Calvo"])
def test_hedges_never_match(pred):
    assert is_hedge(pred, ["Idra"])
    assert exact_match(pred, ["Idra"]) == 0.0
    assert f1_score(pred, ["Idra"]) == 0.0


def test_separator_in_gold_is_not_a_hedge():
    assert exact_match("Salt or Pepper", ["Salt or Pepper"]) == 1.0
    assert exact_match("Oberfell, Dunmarch", ["Oberfell, Dunmarch"]) == 1.0


def test_over_long_answers_score_zero_and_ratio_is_configurable():
    long = "Idra " + "which is a long river in the north of the land " * 3
    assert f1_score(long, ["Idra"]) == 0.0
    assert f1_score("the river Idra", ["Idra"], max_length_ratio=None) > 0.0
    assert f1_score("Idra river", ["Idra"]) > 0.0  # within the default allowance


def test_format_reward():
    assert format_reward(["<think>x</think><search>q</search>", "<answer>A</answer>"]) == 1.0
    assert format_reward(["<answer>A</answer><confidence>0.5</confidence>"]) == 1.0
    assert format_reward(["<search>q</search>"]) == 0.0  # never answered
    assert format_reward(["chatter <answer>A</answer>"]) == 0.0
    assert format_reward([]) == 0.0


def test_confidence_and_brier():
    assert parse_confidence("0.7") == 0.7
    assert parse_confidence(" 70% ") == pytest.approx(0.7)
    assert parse_confidence("high") is None and parse_confidence("1.5") is None and parse_confidence("nan") is None
    assert brier_reward(1, 1.0) == 1.0
    assert brier_reward(0, 0.0) == 0.0
    assert brier_reward(1, 0.7) == pytest.approx(1 - 0.09)
    assert brier_reward(0, 0.7) == pytest.approx(-0.49)
    assert brier_reward(True, "0.7") == pytest.approx(0.91)
    # unparseable is never better than any stated confidence
    for c in (0, 1):
        assert brier_reward(c, "garbage") <= min(brier_reward(c, q / 10) for q in range(11))
    assert math.isfinite(brier_reward(1, None))
