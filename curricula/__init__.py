"""Noise curricula: training step -> probability that a search returns noisy documents."""

from curricula.base import Curriculum
from curricula.factory import CURRICULA, from_spec
from curricula.plot import plot_curriculum
from curricula.schedules import (AdaptiveCurriculum, ConstantCurriculum, CosineCurriculum, ExponentialCurriculum,
                                 LinearCurriculum, StepCurriculum)

__all__ = ["Curriculum", "ConstantCurriculum", "LinearCurriculum", "ExponentialCurriculum", "StepCurriculum",
           "CosineCurriculum", "AdaptiveCurriculum", "CURRICULA", "from_spec", "plot_curriculum"]
