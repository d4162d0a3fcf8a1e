"""Parsing an engine's generated text into search-result documents."""

from __future__ import annotations

import hashlib
import re
import unicodedata

from zerosearch_env.search.base import Document

_HEADER = re.compile(
    r"""^[ \t>*_#\-]*
        (?: (?:doc(?:ument)?|result|passage|source|article)[ \t]*\#?[ \t]*(?P<n1>\d{1,3})(?!\d)
          | \[(?P<n2>\d{1,3})\]
          | (?P<n3>\d{1,3})[.):](?!\d)
        )[ \t*_]*""",
    re.IGNORECASE | re.MULTILINE | re.VERBOSE,
)
# "Doc 2: ..." / "Document 2 (Title: ...)" in the middle of a line (small models run documents together)
_INLINE_HEADER = re.compile(r"(?<![\w])(?:doc(?:ument)?)[ \t]*#?[ \t]*(?P<n1>\d{1,3})(?!\d)[ \t*_]*(?=[:(\-\u2013\u2014])",
                            re.IGNORECASE)
_TITLE_PAREN = re.compile(r"^[\s:\-\u2013\u2014|]*\(\s*title\s*:\s*(?P<t>[^)\n]*)\)", re.IGNORECASE)
_TITLE_LABEL = re.compile(r"^[\s:\-\u2013\u2014|]*\**title\**\s*:\s*(?P<t>[^\n]*?)\s*(?:\n|(?=\b(?:text|content|body)\s*:)|$)",
                          re.IGNORECASE)
_TITLE_BOLD = re.compile(r"^[\s:\-\u2013\u2014|]*(?:\*\*|__)(?P<t>[^*_\n]{1,200})(?:\*\*|__)[ \t]*[:\-\u2013\u2014]?", re.IGNORECASE)
_TITLE_HASH = re.compile(r"^\s*#{1,6}[ \t]+(?P<t>[^\n]{1,200})\n")
_BODY_LABEL = re.compile(r"^[\s:\-\u2013\u2014|]*\**(?:text|content|body|snippet)\**\s*:\s*", re.IGNORECASE)
_LEADING_SEP = re.compile(r"^[\s:\-\u2013\u2014|.]+")
_PREAMBLE = re.compile(r"^(?:sure|here (?:are|is)|certainly|of course|okay|ok)\b", re.IGNORECASE)
_PLACEHOLDERS = {"<text>", "<title>", "text", "<title> <text>", "(title: <title>) <text>"}
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*$", re.MULTILINE)


def _clean(text: str) -> str:
    return " ".join(text.replace("**", "").replace("__", "").split())


def _truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut).rstrip()


def _split_title(segment: str, numbered: bool) -> tuple[str | None, str]:
    """(title or None, body) of one document's raw text."""
    for pattern in (_TITLE_PAREN, _TITLE_LABEL, _TITLE_BOLD, _TITLE_HASH):
        m = pattern.match(segment)
        if m and _clean(m.group("t")):
            return _clean(m.group("t")), segment[m.end():]
    if numbered:
        # "Doc 2 - Some Title" on its own line, followed by the body on the next lines
        first, sep, rest = segment.strip().partition("\n")
        first = first.strip(" \t:-\u2013\u2014|")
        if sep and rest.strip() and first and len(first.split()) <= 12 and not first.endswith((".", "!", "?")):
            return _clean(first), rest
    return None, segment


def _is_preamble(paragraph: str) -> bool:
    words = paragraph.split()
    return len(words) < 25 and (paragraph.rstrip().endswith(":") or bool(_PREAMBLE.match(paragraph.strip())))


def _segments(text: str) -> tuple[list[str], bool]:
    """Raw per-document segments and whether the text was numbered."""
    found = {m.start(): m for m in _HEADER.finditer(text)}
    for m in _INLINE_HEADER.finditer(text):
        if not any(h.start() <= m.start() < h.end() for h in found.values()):
            found[m.start()] = m
    headers = [found[pos] for pos in sorted(found)]
    if headers:
        segs = [text[m.end(): (headers[i + 1].start() if i + 1 < len(headers) else len(text))]
                for i, m in enumerate(headers)]
        return segs, True
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", text) if p.strip()]
    if len(paragraphs) == 1:
        lines = [ln for ln in paragraphs[0].splitlines() if ln.strip()]
        if len(lines) > 1 and all(len(ln.split()) >= 8 for ln in lines):
            paragraphs = lines
    return [p for p in paragraphs if not _is_preamble(p)], False


def doc_id(title: str, text: str) -> str:
    """A deterministic id from the document's content."""
    return "sim-" + hashlib.blake2b(f"{title}\n{text}".encode("utf-8"), digest_size=8).hexdigest()


def default_title(query: str) -> str:
    """The title given to a document that has none: the query, cleaned and capped."""
    return _truncate(_clean(query), 80) or "Search result"


def parse_segments(text: str, k: int, max_doc_chars: int = 600) -> list[tuple[str | None, str]]:
    """Parse generated text into at most `k` (title or None, body) pairs, never inventing any.

    Understands "Doc 1: ...", "Doc 1 (Title: T) ...", "Document 1 ...", "1. ...", "1) ...",
    "[1] ...", markdown decorations, "Title: T" lines, bold or heading titles, and unnumbered
    paragraphs (a leading "Here are ...:" preamble is dropped). Too many documents are truncated to
    `k`; too few are returned as they are; empty output gives []. Each body is capped at
    `max_doc_chars`, each title at 200 characters.
    """
    if not isinstance(text, str) or k <= 0:
        return []
    text = _FENCE.sub("", unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n"))
    if not text.strip():
        return []
    segments, numbered = _segments(text)
    out: list[tuple[str | None, str]] = []
    for seg in segments:
        title, body = _split_title(seg, numbered)
        body = _BODY_LABEL.sub("", _LEADING_SEP.sub("", body), count=1)
        body = _truncate(_clean(body), max_doc_chars)
        if not body or body.lower() in _PLACEHOLDERS:
            continue  # empty, or the prompt's format line echoed back
        out.append((_truncate(title, 200) if title and title.lower() not in _PLACEHOLDERS else None, body))
        if len(out) == k:
            break
    return out


def parse_documents(text: str, k: int, query: str = "", max_doc_chars: int = 600) -> list[Document]:
    """`parse_segments` as documents, an untitled one titled with the query (the oracle ablation's
    way; the grounded simulator titles documents from its knowledge instead)."""
    docs = []
    for title, body in parse_segments(text, k, max_doc_chars):
        title = title or default_title(query)
        docs.append(Document(id=doc_id(title, body), title=title, text=body))
    return docs
