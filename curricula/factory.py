"""`from_spec`: build a curriculum from a dict, a JSON string, or a short "type:key=value,..." string."""

from __future__ import annotations

import json
from typing import Any

from curricula.base import Curriculum
from curricula.schedules import (AdaptiveCurriculum, ConstantCurriculum, CosineCurriculum, ExponentialCurriculum,
                                 LinearCurriculum, StepCurriculum)

CURRICULA: dict[str, type[Curriculum]] = {
    c.type_name: c for c in (ConstantCurriculum, LinearCurriculum, ExponentialCurriculum, StepCurriculum,
                             CosineCurriculum, AdaptiveCurriculum)
}


def _parse_value(text: str) -> Any:
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_string(spec: str) -> dict[str, Any]:
    spec = spec.strip()
    if not spec:
        raise ValueError("empty curriculum spec")
    if spec.startswith("{"):
        data = json.loads(spec)
        if not isinstance(data, dict):
            raise ValueError(f"curriculum spec must be a JSON object, got {spec!r}")
        return data
    try:
        return {"type": "constant", "p": float(spec)}
    except ValueError:
        pass
    name, _, rest = spec.partition(":")
    out: dict[str, Any] = {"type": name.strip()}
    # values may be JSON lists ("milestones=[10,20]"): split on commas outside brackets
    depth, part, parts = 0, "", []
    for ch in rest:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(part)
            part = ""
        else:
            part += ch
    parts.append(part)
    for item in filter(str.strip, parts):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"curriculum spec item {item!r} is not key=value (in {spec!r})")
        out[key.strip()] = _parse_value(value)
    return out


def from_spec(spec: dict[str, Any] | str | float | Curriculum) -> Curriculum:
    """A curriculum from a spec.

    Accepts a `Curriculum` (returned as is), a number (constant p), a dict such as
    {"type": "exponential", "p_start": 0, "p_end": 0.5, "total_steps": 100} (also the output of
    `state_dict()`, which restores runtime state too), a JSON string of that dict, or the short form
    "exponential:p_start=0,p_end=0.5,total_steps=100".
    """
    if isinstance(spec, Curriculum):
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return ConstantCurriculum(spec)
    if isinstance(spec, str):
        spec = _parse_string(spec)
    if not isinstance(spec, dict):
        raise ValueError(f"curriculum spec must be a dict, string or number, got {type(spec).__name__}")
    kind = spec.get("type")
    if kind not in CURRICULA:
        raise ValueError(f"unknown curriculum type {kind!r}; choose one of {sorted(CURRICULA)}")
    cls = CURRICULA[kind]
    state_keys = {"p", "recent", "num_updates"} if cls is AdaptiveCurriculum else set()
    kwargs = {k: v for k, v in spec.items() if k != "type" and k not in state_keys}
    try:
        curriculum = cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for a {kind!r} curriculum: {exc}") from None
    if state_keys & spec.keys():
        curriculum.load_state_dict(spec)
    return curriculum
