"""Calibration metrics of stated confidences against correctness: ECE, Brier score, AUROC.

All functions take plain sequences (confidence q in [0, 1], correctness in [0, 1]) of the same
length. A confidence of None (absent or unparseable `<confidence>`) is never silently dropped:
`calibration_report` counts it under `missing` and, by default, scores it as the worst claim
(confidence opposite to the outcome) in the Brier score, exactly like `brier_reward` does.

* `expected_calibration_error`: 10 equal-width bins on [0, 1]; bin b holds q in [b/10, (b+1)/10)
  and the last bin also holds q = 1. ECE = sum_b (n_b / N) * |mean correctness_b - mean q_b|.
* `brier_score`: mean of (q - correct) ** 2 (lower is better; 0.25 for always saying 0.5).
* `auroc`: the probability that a random correct example has a higher confidence than a random
  wrong one, ties counting one half (Mann-Whitney U / (n_pos * n_neg)). It is undefined when only
  one class is present: the function then returns None (JSON null), never a made-up 0.5.
"""

from __future__ import annotations

import math
from typing import Sequence

NUM_BINS = 10


def _check(confidences: Sequence[float], correct: Sequence[float]) -> tuple[list[float], list[float]]:
    q = [float(x) for x in confidences]
    c = [float(x) for x in correct]
    if len(q) != len(c):
        raise ValueError(f"{len(q)} confidences but {len(c)} correctness values")
    for x in q:
        if not math.isfinite(x) or not 0.0 <= x <= 1.0:
            raise ValueError(f"confidence {x!r} is not in [0, 1]")
    for x in c:
        if not math.isfinite(x) or not 0.0 <= x <= 1.0:
            raise ValueError(f"correctness {x!r} is not in [0, 1]")
    return q, c


def bin_index(q: float, num_bins: int = NUM_BINS) -> int:
    """Equal-width bin of a confidence; q = 1 falls in the last bin."""
    return min(int(q * num_bins), num_bins - 1)


def reliability_bins(confidences: Sequence[float], correct: Sequence[float],
                     num_bins: int = NUM_BINS) -> list[dict]:
    """Per bin: `lo`, `hi`, `count`, `confidence` (mean q) and `accuracy` (mean correctness);
    the means are None for an empty bin."""
    q, c = _check(confidences, correct)
    sums = [[0, 0.0, 0.0] for _ in range(num_bins)]
    for qi, ci in zip(q, c):
        b = sums[bin_index(qi, num_bins)]
        b[0] += 1
        b[1] += qi
        b[2] += ci
    out = []
    for i, (n, sq, sc) in enumerate(sums):
        out.append({"lo": i / num_bins, "hi": (i + 1) / num_bins, "count": n,
                    "confidence": sq / n if n else None, "accuracy": sc / n if n else None})
    return out


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[float],
                               num_bins: int = NUM_BINS) -> float | None:
    """ECE over `num_bins` equal-width bins; None for an empty input."""
    bins = reliability_bins(confidences, correct, num_bins)
    total = sum(b["count"] for b in bins)
    if total == 0:
        return None
    return sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])


def brier_score(confidences: Sequence[float], correct: Sequence[float]) -> float | None:
    """Mean squared error of the confidence against correctness; None for an empty input."""
    q, c = _check(confidences, correct)
    if not q:
        return None
    return sum((qi - ci) ** 2 for qi, ci in zip(q, c)) / len(q)


