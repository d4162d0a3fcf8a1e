"""The rewards the GRPO trainer adds up, on hand-built trajectories: the format reward of the agent's
own turns (a post-answer confidence/PCL segment does not count) and the Brier total with one notion
of correctness for both terms."""

from __future__ import annotations

import pytest

from agents.calibration import brier_reward_fn
from agents.grpo import compute_rewards
from agents.rollout import Trajectory
from agents.trainer import _format_reward_fn
from zerosearch_env.rewards import brier_reward


def _traj(*segments: tuple[str, bool], reward: float = 0.0, info: dict | None = None) -> Trajectory:
    """A trajectory from (text, is_agent) segments; one fake token id per character."""
    t = Trajectory(prompt="Q?", prompt_ids=[1, 2])
    for text, agent in segments:
        t.add([7] * max(1, len(text)), text, agent=agent, logprobs=[-0.1] * max(1, len(text)) if agent else None)
    t.reward = reward
    t.info = dict(info or {})
    return t


SEARCH = ("<think>need it</think>\n<search>velmora guild founder</search>", True)
FEEDBACK = ("\n<information>Doc 1 (Title: Velmora) Ansel Quorrin founded it.</information>\n", False)
ANSWER = ("<think>found</think>\n<answer>Ansel Quorrin</answer>", True)
# what agents.calibration.add_confidence / agents.pcl.add_post_completion append after the answer:
# the opening tag as environment text, the policy's continuation as agent text
CONFIDENCE = [("<confidence>", False), ("0.7</confidence>", True)]
PCL = [("<reward>", False), ("0.9</reward>", True)]


def test_format_reward_scores_the_turns_up_to_the_answer_not_the_post_answer_segment():
    plain = _traj(SEARCH, FEEDBACK, ANSWER)
    with_conf = _traj(SEARCH, FEEDBACK, ANSWER, *CONFIDENCE)
    with_pcl = _traj(SEARCH, FEEDBACK, ANSWER, *PCL)
    with_both = _traj(SEARCH, FEEDBACK, ANSWER, *CONFIDENCE, *PCL)
    # the segment the policy failed to close (cut at its token budget) has its own reward, not this one
    unclosed = _traj(SEARCH, FEEDBACK, ANSWER, ("<confidence>", False), ("very sure, I think it is", True))
    # SmolLM2's "><" token: the answering turn ends in the "<" that opens the segment, and
    # append_segments adds only the rest of the tag ("confidence>")
    merged = _traj(SEARCH, FEEDBACK, (ANSWER[0] + "<", True), ("confidence>", False), ("0.7</confidence>", True))
    assert _format_reward_fn([plain, with_conf, with_pcl, with_both, unclosed, merged]) == [1.0] * 6


def test_format_reward_still_rejects_malformed_turns_with_a_post_answer_segment():
    chatter = _traj(("chatter <search>q</search>", True), FEEDBACK, ANSWER, *CONFIDENCE)
    two_tags = _traj(("<search>q</search><search>r</search>", True), FEEDBACK, ANSWER, *PCL)
    bad_answer = _traj(SEARCH, FEEDBACK, ("<answer>A</answer> and more words", True), *CONFIDENCE)
    never_answered = _traj(SEARCH, FEEDBACK, SEARCH, FEEDBACK)
    assert _format_reward_fn([chatter, two_tags, bad_answer, never_answered]) == [0.0] * 4


# ----------------------------------------------------------------------------- Brier total
def _answered(reward: float, em: float, f1: float, q: float | None) -> Trajectory:
    return _traj(ANSWER, reward=reward, info={"answered": True, "em": em, "f1": f1, "confidence": q})


@pytest.mark.parametrize(
    ("reward", "em", "f1", "q", "total"),
    [
        (1.0, 1.0, 1.0, 1.0, 1.0),                # reward f1, exact: 1 - 0
        (1.0, 1.0, 1.0, 0.7, 1.0 - 0.09),         # 1 - (0.7 - 1)^2
        (0.5, 0.0, 0.5, 0.5, 0.5),                # reward f1, partial: 0.5 - (0.5 - 0.5)^2
        (0.5, 0.0, 0.5, 0.7, 0.5 - 0.04),         # 0.5 - (0.7 - 0.5)^2, not 0.5 - 0.49
        (0.5, 0.0, 0.5, 0.0, 0.5 - 0.25),         # 0.5 - (0 - 0.5)^2, not 0.5 - 0
        (0.5, 0.0, 0.5, None, 0.5 - 1.0),         # missing confidence: the worst claim, -1
        (0.0, 0.0, 0.5, 0.7, -0.49),              # reward em, partial F1 ignored: 0 - 0.7^2
        (1.0, 1.0, 1.0, None, 0.0),               # missing confidence on a correct answer: 1 - 1
    ],
)
def test_brier_total_is_a_proper_scoring_rule_of_the_env_reward(reward, em, f1, q, total):
    traj = _answered(reward, em, f1, q)
    got = float(compute_rewards([traj], [(brier_reward_fn, 1.0)])[0])
    assert got == pytest.approx(total)
    assert got == pytest.approx(brier_reward(reward, q))


def test_brier_term_is_zero_for_unanswered_trajectories():
    t = _traj(SEARCH, FEEDBACK, reward=0.0, info={"answered": False, "em": 0.0, "f1": 0.0})
    assert brier_reward_fn([t]) == [0.0]
