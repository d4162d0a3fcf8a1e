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

_CONFIDENCE = re.compile(r"\s*<confidence>([^<]{0,64})</confidence>")
# Tags the agent may not write itself: the environment owns <information>.
_ANY_TAG = re.compile(r"</?\s*(search|answer|think|information|confidence)\s*>", re.IGNORECASE)
_NEEDS_CLEANING = re.compile(r"[\x00-\x1f\x7f<\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
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


def _first_action_span(turn: str) -> tuple[str, int, int] | None:
    """(kind, content start, content end) of the first complete action tag, in linear time.

    The earliest closing tag ends the turn; its content starts after the first matching opening tag
    before it. (A regex with a lazy `.*?` is quadratic on hostile text with many unclosed tags.)
    """
    close, kind = -1, ""
    for k in ("search", "answer"):
        i = turn.find(f"</{k}>")
        if i >= 0 and (close < 0 or i < close):
            close, kind = i, k
    if close < 0:
        return None
    opening = turn.find(f"<{kind}>", 0, close)
    if opening < 0:
        return None
    return kind, opening + len(kind) + 2, close


def parse_action(turn: str, max_query_chars: int = 512, max_answer_chars: int = 1024) -> Action:
    """Read the first complete <search> or <answer> of a turn. Never raises."""
    if not isinstance(turn, str):
        return Action("invalid", reason="the turn is not text")
    span = _first_action_span(turn)
    if span is None:
        if "<search>" in turn or "<answer>" in turn:
            return Action("invalid", reason="a <search> or <answer> tag was opened but not closed")
        if "</search>" in turn or "</answer>" in turn:
            return Action("invalid", reason="a closing tag has no opening tag before it")
        return Action("invalid", reason="no <search>...</search> or <answer>...</answer> in the turn")
    kind, start, end = span
    limit = max_query_chars if kind == "search" else max_answer_chars
    if end - start > 4 * limit + 64:  # cheap early reject before scanning a huge span
        return Action("invalid", reason=f"the <{kind}> content is longer than {limit} characters")
    content = turn[start:end]
    if _ANY_TAG.search(content):
        return Action("invalid", reason=f"the <{kind}> content holds another protocol tag")
    content = " ".join(_CONTROL.sub(" ", content).split())
    if not content:
        return Action("invalid", reason=f"the <{kind}> tag is empty")
    if len(content) > limit:
        what = "query" if kind == "search" else "answer"
        return Action("invalid", reason=f"the {what} is longer than {limit} characters")
    if kind == "search":
        return Action("search", content)
    conf = _CONFIDENCE.match(turn, end + len("</answer>"))
    return Action("answer", content, confidence_text=conf.group(1) if conf else None)


def extract_answer(text: str) -> str | None:
    """The content of the agent's LAST complete <answer>...</answer> in `text`, or None.

    Only call this on the agent's own tokens: documents in <information> are not the agent's.
    """
    end = text.rfind("</answer>")
    if end < 0:
        return None
    start = text.rfind("<answer>", 0, end)
    if start < 0:
        return None
    return " ".join(text[start + len("<answer>"):end].split())


def strip_information(text: str) -> str:
    """Remove <information>...</information> blocks (environment text) from a transcript.
    An unclosed block runs to the end of the text."""
    out: list[str] = []
    pos = 0
    while True:
        i = text.find("<information>", pos)
        if i < 0:
            out.append(text[pos:])
            return " ".join(out)
        out.append(text[pos:i])
        j = text.find("</information>", i)
        if j < 0:
            return " ".join(out)
        pos = j + len("</information>")


def sanitize_document_text(text: str) -> str:
    """Fold white space, drop control characters and neutralise protocol tags, so a document can
    never close the <information> block or write an answer. Fast path for clean text."""
    if "  " not in text and _NEEDS_CLEANING.search(text) is None:  # the common case: nothing to fold, drop or escape
        return text.strip(" ")
    text = " ".join(text.split())
    if not text.isprintable():
        text = " ".join(_CONTROL.sub(" ", text).split())
    if "<" in text:
        text = _ANY_TAG.sub(lambda m: m.group(0).replace("<", "(").replace(">", ")"), text)
    return text


def render_documents(docs: Sequence[Document], max_doc_chars: int, max_obs_chars: int) -> str:
    """`<information>Doc 1 (Title: ...) text ...</information>`, capped per document and in total."""
    head, tail = "\n<information>", "</information>\n"
    budget = max(0, max_obs_chars - len(head) - len(tail))
    parts: list[str] = []
    used = 0
    for i, d in enumerate(docs, 1):
        title = sanitize_document_text(d.title[:400])[:200]
        # Raw text beyond a generous multiple of the cap can never be shown: cut before cleaning.
        body = sanitize_document_text(d.text[: 8 * max_doc_chars + 64])
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
