"""The `Curriculum` interface: training step -> probability that a search returns noisy documents."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Iterable


def check_probability(name: str, value: float) -> float:
    """`value` as a float in [0, 1], or ValueError naming the parameter."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def check_step(step: int | float) -> float:
    """A training step as a float >= 0, or ValueError."""
    try:
        s = float(step)
    except (TypeError, ValueError):
        raise ValueError(f"step must be a number >= 0, got {step!r}") from None
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"step must be a finite number >= 0, got {step!r}")
    return s


class Curriculum(ABC):
    """A noise schedule. `probability(step)` is the chance that a search at that training step is
    answered with noisy documents. `state_dict()` returns plain JSON-able data from which
    `load_state_dict()` (or `curricula.from_spec`) restores a curriculum that continues exactly."""

    #: name used in specs, e.g. {"type": "linear", ...}
    type_name: str = "curriculum"

    @abstractmethod
    def probability(self, step: int) -> float:
        """Noise probability at training `step` (>= 0), in [0, 1]."""

    def __call__(self, step: int) -> float:
        return self.probability(step)

    def update(self, outcomes: float | Iterable[float]) -> float | None:
        """Record the agent's latest outcomes (a success rate, or per-episode outcomes in [0, 1]).
        A trainer calls this after every batch; schedules driven by the step alone ignore it and
        return None, `AdaptiveCurriculum` moves its probability and returns it."""
        return None

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The constructor arguments."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: {"type": ..., constructor arguments..., plus any runtime state}."""
        return {"type": self.type_name, **self.params()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()` output (the type must match)."""
        if state.get("type") != self.type_name:
            raise ValueError(f"state is for a {state.get('type')!r} curriculum, not {self.type_name!r}")
        kwargs = {k: v for k, v in state.items() if k in self.params()}
        self.__init__(**kwargs)  # type: ignore[misc]  # re-validates the parameters

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
