"""A question-answering task: what `SearchEnv.reset` samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


@dataclass(frozen=True, slots=True)
class Task:
    """One question with its gold answers (aliases included).

    `kind` is "single", "bridge" (two-hop) or "comparison" for the built-in world and "qa" for
    loaded data. `template` names the question pattern, `supporting_titles` the articles that hold
    the facts needed (in hop order) where known.
    """

    id: str
    question: str
    answers: tuple[str, ...]
    split: str = "train"
    kind: str = "qa"
    template: str = ""
    supporting_titles: tuple[str, ...] = ()
    data_source: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict:
        return {
            "id": self.id, "question": self.question, "answers": list(self.answers),
            "split": self.split, "kind": self.kind, "template": self.template,
            "supporting_titles": list(self.supporting_titles), "data_source": self.data_source,
        }


def select_split(tasks: Sequence[Task], split: str, source: str) -> list[Task]:
    """The tasks of `split`, or all of them for "all"; a split `source` lacks is an error naming its splits."""
    if split == "all":
        return list(tasks)
    chosen = [t for t in tasks if t.split == split]
    if not chosen:
        have = ", ".join(repr(s) for s in sorted({t.split for t in tasks}))
        raise ValueError(f"{source} has no {split!r} split; its splits: {have} (or 'all' for every row)")
    return chosen
