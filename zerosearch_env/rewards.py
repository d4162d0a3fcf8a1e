"""Answer scoring: SQuAD-style normalisation, exact match, token F1, format and calibration rewards.

Scores are the max over gold aliases. A hedged answer that lists several candidates ("A or B or
C") and an answer far longer than every gold alias score zero: an agent must commit to one answer.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from typing import Iterable, Sequence

_PUNCT = set(string.punctuation) | {"\u2018", "\u2019", "\u201c", "\u201d", "\u2013", "\u2014"}
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# Separators that make an answer a list of candidates, unless the gold itself contains them.
_HEDGE_SEPARATORS = (" or ", " and/or ", "/", ";", ",", "|", " vs ", " either ")

DEFAULT_MAX_LENGTH_RATIO = 3.0


_DROP_PUNCT = str.maketrans("", "", "".join(_PUNCT))


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, fold white space."""
    text = str(text)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    text = text.lower().translate(_DROP_PUNCT)
    if "a" in text or "t" in text:
        text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _as_list(golds: str | Iterable[str]) -> list[str]:
    return [golds] if isinstance(golds, str) else [g for g in golds if isinstance(g, str)]


def is_hedge(prediction: str, golds: str | Sequence[str]) -> bool:
    """True when the prediction lists several candidates with a separator no gold alias uses."""
    pred = " " + unicodedata.normalize("NFKC", str(prediction)).lower() + " "
    gold_text = " ".join(" " + g.lower() + " " for g in _as_list(golds))
    for sep in _HEDGE_SEPARATORS:
        if sep in pred and sep not in gold_text:
            pieces = [p for p in pred.split(sep) if normalize_answer(p)]
            if len(pieces) >= 2 or sep == " either ":
                return True
    return False


def score_answer(prediction: str | None, golds: str | Sequence[str],
                 max_length_ratio: float | None = DEFAULT_MAX_LENGTH_RATIO) -> tuple[float, float]:
    """(exact match, token F1) of a prediction against the best gold alias, sharing one
    normalisation. Hedges score (0, 0); over-long answers get F1 0 (they cannot match exactly)."""
    golds = _as_list(golds)
    if prediction is None or not golds or is_hedge(prediction, golds):
        return 0.0, 0.0
    pred = normalize_answer(prediction)
    if not pred:
        return 0.0, 0.0
    gold_norms = [normalize_answer(g) for g in golds]
    if pred in gold_norms:
        return 1.0, 1.0
    pred_tokens = pred.split()
    if max_length_ratio is not None:
        longest = max(len(g.split()) for g in gold_norms)
        if len(pred_tokens) > max(max_length_ratio * longest, longest + 2):
            return 0.0, 0.0
    pred_counts = Counter(pred_tokens)
    best = 0.0
    for g in gold_norms:
        gold_tokens = g.split()
        same = sum((pred_counts & Counter(gold_tokens)).values())
        if same:
            precision, recall = same / len(pred_tokens), same / len(gold_tokens)
            best = max(best, 2 * precision * recall / (precision + recall))
    return 0.0, best


def exact_match(prediction: str | None, golds: str | Sequence[str],
                max_length_ratio: float | None = DEFAULT_MAX_LENGTH_RATIO) -> float:
    """1.0 when the normalised prediction equals a normalised gold alias, else 0.0."""
    return score_answer(prediction, golds, max_length_ratio)[0]


def f1_score(prediction: str | None, golds: str | Sequence[str],
             max_length_ratio: float | None = DEFAULT_MAX_LENGTH_RATIO) -> float:
    """Token-level F1 against the best gold alias; 0 for hedges and over-long answers."""
    return score_answer(prediction, golds, max_length_ratio)[1]


_WELL_FORMED = re.compile(
    r"^\s*(<think>.*?</think>\s*)?(<search>[^<>]+</search>|<answer>[^<>]+</answer>)\s*$", re.DOTALL
)


_INLINE_CONFIDENCE = re.compile(r"\s*<confidence>[^<>]*</confidence>\s*$")
_ANSWER_THEN_OPENER = re.compile(r"(</answer>\s*)<$")


def format_reward(agent_turns: Sequence[str]) -> float:
    """1.0 when the agent's turns up to its answer are each one well-formed action (optional
    <think> then one tag) and one of them answers; 0.0 otherwise.

    Takes the agent's own turns, never environment text. The episode ends at the answer, so
    whatever agent text follows the answering turn is a post-answer segment written in training
    (the confidence or PCL self-score, which have their own rewards) and is not scored here. An
    answering turn may carry its `<confidence>` inline (evaluation in calibration mode), or end in
    the "<" that opens that segment (a "><" token, as SmolLM2's vocabulary has).
    """
    for t in agent_turns:
        t = _ANSWER_THEN_OPENER.sub(r"\1", _INLINE_CONFIDENCE.sub("", t))
        if not _WELL_FORMED.match(t):
            return 0.0
        if "<answer>" in t:
            return 1.0
    return 0.0


def parse_confidence(text: str | None) -> float | None:
    """A confidence in [0, 1] from '0.7', '70%' or ' .7 '; None when absent or unparseable."""
    if text is None:
        return None
    t = text.strip().rstrip("%").strip()
    try:
        q = float(t)
    except ValueError:
        return None
    if text.strip().endswith("%"):
        q /= 100.0
    if not math.isfinite(q) or q < 0.0 or q > 1.0:
        return None
    return q


def brier_reward(correct: float | bool, confidence: float | str | None) -> float:
    """RLCR's calibration reward `correct - (confidence - correct) ** 2`.

    A missing or unparseable confidence is scored as the worst confident claim (the confidence
    opposite to the outcome), so omitting it can never beat stating it: `correct - 1`.
    """
    c = float(correct)
    q = parse_confidence(confidence) if isinstance(confidence, str) or confidence is None else float(confidence)
    if q is None or not math.isfinite(q) or not 0.0 <= q <= 1.0:
        return c - 1.0
    return c - (q - c) ** 2
