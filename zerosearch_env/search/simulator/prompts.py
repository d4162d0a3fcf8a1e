"""The prompts the simulator sends its engine: `grounded_messages` (written from a `Knowledge`)
and `build_messages` (the oracle ablation's: the gold answer whatever the query)."""

from __future__ import annotations

from zerosearch_env.engines.base import Message
from zerosearch_env.search.base import SearchRequest
from zerosearch_env.search.knowledge import Knowledge
from zerosearch_env.search.simulator.noise import USEFUL

PROMPT_VERSION = "sim-v1"  # the oracle ablation's prompt
GROUNDED_PROMPT_VERSION = "sim-v2"

_SYSTEM = (
    "You are a web search engine. For a search query you write the result documents the engine "
    "returns: short, factual-sounding encyclopedia or news passages. Output only the documents."
)


def _format_lines(k: int) -> list[str]:
    return ["Use exactly this format, one document per line:",
            *(f"Doc {i} (Title: <title>) <text>" for i in range(1, min(k, 3) + 1))]


def build_messages(request: SearchRequest, mode: str, k: int, words_per_doc: int) -> list[Message]:
    """The chat prompt asking for `k` documents of about `words_per_doc` words in `mode`."""
    lines = [f"Search query: {request.query}"]
    if request.question:
        lines.append(f"The searcher is trying to answer: {request.question}")
    if mode == USEFUL:
        if request.answers:
            lines.append(f"The correct answer is: {request.answers[0]}")
            task = (f"Write {k} documents of about {words_per_doc} words each that are relevant to the query. "
                    f"At least one document must clearly state that the answer is {request.answers[0]}.")
        else:
            task = f"Write {k} documents of about {words_per_doc} words each that are relevant to the query."
    else:
        task = (f"Write {k} documents of about {words_per_doc} words each that look relevant to the query "
                "but do not contain the answer to the question: mention related names, places and dates, "
                "never the answer itself.")
    lines.append(task)
    lines.extend(_format_lines(k))
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n".join(lines)}]



def grounded_messages(request: SearchRequest, knowledge: Knowledge, mode: str, k: int,
                      words_per_doc: int) -> list[Message]:
    """The chat prompt asking for `k` documents for `request`, written from `knowledge` only.

    Useful: what a good engine returns for this query, built from the knowledge's fact sentences,
    each document titled with its article; the question and the answer hint appear only where the
    knowledge gives them. Noisy: plausible documents around the query that state none of those
    facts; never the answer hint.
    """
    lines = [f"Search query: {request.query}"]
    if knowledge.question:
        lines.append(f"The searcher is trying to answer: {knowledge.question}")
    names = ", ".join(knowledge.entities)
    if mode == USEFUL:
        if knowledge.facts:
            articles = ", ".join(dict.fromkeys(f.source for f in knowledge.facts))
            lines.append(f"The search index holds these facts for the query (from the articles: {articles}):")
            lines.extend(f"- {s}" for s in knowledge.sentences)
            task = (f"Write {k} documents of about {words_per_doc} words each, as a search engine returns them "
                    "for this query: encyclopedia passages built from these facts, each titled with the article "
                    "it comes from. Do not add other facts about these names.")
        else:
            about = f" about {names}" if names else ""
            task = f"Write {k} documents of about {words_per_doc} words each that are relevant to the query{about}."
        if knowledge.answer_hint:
            lines.append(f"The correct answer is: {knowledge.answer_hint}")
            task += f" At least one document must clearly state that the answer is {knowledge.answer_hint}."
    else:
        avoid = f" and state no facts about {names}" if names else ""
        task = (f"Write {k} documents of about {words_per_doc} words each that look related to the query but "
                f"do not help: mention related names, places and dates{avoid}"
                + (", and do not answer the question." if knowledge.question else "."))
    lines.append(task)
    lines.extend(_format_lines(k))
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n".join(lines)}]
