"""Curricula: the ZeroSearch formula at key steps, exact save/resume, spec parsing, PNG."""

from __future__ import annotations

import json
import math
import random

import pytest

from curricula import (AdaptiveCurriculum, ConstantCurriculum, CosineCurriculum, Curriculum, ExponentialCurriculum,
                       LinearCurriculum, StepCurriculum, from_spec, plot_curriculum)


def zerosearch_formula(i: float, m: int, p_start: float, p_end: float, base: float) -> float:
    return p_start + (base ** (i / m) - 1) / (base - 1) * (p_end - p_start)


@pytest.mark.parametrize("p_start,p_end,base,m", [
    (0.0, 0.5, 4.0, 100), (0.1, 0.9, 2.0, 40), (0.0, 1.0, 10.0, 7), (0.6, 0.2, 4.0, 50), (0.25, 0.75, 1.5, 1000),
])
def test_exponential_matches_formula(p_start, p_end, base, m):
    c = ExponentialCurriculum(p_start, p_end, m, base=base)
    for i in (0, m / 2, m):
        assert c.probability(i) == pytest.approx(zerosearch_formula(i, m, p_start, p_end, base), abs=1e-12)
    assert c.probability(0) == pytest.approx(p_start, abs=1e-12)
    assert c.probability(m) == pytest.approx(p_end, abs=1e-12)
    # held at p_end after total_steps (the formula itself would overshoot)
    assert c.probability(2 * m) == pytest.approx(p_end, abs=1e-12)
    assert c.probability(10 * m + 3) == pytest.approx(p_end, abs=1e-12)
    # m/2 point: (sqrt(base) - 1) / (base - 1) of the way
    assert c.probability(m / 2) == pytest.approx(p_start + (math.sqrt(base) - 1) / (base - 1) * (p_end - p_start))


