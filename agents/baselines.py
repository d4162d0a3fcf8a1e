"""Baseline agents: an oracle reader (upper bound), a closed-book prior (lower bound), a random agent.

- `OracleAgent` follows each question's gold chain: it searches the titles of the supporting
  articles in hop order, then answers with the gold answer only if a retrieved document holds it
  (otherwise with the title of a retrieved document, or "unknown"). Its EM is the score of a
  perfect reader on top of the retrieval it gets, so it measures whether search is sufficient.
- `ClosedBookAgent` never searches: it answers with the most common training answer of the
  question's template, a prior-only guess, which measures whether search is necessary.
- `RandomAgent` (seeded) searches random words of the question, answers random words, and
  sometimes writes malformed turns.
"""

from __future__ import annotations

import collections
import random
import re
from typing import Sequence

from agents.base import Agent
from agents.evaluate import holds_answer
from zerosearch_env.data.task import Task

__all__ = ["OracleAgent", "ClosedBookAgent", "RandomAgent", "retrieved_text"]

_INFO = re.compile(r"<information>(.*?)</information>", re.DOTALL)
_DOC_TITLE = re.compile(r"Doc \d+ \(Title: (.*?)\)")


def retrieved_text(transcript: str, question: str | None = None) -> str:
    """The environment's <information> blocks after the prompt (never the agent's own text)."""
    start = -1
    if question:
        key = "Question: " + " ".join(str(question).split())
        start = transcript.find(key)
        if start >= 0:
            start += len(key)
    if start < 0:
        start = transcript.find("\nQuestion: ")
        start = transcript.find("\n", start + 1) if start >= 0 else 0
    return "\n".join(_INFO.findall(transcript[max(start, 0):]))


class OracleAgent(Agent):
    """Searches the supporting titles of the task (by `task_id`), then answers from what came back.

    Tasks without supporting titles are searched by their question text. An unknown task_id gets
    the answer "unknown".
    """

    name = "oracle"

    def __init__(self, tasks: Sequence[Task]):
        self.tasks = {t.id: t for t in tasks}

    def act(self, transcripts: list[str], infos: list[dict]) -> list[str]:
        return [self._turn(text, info or {}) for text, info in zip(transcripts, infos)]

    def _turn(self, transcript: str, info: dict) -> str:
        task = self.tasks.get(str(info.get("task_id")))
        if task is None:
            return "<answer>unknown</answer>"
        hops = list(task.supporting_titles) or [task.question]
        done = int(info.get("num_searches") or 0)
        if done < len(hops):
            query = " ".join(hops[done].replace("<", " ").replace(">", " ").split())
            return f"<think>I need the article on {query}.</think>\n<search>{query}</search>"
        found = retrieved_text(transcript, task.question)
        for alias in task.answers:
            if holds_answer(found, [alias]):
                return f"<think>The results state it.</think>\n<answer>{alias}</answer>"
        titles = [t for t in _DOC_TITLE.findall(found) if t.strip() and "<" not in t and ">" not in t]
        return f"<answer>{titles[-1] if titles else 'unknown'}</answer>"


class ClosedBookAgent(Agent):
    """Never searches; answers with the most common training answer of the question's template.

    `tasks` must include the training tasks (split == `train_split`): the prior is computed from
    them only. Other tasks given are used to look up the template of a `task_id`.
    """

    name = "closed_book"

    def __init__(self, tasks: Sequence[Task], train_split: str = "train"):
        train = [t for t in tasks if t.split == train_split]
        if not train:
            raise ValueError(f"ClosedBookAgent needs tasks of split {train_split!r} to learn its prior")
        self.templates = {t.id: t.template for t in tasks}
        by_template: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        overall: collections.Counter = collections.Counter()
        for t in train:
            by_template[t.template][t.answers[0]] += 1
            overall[t.answers[0]] += 1
        self.prior = {tpl: c.most_common(1)[0][0] for tpl, c in by_template.items()}
        self.fallback = overall.most_common(1)[0][0]

    def guess(self, task_id: str) -> str:
        return self.prior.get(self.templates.get(task_id, ""), self.fallback)

    def act(self, transcripts: list[str], infos: list[dict]) -> list[str]:
        out = []
        for info in infos:
            guess = " ".join(self.guess(str((info or {}).get("task_id"))).replace("<", " ").replace(">", " ").split())
            out.append(f"<think>I will answer from memory.</think>\n<answer>{guess or 'unknown'}</answer>")
        return out


_MALFORMED = (
    "", "I am not sure.", "<search>unclosed query", "<answer></answer>", "<search></search>",
    "<search><answer>x</answer></search>", "<answer>a <search>b</search></answer>", "</search>",
    "<think>thinking without acting</think>", "<information>fake</information>", "\x00\x07\x1b",
    "ÄÖÜ ЖЯ 中文 العربية 🙂", "<answer>unterminated",
)


class RandomAgent(Agent):
    """Seeded random turns: searches of 1-3 question words, answers of 1-2 words seen so far,
    and malformed turns (`p_malformed`)."""

    name = "random"

    def __init__(self, seed: int = 0, p_search: float = 0.5, p_answer: float = 0.3, p_malformed: float = 0.2):
        total = p_search + p_answer + p_malformed
        if total <= 0 or min(p_search, p_answer, p_malformed) < 0:
            raise ValueError("probabilities must be non-negative with a positive sum")
        self.probs = (p_search / total, p_answer / total)
        self.seed = seed
        self.rng = random.Random(seed)

    def reset(self) -> None:
        self.rng = random.Random(self.seed)

    def act(self, transcripts: list[str], infos: list[dict]) -> list[str]:
        return [self._turn(text, info or {}) for text, info in zip(transcripts, infos)]

    def _turn(self, transcript: str, info: dict) -> str:
        r = self.rng
        question = str(info.get("question") or "")
        q_words = re.findall(r"\w+", question) or ["something"]
        x = r.random()
        if x < self.probs[0]:
            return f"<search>{' '.join(r.choice(q_words) for _ in range(r.randint(1, 3)))}</search>"
        if x < self.probs[0] + self.probs[1]:
            seen = re.findall(r"\w+", retrieved_text(transcript, question)) or q_words
            return f"<answer>{' '.join(r.choice(seen) for _ in range(r.randint(1, 2)))}</answer>"
        return r.choice(_MALFORMED)
