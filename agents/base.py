"""The agent interface used by `zerosearch demo`, `eval` and `compare`.

An agent writes one assistant turn for each of a batch of running episodes. `transcripts[i]` is
episode i's text so far: the prompt, then every earlier turn followed by the environment's
feedback, concatenated exactly. `infos[i]` is the reset info (task_id, question, answers, kind,
episode_id) merged with the latest step info (turn, action, num_searches, ...). The agent returns
one turn per episode, in order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class Agent(ABC):
    """Writes the next turn of many episodes at once."""

    name: str = "agent"

    @abstractmethod
    def act(self, transcripts: list[str], infos: list[dict]) -> list[str]:
        """One turn (text) for each transcript."""

    def reset(self) -> None:
        """Forget per-episode state (called before an evaluation run); optional."""
