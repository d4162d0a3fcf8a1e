"""Collapse monitors: is RL narrowing the policy onto one behaviour?

Per training step, over that step's trajectories:

* `search_count` share: how many searches each trajectory made (0, 1, 2, 3+);
* `query_style` share: whether the first query copies the question ("copied": the query's
  normalised tokens are almost all question tokens and cover most of the question), reformulates
  it ("reformulated"), or there is no query ("none");
* `answer_length` share: none / 1-2 / 3-5 / 6+ normalised tokens;
* the *normalised entropy* of each share (entropy / log(number of categories), in [0, 1]; 0 = one
  behaviour only);
* `unique_answers`: mean over prompt groups of (distinct normalised answers / group size).

`CollapseMonitor` keeps these per step and raises a warning (logged, and `collapse_warning = 1`
in the step's metrics) when, over the last `window` steps, the mean normalised entropy falls while
the reward rises (least-squares slopes beyond the thresholds).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from zerosearch_env.rewards import normalize_answer

log = logging.getLogger(__name__)

CATEGORIES: dict[str, tuple[str, ...]] = {
    "search_count": ("0", "1", "2", "3+"),
    "query_style": ("none", "copied", "reformulated"),
    "answer_length": ("none", "1-2", "3-5", "6+"),
}
COPY_THRESHOLD = 0.8


@dataclass(slots=True)
class TrajectorySummary:
    """What the monitors need from one trajectory."""

    question: str
    queries: list[str] = field(default_factory=list)
    answer: str | None = None
    group: str | int | None = None  # trajectories sampled from the same prompt share a group
    reward: float | None = None


def search_count_bucket(n: int) -> str:
    return str(n) if n < 3 else "3+"


def query_style(question: str, query: str | None, threshold: float = COPY_THRESHOLD) -> str:
    """'none', 'copied' (>= threshold of the query's tokens are question tokens AND the query
    covers >= threshold of the question's tokens) or 'reformulated'."""
    if not query or not normalize_answer(query):
        return "none"
    q = normalize_answer(query).split()
    ques = normalize_answer(question).split()
    if not ques:
        return "reformulated"
    qs, ques_set = set(q), set(ques)
    precision = sum(1 for t in q if t in ques_set) / len(q)
    coverage = sum(1 for t in ques_set if t in qs) / len(ques_set)
    return "copied" if precision >= threshold and coverage >= threshold else "reformulated"


def answer_length_bucket(answer: str | None) -> str:
    if answer is None:
        return "none"
    n = len(normalize_answer(answer).split())
    if n == 0:
        return "none"
    return "1-2" if n <= 2 else "3-5" if n <= 5 else "6+"


def normalized_entropy(counts: Mapping[str, int] | Sequence[int], num_categories: int | None = None) -> float:
    """Shannon entropy of the counts divided by log(num_categories) (default: len(counts)); 0 when
    there is at most one category or no data."""
    values = list(counts.values()) if isinstance(counts, Mapping) else list(counts)
    k = num_categories if num_categories is not None else len(values)
    total = sum(values)
    if k <= 1 or total <= 0:
        return 0.0
    h = -sum(v / total * math.log(v / total) for v in values if v > 0)
    return h / math.log(k)


def collapse_metrics(trajectories: Sequence[TrajectorySummary]) -> dict[str, float]:
    """Shares, normalised entropies and unique-answer ratio of one step's trajectories.

    Keys: `share/<kind>/<category>`, `entropy/<kind>`, `entropy_mean`, `unique_answers`.
    """
    if not trajectories:
        raise ValueError("collapse_metrics needs at least one trajectory")
    labels = {
        "search_count": [search_count_bucket(len(t.queries)) for t in trajectories],
        "query_style": [query_style(t.question, t.queries[0] if t.queries else None) for t in trajectories],
        "answer_length": [answer_length_bucket(t.answer) for t in trajectories],
    }
    out: dict[str, float] = {}
    entropies = []
    for kind, cats in CATEGORIES.items():
        counts = Counter(labels[kind])
        n = len(trajectories)
        for c in cats:
            out[f"share/{kind}/{c}"] = counts.get(c, 0) / n
        out[f"entropy/{kind}"] = normalized_entropy([counts.get(c, 0) for c in cats], len(cats))
        entropies.append(out[f"entropy/{kind}"])
    out["entropy_mean"] = sum(entropies) / len(entropies)
    out["unique_answers"] = unique_answer_ratio(trajectories)
    return out


def unique_answer_ratio(trajectories: Iterable[TrajectorySummary]) -> float:
    """Mean over groups of distinct normalised answers / group size (a missing answer counts as
    one distinct value ""). Trajectories with group None each form their own group."""
    groups: dict = {}
    for i, t in enumerate(trajectories):
        key = ("solo", i) if t.group is None else ("g", t.group)
        groups.setdefault(key, []).append(normalize_answer(t.answer) if t.answer is not None else "")
    if not groups:
        return 0.0
    return sum(len(set(a)) / len(a) for a in groups.values()) / len(groups)


def _slope(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    xm = (n - 1) / 2.0
    ym = sum(values) / n
    num = sum((i - xm) * (v - ym) for i, v in enumerate(values))
    den = sum((i - xm) ** 2 for i in range(n))
    return num / den


class CollapseMonitor:
    """Per-step collapse metrics plus the 'entropy falls while reward rises' warning.

    `update(step, trajectories, reward)` returns the step's metrics with `collapse_warning` (0/1),
    `entropy_slope` and `reward_slope` (per step, least squares over the last `window` steps; 0
    until `window` steps are in).
    """

    def __init__(self, window: int = 8, entropy_drop: float = 0.01, reward_rise: float = 0.005):
        if window < 2:
            raise ValueError("window must be >= 2")
        self.window = window
        self.entropy_drop = entropy_drop
        self.reward_rise = reward_rise
        self.history: list[dict] = []
        self.warnings: list[int] = []

    def update(self, step: int, trajectories: Sequence[TrajectorySummary], reward: float | None = None) -> dict:
        m = collapse_metrics(trajectories)
        if reward is None:
            rs = [t.reward for t in trajectories if t.reward is not None]
            reward = sum(rs) / len(rs) if rs else float("nan")
        m["reward"] = float(reward)
        self.history.append({"step": int(step), **m})
        ent = [h["entropy_mean"] for h in self.history[-self.window:]]
        rew = [h["reward"] for h in self.history[-self.window:]]
        e_slope = r_slope = 0.0
        warn = 0
        if len(ent) >= self.window and all(math.isfinite(r) for r in rew):
            e_slope, r_slope = _slope(ent), _slope(rew)
            if e_slope <= -self.entropy_drop and r_slope >= self.reward_rise:
                warn = 1
                self.warnings.append(int(step))
                log.warning(
                    "possible collapse at step %d: behaviour entropy falling (%.4f/step) while reward rises "
                    "(%.4f/step) over the last %d steps", step, e_slope, r_slope, self.window)
        out = {k: v for k, v in m.items() if k != "reward"}
        out.update({"entropy_slope": e_slope, "reward_slope": r_slope, "collapse_warning": warn})
        self.history[-1].update(out)
        return out

    def state_dict(self) -> dict:
        return {"history": list(self.history), "warnings": list(self.warnings)}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state.get("history", []))
        self.warnings = list(state.get("warnings", []))


MONITOR_CURVES = ("entropy/search_count", "entropy/query_style", "entropy/answer_length", "unique_answers")


def plot_monitor_curves(ax, rows: Sequence[Mapping], keys: Sequence[str] = MONITOR_CURVES) -> bool:
    """Draw the collapse curves of metrics rows (dicts with `step` and the monitor keys) on a
    matplotlib axis, marking warning steps; returns False (drawing nothing) when no row has them."""
    drawn = False
    for key in keys:
        pts = [(r["step"], r[key]) for r in rows if key in r and r.get(key) is not None and "step" in r]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=key.replace("entropy/", "H "), linewidth=1.2)
            drawn = True
    warn = [r["step"] for r in rows if r.get("collapse_warning")]
    for s in warn:
        ax.axvline(s, color="red", alpha=0.3, linewidth=0.8)
    if drawn:
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("collapse monitors" + (f" ({len(warn)} warnings)" if warn else ""))
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    return drawn
