"""The verification gate of the grounded simulator: results are checked against the request's
`Knowledge`, never against the final answer alone.

- leakage: the final answer (the gold aliases) appears only where `knowledge.reached_answer` is
  True, and never in a noisy result;
- no document copies the prompt ("The search index holds these facts ...", a small model's habit);
- consistency: no document states a fact about a known entity that contradicts the world
  (`consistency.contradictions`);
- support (useful results): every sentence is made of the knowledge's words and ties each name
  after a preposition to a fact (`support.unsupported`; the world is closed, so the rest is invented);
- relevance (useful results): a document names a queried entity (`knowledge.entities`) or states
  the answer hint, when the knowledge has either; and where the query reached the answer, a
  document states it.

A result that still fails after the regenerations is replaced by `fallback_documents`, written
from the knowledge's facts alone (no engine call); with the simulator's `fallback_unit="document"`
only its documents that fail a per-document check are (`mixed_documents`; the mix must still pass
`check`, so it is held to the same gate). Untitled documents, and documents titled with the query,
are titled from the knowledge's articles (`title_documents`), never with the query.
"""

from __future__ import annotations

from typing import Sequence

from zerosearch_env.search.base import Document
from zerosearch_env.search.knowledge import GENERIC_WORDS, STOPWORDS, Fact, Knowledge, mentions, name_tokens
from zerosearch_env.search.simulator.consistency import contradictions
from zerosearch_env.search.simulator.noise import NOISY
from zerosearch_env.search.simulator.parsing import _truncate, doc_id
from zerosearch_env.search.simulator.support import unsupported

GATE_VERSION = "gate-v2"  # in the simulator's identity: a cache filled under another gate is not reused
LEAK, ECHO, CONSISTENCY, UNSUPPORTED, RELEVANCE, ANSWER_MISSING, ENGINE_FAILURE = (
    "leak", "prompt_echo", "consistency", "unsupported", "relevance", "answer_missing", "engine_failure")
# pieces of `prompts.grounded_messages` that a small model copies into its documents
_PROMPT_PIECES = ("search index holds", "search query:", "searcher is trying to answer", "use exactly this format",
                  "documents of about", "(title: <title>)")


def names_entity(text: str, name: str) -> bool:
    """True when `text` names the entity `name`: all its content tokens in a row, or one of its
    distinctive tokens (4+ characters, not a stop or category word: "Pezold" for "Fymvu Pezold")."""
    tokens = name_tokens(text)
    content = [t for t in name_tokens(name) if t not in STOPWORDS]
    if not content:
        return False
    n = len(content)
    if any(tokens[i:i + n] == content for i in range(len(tokens) - n + 1)):
        return True
    present = set(tokens)
    return any(len(t) >= 4 and t not in GENERIC_WORDS and t in present for t in content)


def _doc_text(doc: Document) -> str:
    return f"{doc.title}\n{doc.text}"


def _fails(reason: str, text: str, knowledge: Knowledge, mode: str) -> bool:
    """Whether one document's text fails the check `reason` (`LEAK`, `ECHO` or `CONSISTENCY`)."""
    if reason == LEAK:
        return (mode == NOISY or knowledge.reached_answer is False) and mentions(text, knowledge.answers)
    if reason == ECHO:
        return any(piece in text.lower() for piece in _PROMPT_PIECES)
    return bool(contradictions(text, knowledge))


def check(docs: Sequence[Document], knowledge: Knowledge, mode: str) -> str | None:
    """The first check a result fails (`LEAK`, `ECHO`: a document copies the prompt, `CONSISTENCY`,
    `RELEVANCE`, `UNSUPPORTED`, `ANSWER_MISSING`), or None when it passes."""
    texts = [_doc_text(d) for d in docs]
    for reason in (LEAK, ECHO, CONSISTENCY):
        if any(_fails(reason, t, knowledge, mode) for t in texts):
            return reason
    if mode == NOISY:
        return None
    if knowledge.entities or knowledge.answer_hint:
        named = any(names_entity(t, e) for t in texts for e in knowledge.entities)
        hinted = knowledge.answer_hint is not None and any(mentions(t, [knowledge.answer_hint]) for t in texts)
        if not (named or hinted):
            return RELEVANCE
    if unsupported(texts, knowledge):
        return UNSUPPORTED
    if knowledge.reached_answer and knowledge.answers and not any(mentions(t, knowledge.answers) for t in texts):
        return ANSWER_MISSING
    return None


