"""Noise schedules: constant, linear, exponential (ZeroSearch), step, cosine, and adaptive."""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Iterable, Sequence

from curricula.base import Curriculum, check_probability, check_step


def _check_total(total_steps: int) -> int:
    if isinstance(total_steps, bool) or not isinstance(total_steps, (int, float)) or total_steps != int(total_steps) \
            or total_steps < 1:
        raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}")
    return int(total_steps)


class ConstantCurriculum(Curriculum):
    """The same noise probability `p` at every step."""

    type_name = "constant"

    def __init__(self, p: float = 0.0):
        self.p = check_probability("p", p)

    def probability(self, step: int) -> float:
        check_step(step)
        return self.p

    def params(self) -> dict[str, Any]:
        return {"p": self.p}


class _Ramp(Curriculum):
    """A schedule from `p_start` at step 0 to `p_end` at `total_steps`, held at `p_end` afterwards."""

    def __init__(self, p_start: float = 0.0, p_end: float = 0.5, total_steps: int = 100):
        self.p_start = check_probability("p_start", p_start)
        self.p_end = check_probability("p_end", p_end)
        self.total_steps = _check_total(total_steps)

    def fraction(self, progress: float) -> float:
        """Share of the way from p_start to p_end at `progress` = step / total_steps in [0, 1]."""
        raise NotImplementedError

    def probability(self, step: int) -> float:
        progress = min(check_step(step) / self.total_steps, 1.0)
        p = self.p_start + self.fraction(progress) * (self.p_end - self.p_start)
        return min(max(p, 0.0), 1.0)

    def params(self) -> dict[str, Any]:
        return {"p_start": self.p_start, "p_end": self.p_end, "total_steps": self.total_steps}


class LinearCurriculum(_Ramp):
    """p(i) = p_start + i/m * (p_end - p_start), held at p_end after m = total_steps."""

    type_name = "linear"

    def fraction(self, progress: float) -> float:
        return progress


class ExponentialCurriculum(_Ramp):
    """The ZeroSearch schedule: p(i) = p_start + (base**(i/m) - 1) / (base - 1) * (p_end - p_start),
    held at p_end after m = total_steps. base > 1 starts slowly and speeds up; base = 1 is linear."""

    type_name = "exponential"

    def __init__(self, p_start: float = 0.0, p_end: float = 0.5, total_steps: int = 100, base: float = 4.0):
        super().__init__(p_start, p_end, total_steps)
        b = float(base)
        if not math.isfinite(b) or b <= 0:
            raise ValueError(f"base must be a finite number > 0, got {base!r}")
        self.base = b

    def fraction(self, progress: float) -> float:
        if self.base == 1.0:
            return progress
        return (self.base**progress - 1.0) / (self.base - 1.0)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "base": self.base}


class CosineCurriculum(_Ramp):
    """Half-cosine ramp: p(i) = p_start + (1 - cos(pi * i/m)) / 2 * (p_end - p_start), held after m."""

    type_name = "cosine"

    def fraction(self, progress: float) -> float:
        return (1.0 - math.cos(math.pi * progress)) / 2.0


class StepCurriculum(Curriculum):
    """Piecewise constant: `values[0]` before `milestones[0]`, `values[k]` from `milestones[k-1]` on.
    Needs len(values) == len(milestones) + 1 and strictly increasing milestones."""

    type_name = "step"

    def __init__(self, milestones: Sequence[int] = (), values: Sequence[float] = (0.0,)):
        ms = [int(check_step(m)) for m in milestones]
        if any(b <= a for a, b in zip(ms, ms[1:])):
            raise ValueError(f"milestones must be strictly increasing, got {list(milestones)!r}")
        vs = [check_probability(f"values[{i}]", v) for i, v in enumerate(values)]
        if len(vs) != len(ms) + 1:
            raise ValueError(f"need len(values) == len(milestones) + 1, got {len(vs)} values for {len(ms)} milestones")
        self.milestones, self.values = ms, vs

    def probability(self, step: int) -> float:
        s = check_step(step)
        k = sum(1 for m in self.milestones if s >= m)
        return self.values[k]

    def params(self) -> dict[str, Any]:
        return {"milestones": list(self.milestones), "values": list(self.values)}


