"""The prompts the simulator sends its engine."""

from __future__ import annotations

from zerosearch_env.engines.base import Message
from zerosearch_env.search.base import SearchRequest
from zerosearch_env.search.simulator.noise import USEFUL

PROMPT_VERSION = "sim-v1"

_SYSTEM = (
    "You are a web search engine. For a search query you write the result documents the engine "
    "returns: short, factual-sounding encyclopedia or news passages. Output only the documents."
)


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
    lines.append("Use exactly this format, one document per line:")
    lines.extend(f"Doc {i} (Title: <title>) <text>" for i in range(1, min(k, 3) + 1))
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n".join(lines)}]
