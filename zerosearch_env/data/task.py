"""A question-answering task: what `SearchEnv.reset` samples."""

from __future__ import annotations

from dataclasses import dataclass, field


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