def auroc(scores: Sequence[float], labels: Sequence[float | bool]) -> float | None:
    """Area under the ROC curve of `scores` for binary `labels` (1 = correct), ties counted as 1/2.

    `scores` may be any finite reals (confidences, SPRM trajectory scores). Returns None when
    the labels hold only one class (AUROC is undefined then). Labels must be 0 or 1.
    """
    s = [float(x) for x in scores]
    y = [float(x) for x in labels]
    if len(s) != len(y):
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    if any(v not in (0.0, 1.0) for v in y):
        raise ValueError("AUROC labels must be 0 or 1 (threshold F1 or rewards first)")
    if any(not math.isfinite(v) for v in s):
        raise ValueError("AUROC scores must be finite")
    n_pos = sum(1 for v in y if v == 1.0)
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    # Rank-sum with average ranks for ties: O(n log n).
    order = sorted(range(len(s)), key=lambda i: s[i])
    ranks = [0.0] * len(s)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and s[order[j + 1]] == s[order[i]]:
            j += 1
        avg = (i + j) / 2.0 + 1.0  # 1-based average rank of the tie block
        for k in range(i, j + 1):
            ranks[order[k]] = avg
        i = j + 1
    rank_sum_pos = sum(r for r, v in zip(ranks, y) if v == 1.0)
    u = rank_sum_pos - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def calibration_report(confidences: Sequence[float | None], correct: Sequence[float],
                       num_bins: int = NUM_BINS, missing_as_worst: bool = True) -> dict:
    """ECE, Brier score and AUROC of stated confidences against correctness, as a JSON-ready dict.

    `correct` is 0/1 (exact match) or a score in [0, 1]; AUROC thresholds it at 0.5. Entries whose
    confidence is None are counted in `missing`; ECE and AUROC use the stated ones only, and the
    Brier score (`brier`) scores a missing one as the worst claim (squared error max(c, 1 - c) ** 2, i.e. 1 for
    0/1 correctness) when
    `missing_as_worst` (the same rule as `brier_reward`) and skips it otherwise. `brier_stated`
    is the Brier score over stated confidences only.
    """
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences but {len(correct)} correctness values")
    stated = [(float(q), float(c)) for q, c in zip(confidences, correct) if q is not None]
    missing = len(confidences) - len(stated)
    qs = [q for q, _ in stated]
    cs = [c for _, c in stated]
    brier_stated = brier_score(qs, cs)
    if missing_as_worst and missing:
        worst = [max(float(c), 1.0 - float(c)) ** 2 for q, c in zip(confidences, correct) if q is None]
        brier = ((brier_stated or 0.0) * len(stated) + sum(worst)) / len(confidences)
    else:
        brier = brier_stated
    return {
        "n": len(confidences),
        "stated": len(stated),
        "missing": missing,
        "ece": expected_calibration_error(qs, cs, num_bins),
        "brier": brier,
        "brier_stated": brier_stated,
        "auroc": auroc(qs, [1.0 if c >= 0.5 else 0.0 for c in cs]) if stated else None,
        "mean_confidence": sum(qs) / len(qs) if qs else None,
        "accuracy": sum(cs) / len(cs) if cs else None,
        "bins": reliability_bins(qs, cs, num_bins),
    }


# ----------------------------------------------------------------------------- rollouts and agents
CONFIDENCE_OPEN = "<confidence>"
CONFIDENCE_CLOSE = "</confidence>"


def add_confidence(policy, trajs: Sequence, generator=None, max_new_tokens: int = 8,
                   greedy: bool = False) -> dict[str, float]:
    """Training rollouts in calibration mode: after each answered trajectory the policy writes
    `<confidence>q</confidence>` (the opening tag is given, the rest is sampled and trained).

    Generation stops at `</answer>` (the protocol's stop strings), so the confidence is a short
    continuation right after it, as `EnvConfig(calibration=True)` asks. The parsed confidence (None
    when unparseable, read by `brier_reward_fn`) and `brier_reward(r, q)` against
    `confidence_target` go to `traj.info` (`confidence`, `brier`). Returns batch figures.
    """
    from agents.pcl import append_segments
    from zerosearch_env.rewards import brier_reward, parse_confidence

    answered = [t for t in trajs if (t.info or {}).get("answered")]
    if not answered:
        return {"confidence_segments": 0.0, "confidence_parse_rate": 0.0}
    starts = [len(t.completion_ids) for t in answered]
    texts = append_segments(policy, answered, CONFIDENCE_OPEN, CONFIDENCE_CLOSE, generator, max_new_tokens,
                            greedy=greedy)
    parsed = 0
    for t, start, text in zip(answered, starts, texts):
        inner = text[len(CONFIDENCE_OPEN):].split(CONFIDENCE_CLOSE)[0] if CONFIDENCE_CLOSE in text else None
        q = parse_confidence(inner)
        t.info.setdefault("post_answer_start", start)
        t.info.update({"confidence": q, "confidence_text": text,
                       "brier": brier_reward(confidence_target(t), q)})
        parsed += q is not None
    return {"confidence_segments": float(len(answered)), "confidence_parse_rate": parsed / len(answered)}


