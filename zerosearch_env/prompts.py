"""The instructions the agent sees at the start of an episode (our own wording)."""

from __future__ import annotations

INSTRUCTIONS = (
    "Answer the question below. You may search an encyclopedia as often as you need.\n"
    "Reason inside <think> and </think>. To search, write <search>your query</search>; the results "
    "come back inside <information> and </information>. When you know the answer, write it inside "
    "<answer> and </answer> as a short phrase, without explanation."
)
CALIBRATION_SUFFIX = (
    " Right after the answer, state the probability that it is correct as "
    "<confidence>a number between 0 and 1</confidence>."
)


def build_prompt(question: str, calibration: bool = False, max_question_chars: int = 2000) -> str:
    q = " ".join(str(question).split())
    if len(q) > max_question_chars:
        q = q[: max_question_chars - 3] + "..."
    return INSTRUCTIONS + (CALIBRATION_SUFFIX if calibration else "") + f"\nQuestion: {q}\n"