class AdaptiveCurriculum(Curriculum):
    """Moves the noise to keep the agent's recent success rate near `target_success`.

    Each `update(outcomes)` adds outcomes (a success rate in [0, 1] or a list of 0/1 or fractional
    outcomes) to a sliding window of the last `window` values, then moves p by
    `gain * (window mean - target_success)`, clipped to +-`max_delta`, and to [p_min, p_max]:
    an agent doing better than the target gets more noise. `probability(step)` returns the current p
    whatever the step. The window and p are part of `state_dict()`, so a resumed run continues exactly.
    """

    type_name = "adaptive"

    def __init__(self, target_success: float = 0.5, p_init: float = 0.0, max_delta: float = 0.05, window: int = 64,
                 p_min: float = 0.0, p_max: float = 1.0, gain: float = 1.0):
        self.target_success = check_probability("target_success", target_success)
        self.p_min = check_probability("p_min", p_min)
        self.p_max = check_probability("p_max", p_max)
        if self.p_min > self.p_max:
            raise ValueError(f"p_min ({p_min}) must not exceed p_max ({p_max})")
        p0 = check_probability("p_init", p_init)
        if not self.p_min <= p0 <= self.p_max:
            raise ValueError(f"p_init ({p_init}) must lie in [p_min, p_max] = [{p_min}, {p_max}]")
        if not (math.isfinite(float(max_delta)) and float(max_delta) > 0):
            raise ValueError(f"max_delta must be > 0, got {max_delta!r}")
        if isinstance(window, bool) or int(window) != window or int(window) < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        if not (math.isfinite(float(gain)) and float(gain) > 0):
            raise ValueError(f"gain must be > 0, got {gain!r}")
        self.p_init, self.max_delta, self.window, self.gain = p0, float(max_delta), int(window), float(gain)
        self.p = p0
        self.recent: deque[float] = deque(maxlen=self.window)
        self.num_updates = 0

    def probability(self, step: int) -> float:
        check_step(step)
        return self.p

    @property
    def success_rate(self) -> float | None:
        """Mean of the outcomes in the window (None before the first update)."""
        return sum(self.recent) / len(self.recent) if self.recent else None

    def update(self, outcomes: float | Iterable[float]) -> float:
        """Record outcomes (a rate or a list of per-episode outcomes in [0, 1]) and return the new p."""
        if isinstance(outcomes, (int, float)) and not isinstance(outcomes, bool):
            values = [check_probability("success_rate", outcomes)]
        else:
            try:
                values = [check_probability(f"outcomes[{i}]", float(v)) for i, v in enumerate(outcomes)]
            except TypeError:
                raise ValueError(f"outcomes must be a rate or a list of numbers in [0, 1], got {outcomes!r}") from None
        if not values:
            raise ValueError("update() needs at least one outcome")
        self.recent.extend(values)
        rate = self.success_rate
        assert rate is not None
        delta = max(-self.max_delta, min(self.max_delta, self.gain * (rate - self.target_success)))
        self.p = min(self.p_max, max(self.p_min, self.p + delta))
        self.num_updates += 1
        return self.p

    def params(self) -> dict[str, Any]:
        return {"target_success": self.target_success, "p_init": self.p_init, "max_delta": self.max_delta,
                "window": self.window, "p_min": self.p_min, "p_max": self.p_max, "gain": self.gain}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "p": self.p, "recent": list(self.recent), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.p = min(self.p_max, max(self.p_min, check_probability("p", state.get("p", self.p_init))))
        self.recent = deque((check_probability("recent", v) for v in state.get("recent", [])), maxlen=self.window)
        self.num_updates = int(state.get("num_updates", 0))