def confidence_target(traj) -> float:
    """The correctness a stated confidence is scored against: the trajectory's own environment
    reward (`traj.reward`: EM with `reward: em`, token F1 with `reward: f1`). The Brier term and
    the outcome term share it, so their sum `r - (q - r) ** 2` is a proper scoring rule: its
    expected value is highest at q = the expected reward (the probability of an exact match
    under `reward: em`)."""
    r = float(traj.reward)
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"the Brier term needs an environment reward in [0, 1], got {r}")
    return r


def brier_reward_fn(trajs: Sequence) -> list[float]:
    """GRPO `reward_fns` plug-in: RLCR's calibration term `-(q - r) ** 2` of each answered
    trajectory, with r = `confidence_target(traj)` (the env reward itself), so that env reward +
    this = `brier_reward(r, q)` = `r - (q - r) ** 2` for EM and F1 rewards alike. A missing
    confidence gets -1 (worse than any stated one); trajectories that did not answer get 0."""
    from zerosearch_env.rewards import brier_reward

    out = []
    for t in trajs:
        if not (t.info or {}).get("answered"):
            out.append(0.0)
            continue
        r = confidence_target(t)
        out.append(brier_reward(r, t.info.get("confidence")) - r)
    return out


class ConfidenceAgent:
    """Evaluation in calibration mode: wraps a `PolicyAgent`; when a turn ends with `</answer>`,
    the policy continues with `<confidence>` and writes q until `</confidence>` (at most
    `max_new_tokens` tokens), and the turn text sent to the env holds both, so the env's
    `info["confidence"]` is filled. Greedy like the wrapped agent."""

    name = "policy+confidence"

    def __init__(self, agent, max_new_tokens: int = 8):
        self.agent = agent
        self.max_new_tokens = max_new_tokens
        self.name = f"{getattr(agent, 'name', 'agent')}+confidence"

    def reset(self) -> None:
        if hasattr(self.agent, "reset"):
            self.agent.reset()

    def act(self, transcripts: Sequence[str], infos: Sequence[dict]) -> list[str]:
        from agents.pcl import opener_rest, segment_policy
        from zerosearch_env.protocol import parse_action

        turns = self.agent.act(transcripts, infos)
        policy = self.agent.policy
        todo = [i for i, t in enumerate(turns) if parse_action(t).kind == "answer"
                and opener_rest(t, CONFIDENCE_OPEN) != ""]
        if not todo:
            return turns
        seg = segment_policy(policy, (CONFIDENCE_CLOSE,), self.max_new_tokens)
        contexts, rests = [], []
        for i in todo:
            key = str((infos[i] or {}).get("episode_id") or "")
            ids = self.agent._state.get(key, (None, 0))[0] if hasattr(self.agent, "_state") else None
            if ids is None:
                ids = policy.prompt_ids(transcripts[i]) + policy.encode(turns[i])
            rest = opener_rest(turns[i], CONFIDENCE_OPEN)
            rests.append(rest)
            contexts.append(list(ids) + policy.encode(rest))
        outs = seg.generate_turns(contexts, greedy=getattr(self.agent, "greedy", True),
                                  generator=getattr(self.agent, "generator", None))
        turns = list(turns)
        for i, rest, out in zip(todo, rests, outs):
            turns[i] = turns[i] + rest + out.text
        return turns
