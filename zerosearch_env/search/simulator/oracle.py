"""The oracle ablation's answer-checking gate (the simulator's behaviour before knowledge sources,
kept as `knowledge="oracle"` for the transfer experiment): useful results must state a gold alias
whatever the query, noisy ones must not; failures are repaired (the answer sentence inserted, or the
alias redacted). `contains_answer` / `doc_contains_answer` are also the answer-in-results measure."""

from __future__ import annotations

import string
import unicodedata
from typing import Sequence

from zerosearch_env.rewards import normalize_answer
from zerosearch_env.search.base import Document, SearchRequest
from zerosearch_env.search.knowledge import mentions
from zerosearch_env.search.simulator.noise import USEFUL
from zerosearch_env.search.simulator.parsing import _truncate, default_title, doc_id

REDACTED = "[redacted]"

def _alias_tokens(answers: Sequence[str]) -> list[list[str]]:
    out, seen = [], set()
    for a in answers:
        toks = normalize_answer(a).split() if isinstance(a, str) else []
        if toks and tuple(toks) not in seen:
            seen.add(tuple(toks))
            out.append(toks)
    return out


def doc_contains_answer(doc: Document, answers: Sequence[str]) -> bool:
    """True when a gold alias occurs, as a whole token sequence, in the title or text (the one
    answer-containment rule of the project: `knowledge.mentions`)."""
    return mentions(f"{doc.title}\n{doc.text}", answers)


def contains_answer(docs: Sequence[Document], answers: Sequence[str]) -> bool:
    """True when any document contains a gold alias (see `doc_contains_answer`)."""
    return any(doc_contains_answer(d, answers) for d in docs)


def gate_passes(docs: Sequence[Document], answers: Sequence[str], mode: str) -> bool:
    """Useful results must contain an alias somewhere; noisy results must contain none."""
    found = contains_answer(docs, answers)
    return found if mode == USEFUL else not found


_PUNCT_CHARS = set(string.punctuation) | {"\u2018", "\u2019", "\u201c", "\u201d", "\u2013", "\u2014"}


def _normalized_tokens_with_spans(text: str) -> list[tuple[str, int, int]]:
    """`normalize_answer`'s tokens of `text`, each with its (start, end) span in `text`."""
    tokens: list[tuple[str, int, int]] = []
    cur: list[str] = []
    start = end = -1
    for i, ch in enumerate(text):
        piece = unicodedata.normalize("NFKC", ch).lower()
        piece = "".join(c for c in piece if c not in _PUNCT_CHARS)
        if not piece:
            continue  # punctuation vanishes without splitting a token, as in normalize_answer
        for c in piece:
            if c.isspace():
                if cur:
                    tokens.append(("".join(cur), start, end))
                    cur = []
            else:
                if not cur:
                    start = i
                cur.append(c)
                end = i + 1
    if cur:
        tokens.append(("".join(cur), start, end))
    return [t for t in tokens if t[0] not in ("a", "an", "the")]


def redact_answers(text: str, answers: Sequence[str], placeholder: str = REDACTED) -> str:
    """Replace every occurrence of a gold alias (matched after normalisation) with `placeholder`."""
    aliases = sorted(_alias_tokens(answers), key=len, reverse=True)
    if not aliases or not text:
        return text
    toks = _normalized_tokens_with_spans(text)
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(toks):
        for a in aliases:
            n = len(a)
            if [t[0] for t in toks[i:i + n]] == a:
                spans.append((toks[i][1], toks[i + n - 1][2]))
                i += n
                break
        else:
            i += 1
    for s, e in reversed(spans):
        text = text[:s] + placeholder + text[e:]
    return text


def answer_sentence(request: SearchRequest) -> str:
    """The sentence a repair inserts into a useful result."""
    answer = request.answers[0]
    if request.question:
        q = " ".join(request.question.split()).rstrip("?. ")
        return f"The answer to \"{q}\" is {answer}."
    return f"The answer is {answer}."


def repair(docs: list[Document], request: SearchRequest, mode: str, max_doc_chars: int) -> list[Document]:
    """Make a failing result pass the gate.

    Useful: the answer sentence goes at the front of the first document (a new document titled by
    the query when there is none), so truncation cannot cut it. Noisy: every alias is redacted from
    titles and texts; a document that would still leak (exotic unicode) is dropped.
    """
    if mode == USEFUL:
        sentence = answer_sentence(request)
        if not docs:
            title = default_title(request.query)
            text = _truncate(sentence, max_doc_chars)
            return [Document(id=doc_id(title, text), title=title, text=text)]
        first = docs[0]
        text = _truncate(f"{sentence} {first.text}", max_doc_chars)
        return [Document(id=doc_id(first.title, text), title=first.title, text=text), *docs[1:]]
    out = []
    for d in docs:
        title = redact_answers(d.title, request.answers)
        text = redact_answers(d.text, request.answers)
        fixed = Document(id=doc_id(title, text), title=title, text=text)
        if not doc_contains_answer(fixed, request.answers):
            out.append(fixed)
    return out
