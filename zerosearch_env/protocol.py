"""The text protocol: parse one assistant turn into an action, and render documents as feedback.

The agent thinks in <think>...</think>, searches with <search>query</search> and answers with
<answer>text</answer>, optionally followed by <confidence>q</confidence>. A turn is cut after
the first </search> or </answer>; the first complete tag decides the action.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Sequence

from zerosearch_env.search.base import Document

ActionKind = Literal["search", "answer", "invalid"]

STOP_STRINGS = ("</search>", "</answer>")

_FIRST_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)
_CONFIDENCE = re.compile(r"^\s*<confidence>(.*?)</confidence>", re.DOTALL)
# Tags the agent may not write itself: the environment owns <information>.
_ANY_TAG = re.compile(r"</?\s*(search|answer|think|information|confidence)\s*>", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    content: str = ""
    confidence_text: str | None = None  # raw text inside <confidence>, if present
    reason: str = ""  # why a turn was invalid


def cut_turn(text: str) -> str:
    """Cut generated text right after the first closing action tag, as a generator would."""
    best = -1
    for stop in STOP_STRINGS:
        i = text.find(stop)
        if i >= 0 and (best < 0 or i < best):
            best = i + len(stop)
    return text if best < 0 else text[:best]


def parse_action(turn: str, max_query_chars: int = 512, max_answer_chars: int = 1024) -> Action:
    """Read the first complete <search> or <answer> of a turn. Never raises."""
    if not isinstance(turn, str):
        return Action("invalid", reason="the turn is not text")
    m = _FIRST_ACTION.search(turn)
    if m is None:
        if "<search>" in turn or "<answer>" in turn:
            return Action("invalid", reason="a <search> or <answer> tag was opened but not closed")
        return Action("invalid", reason="no <search>...</search> or <answer>...</answer> in the turn")
    kind, content = m.group(1), m.group(2)
    if _ANY_TAG.search(content):
        return Action("invalid", reason=f"the <{kind}> content holds another protocol tag")
    content = " ".join(_CONTROL.sub(" ", content).split())
    if not content:
        return Action("invalid", reason=f"the <{kind}> tag is empty")
    if kind == "search":
        if len(content) > max_query_chars:
            return Action("invalid", reason=f"the query is longer than {max_query_chars} characters")
        return Action("search", content)
    if len(content) > max_answer_chars:
        return Action("invalid", reason=f"the answer is longer than {max_answer_chars} characters")
    conf = _CONFIDENCE.match(turn[m.end():])
    return Action("answer", content, confidence_text=conf.group(1) if conf else None)


def extract_answer(text: str) -> str | None:
    """The content of the agent's LAST <answer>...</answer> in `text`, or None.

    Only call this on the agent's own tokens: documents in <information> are not the agent's.
    """
    found = None
    for m in re.finditer(r"<answer>(.*?)</answer>", text, re.DOTALL):
        found = m.group(1)
    return None if found is None else " ".join(found.split())


def strip_information(text: str) -> str:
    """Remove <information>...</information> blocks (environment text) from a transcript."""
    return re.sub(r"<information>.*?(</information>|$)", " ", text, flags=re.DOTALL)


def sanitize_document_text(text: str) -> str:
    """Neutralise protocol tags inside documents so a document can never close the block or answer."""
    text = _CONTROL.sub(" ", text)
    return _ANY_TAG.sub(lambda m: m.group(0).replace("<", "(").replace(">", ")"), text)


def render_documents(docs: Sequence[Document], max_doc_chars: int, max_obs_chars: int) -> str:
    """`<information>Doc 1 (Title: ...) text ...</information>`, capped per document and in total."""
    head, tail = "\n<information>", "</information>\n"
    budget = max(0, max_obs_chars - len(head) - len(tail))
    parts: list[str] = []
    used = 0
    for i, d in enumerate(docs, 1):
        title = " ".join(sanitize_document_text(d.title).split())[:200]
        body = " ".join(sanitize_document_text(d.text).split())
        if len(body) > max_doc_chars:
            body = body[: max(0, max_doc_chars - 3)] + "..."
        piece = f"Doc {i} (Title: {title}) {body}\n"
        if used + len(piece) > budget:
            piece = piece[: max(0, budget - used)]
        parts.append(piece)
        used += len(piece)
        if used >= budget:
            break
    if not docs:
        parts.append("No results.\n"[:budget])
    return head + "".join(parts) + tail


def invalid_feedback(reason: str) -> str:
    return (
        f"\n<information>Invalid action: {reason}. Search with <search>query</search> "
        "or give the final answer with <answer>text</answer>.</information>\n"
    )