def test_exponential_default_base_and_monotone():
    c = ExponentialCurriculum(0.0, 0.5, 100)
    assert c.base == 4.0
    values = [c.probability(i) for i in range(0, 201)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert c.probability(50) == pytest.approx(0.5 / 3)  # (2 - 1) / 3 * 0.5
    assert ExponentialCurriculum(0.0, 1.0, 10, base=1.0).probability(5) == pytest.approx(0.5)  # base 1: linear


def test_other_schedules():
    assert ConstantCurriculum(0.3).probability(12345) == 0.3
    lin = LinearCurriculum(0.2, 0.6, 10)
    assert [lin.probability(i) for i in (0, 5, 10, 20)] == pytest.approx([0.2, 0.4, 0.6, 0.6])
    cos = CosineCurriculum(0.0, 1.0, 10)
    assert [cos.probability(i) for i in (0, 5, 10, 30)] == pytest.approx([0.0, 0.5, 1.0, 1.0])
    st = StepCurriculum([10, 20], [0.0, 0.3, 0.7])
    assert [st.probability(i) for i in (0, 9, 10, 19, 20, 1000)] == [0.0, 0.0, 0.3, 0.3, 0.7, 0.7]


def test_bad_parameters_raise_clear_errors():
    with pytest.raises(ValueError, match="p_end"):
        LinearCurriculum(0.0, 1.5, 10)
    with pytest.raises(ValueError, match="total_steps"):
        ExponentialCurriculum(0.0, 0.5, 0)
    with pytest.raises(ValueError, match="base"):
        ExponentialCurriculum(0.0, 0.5, 10, base=-2)
    with pytest.raises(ValueError, match="len\\(values\\)"):
        StepCurriculum([10], [0.1])
    with pytest.raises(ValueError, match="increasing"):
        StepCurriculum([10, 5], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="step"):
        LinearCurriculum().probability(-1)
    with pytest.raises(ValueError, match="step"):
        ConstantCurriculum(0.1).probability(float("nan"))
    with pytest.raises(ValueError, match="p_init"):
        AdaptiveCurriculum(p_init=0.9, p_max=0.5)
    with pytest.raises(ValueError, match="outcomes"):
        AdaptiveCurriculum().update([0.5, 2.0])
    with pytest.raises(ValueError, match="at least one"):
        AdaptiveCurriculum().update([])


def test_adaptive_moves_toward_target_with_bounded_steps():
    c = AdaptiveCurriculum(target_success=0.5, p_init=0.2, max_delta=0.05, window=8, p_min=0.0, p_max=0.8)
    # an agent that always succeeds gets more noise, by at most max_delta per update
    ps = [c.update([1, 1, 1, 1]) for _ in range(20)]
    diffs = [b - a for a, b in zip([0.2] + ps, ps)]
    assert all(0 <= d <= 0.05 + 1e-12 for d in diffs)
    assert ps[-1] == pytest.approx(0.8)  # clipped at p_max
    # failing pulls it back down
    for _ in range(30):
        c.update(0.0)
    assert c.probability(999) == pytest.approx(0.0)
    assert c.num_updates == 50


def _drive(c: AdaptiveCurriculum, rng: random.Random, n: int) -> list[float]:
    return [c.update([rng.random() < 0.7 for _ in range(rng.randint(1, 5))]) for _ in range(n)]


def test_adaptive_resume_continues_exactly(tmp_path):
    rng_a, rng_b = random.Random(3), random.Random(3)
    straight = AdaptiveCurriculum(target_success=0.5, p_init=0.1, max_delta=0.03, window=10)
    reference = _drive(straight, rng_a, 40)

    first = AdaptiveCurriculum(target_success=0.5, p_init=0.1, max_delta=0.03, window=10)
    part1 = _drive(first, rng_b, 17)
    path = tmp_path / "curriculum.json"
    path.write_text(json.dumps(first.state_dict()))
    resumed = from_spec(json.loads(path.read_text()))
    assert isinstance(resumed, AdaptiveCurriculum) and resumed.num_updates == 17
    part2 = _drive(resumed, rng_b, 23)
    assert part1 + part2 == reference  # bit-exact continuation

    # load_state_dict into a fresh object with other settings gives the same result
    other = AdaptiveCurriculum(target_success=0.9, window=3)
    other.load_state_dict(first.state_dict())
    assert other.state_dict() == first.state_dict()


@pytest.mark.parametrize("curriculum", [
    ConstantCurriculum(0.4), LinearCurriculum(0.1, 0.6, 30), ExponentialCurriculum(0.0, 0.5, 30, base=3.0),
    CosineCurriculum(0.2, 0.9, 30), StepCurriculum([10, 25], [0.0, 0.2, 0.5]),
])
def test_schedule_resume_continues_exactly(curriculum: Curriculum, tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(curriculum.state_dict()))
    resumed = from_spec(json.loads(path.read_text()))
    assert type(resumed) is type(curriculum)
    assert [resumed.probability(s) for s in range(15, 70)] == [curriculum.probability(s) for s in range(15, 70)]
    blank = type(curriculum)()
    blank.load_state_dict(curriculum.state_dict())
    assert [blank.probability(s) for s in range(70)] == [curriculum.probability(s) for s in range(70)]
    with pytest.raises(ValueError, match="not"):
        (ConstantCurriculum() if type(curriculum) is not ConstantCurriculum else LinearCurriculum()).load_state_dict(
            curriculum.state_dict())


def test_from_spec_forms():
    c = from_spec({"type": "exponential", "p_start": 0, "p_end": 0.5, "total_steps": 100})
    assert isinstance(c, ExponentialCurriculum) and c.probability(100) == 0.5
    s = from_spec("exponential:p_start=0,p_end=0.5,total_steps=100,base=2")
    assert isinstance(s, ExponentialCurriculum) and s.base == 2.0
    assert from_spec("0.25").probability(3) == 0.25
    assert from_spec(0.25).probability(3) == 0.25
    st = from_spec("step:milestones=[10,20],values=[0,0.5,1]")
    assert isinstance(st, StepCurriculum) and st.probability(15) == 0.5
    assert isinstance(from_spec('{"type": "cosine", "total_steps": 5}'), CosineCurriculum)
    assert from_spec(c) is c
    with pytest.raises(ValueError, match="unknown curriculum type"):
        from_spec({"type": "zigzag"})
    with pytest.raises(ValueError, match="bad arguments"):
        from_spec({"type": "linear", "slope": 2})
    with pytest.raises(ValueError, match="key=value"):
        from_spec("linear:p_start")


def test_plot_writes_png(tmp_path):
    out = plot_curriculum(ExponentialCurriculum(0.0, 0.5, 50), 100, tmp_path / "sub" / "exp.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    many = plot_curriculum({"linear": LinearCurriculum(0, 1, 20), "cosine": CosineCurriculum(0, 1, 20)},
                           range(0, 40, 2), tmp_path / "many.png", title="two")
    assert many.is_file()
    with pytest.raises(ValueError, match="empty"):
        plot_curriculum(LinearCurriculum(), [], tmp_path / "none.png")