def document_fails(doc: Document, knowledge: Knowledge, mode: str) -> bool:
    """True when `doc` alone fails a check that concerns each document (leak, prompt echo,
    consistency and, for useful results, support); relevance and the reached answer concern the
    whole result and are left to `check`."""
    text = _doc_text(doc)
    if any(_fails(reason, text, knowledge, mode) for reason in (LEAK, ECHO, CONSISTENCY)):
        return True
    return mode != NOISY and bool(unsupported([text], knowledge))


def mixed_documents(docs: Sequence[Document], knowledge: Knowledge, mode: str, k: int,
                    max_doc_chars: int) -> tuple[list[Document], int] | None:
    """The per-document fallback: the engine's documents that pass alone (first), then fallback
    documents for the articles they leave out, at most `k`; (documents, how many the engine wrote).
    None when no engine document passes or the mixed result still fails `check` (then the whole
    result falls back)."""
    kept = [d for d in docs if not document_fails(d, knowledge, mode)][:k]
    if not kept:
        return None
    titles = {tuple(name_tokens(d.title)) for d in kept}
    fill = [d for d in fallback_documents(knowledge, mode, k, max_doc_chars)
            if tuple(name_tokens(d.title)) not in titles]
    mixed = (kept + fill)[:k]
    return (mixed, len(kept)) if check(mixed, knowledge, mode) is None else None


def _same_text(a: str, b: str) -> bool:
    return name_tokens(a) == name_tokens(b)


def _title_for(body: str, knowledge: Knowledge, query: str) -> str:
    """A title for an untitled document: the first of the knowledge's articles and entities the body
    names, else the body's opening words (unless they are the query's)."""
    for name in dict.fromkeys([*(f.source for f in knowledge.facts), *knowledge.entities]):
        if names_entity(body, name):
            return name
    opening = _truncate(" ".join(body.split()[:6]).strip(" .,;:!?\"'"), 80)
    query_tokens = name_tokens(query)
    if opening and not (query_tokens and name_tokens(opening)[: len(query_tokens)] == query_tokens):
        return opening
    return "Untitled"


def title_documents(segments: Sequence[tuple[str | None, str]], knowledge: Knowledge, query: str) -> list[Document]:
    """Documents from parsed (title or None, body) pairs; a missing title, or one that repeats the
    query (and is not one of the knowledge's article titles), is replaced by `_title_for`."""
    articles = {f.source for f in knowledge.facts} | set(knowledge.entities)
    docs = []
    for title, body in segments:
        if not title or (_same_text(title, query) and title not in articles):
            title = _title_for(body, knowledge, query)
        docs.append(Document(id=doc_id(title, body), title=title, text=body))
    return docs


def _by_source(facts: Sequence[Fact], k: int, max_doc_chars: int) -> list[Document]:
    groups: dict[str, list[str]] = {}
    for f in facts:
        groups.setdefault(f.source, []).append(f.sentence)
    docs = []
    for title, sentences in list(groups.items())[:k]:
        text = _truncate(" ".join(sentences), max_doc_chars)
        docs.append(Document(id=doc_id(title, text), title=title, text=text))
    return docs


def fallback_documents(knowledge: Knowledge, mode: str, k: int, max_doc_chars: int) -> list[Document]:
    """Documents written from the knowledge's facts alone, one per article, at most `k`.

    Useful: every fact, grouped by the article that states it (the answer is there exactly where
    the query reached it). Noisy: only the facts of the reached articles that involve no queried
    entity and do not state the answer. No facts (a garbage query, `answer_hint`, `none`): no
    documents.
    """
    facts = list(knowledge.facts)
    if mode == NOISY:
        facts = [f for f in facts
                 if not any(names_entity(f"{f.subject} {f.object}", e) for e in knowledge.entities)
                 and not mentions(f.sentence, knowledge.answers)]
    return _by_source(facts, k, max_doc_chars)
