"""Prompt styles of the simulator: how a request is put to the engine, and how its output is read.

`SimulatedSearch(prompt_style=...)` (`backend_options.prompt_style`) picks one of `PROMPT_STYLES`:

- "default": our grounded prompt (`prompts.grounded_messages`; `prompts.build_messages` for the
  oracle ablation): a system message and a user message built from the knowledge's facts, with
  titled documents asked for. Unchanged by this module.
- "zerosearch-sft": the input structure that ZeroSearch's fine-tuned simulators (arXiv 2505.04588)
  were trained on, so that a released checkpoint served behind vLLM or SGLang behaves as trained.
  ONE user message, no system message: a line saying the model is a search engine; the task
  (generate five useful or noisy documents for a query); the user's question and its answer as
  context; the length (about 30 words per document) and the kind of information (useful or noisy);
  then `Query: <query>` and the cue `Useful Output:` or `Noisy Output:`.
- "zerosearch-prompt": the un-tuned, one-shot style for a plain instruct model: the same framing,
  one worked example (a demo query answered by five short `Doc i:` lines, useful or noisy as the
  call asks), then the real query and its cue.

Both ZeroSearch styles ask for five documents of about 30 words whatever `top_k` and
`words_per_doc` are (the format the checkpoints learnt); the output is read from its `Doc i:` lines
and cut at `top_k` (so at most five documents come back). Untitled documents are titled as before
(`gate.title_documents` from the knowledge; the query for the oracle ablation), and the gate checks
every result as in the default style.

The context line holds only what the knowledge source gives (`Knowledge.question`,
`Knowledge.answer_hint`): with "answer_hint" the question, and the answer once the query has reached
the answer-bearing article; with "world" and "none" neither (a real engine sees only the query), so
the line is left out and the checkpoint writes from its own memory, which the gate then checks against
the world's facts. The oracle ablation gives the request's question and first gold answer. As in
ZeroSearch's training input, the answer (where given) is in the noisy prompt too, so the model knows
what to leave out; the gate's leakage check rejects any noisy result that states it.

Text from the request (query, question, answer) has its white space folded to single spaces, so a
query cannot start a line of its own (a forged `Useful Output:` cue). Before parsing, a leading cue
echoed by the model is dropped and the output is cut where the model starts another example (a line
opening with `Query:`, `Example` or an output cue); `Doc i:` lines the one-shot example holds, and
copies of the prompt's own lines, are not taken as documents.
"""

from __future__ import annotations

import re

from zerosearch_env.engines.base import Message
from zerosearch_env.search.knowledge import name_tokens
from zerosearch_env.search.simulator.noise import NOISY, USEFUL
from zerosearch_env.search.simulator.parsing import parse_segments

DEFAULT_STYLE = "default"
ZEROSEARCH_SFT = "zerosearch-sft"
ZEROSEARCH_PROMPT = "zerosearch-prompt"
PROMPT_STYLES = (DEFAULT_STYLE, ZEROSEARCH_SFT, ZEROSEARCH_PROMPT)
# in the simulator's identity (a cache filled under another wording is not reused)
STYLE_VERSIONS = {ZEROSEARCH_SFT: "zs-sft-v1", ZEROSEARCH_PROMPT: "zs-prompt-v1"}
ZEROSEARCH_DOCS = 5   # documents the ZeroSearch styles ask for ("five" in their wording)
ZEROSEARCH_WORDS = 30  # words per document they ask for

_DEMO_QUERY = "boiling point of water at sea level"
_DEMO_DOCS = {
    USEFUL: (
        "At sea level pure water boils at 100 degrees Celsius, or 212 degrees Fahrenheit, the temperature at "
        "which its vapour pressure equals the pressure of the surrounding air.",
        "Water boils at a lower temperature at altitude because the air pressure falls: near the summit of "
        "Mount Everest it boils at roughly 70 degrees Celsius.",
        "The Celsius scale was long defined by two fixed points: water freezes at 0 degrees and boils at 100 "
        "degrees under standard atmospheric pressure at sea level.",
        "Dissolving salt in water raises its boiling point a little; the pinch of salt added to a cooking pot "
        "changes it by far less than one degree.",
        "A pressure cooker raises the pressure inside the pot, so the water in it boils at about 120 degrees "
        "Celsius and food cooks faster than in an open pan.",
    ),
    NOISY: (
        "Water covers about 71 percent of the Earth's surface, most of it in the oceans, which hold roughly "
        "97 percent of all the water on the planet.",
        "Electric kettles became common household appliances in the twentieth century; many models switch off "
        "by themselves once steam reaches a sensor near the lid.",
        "Sea level is measured with tide gauges and satellite altimetry, and it has risen by roughly 20 "
        "centimetres since the start of the twentieth century.",
        "Ice is less dense than liquid water, which is why lakes freeze from the top down and fish can survive "
        "the winter beneath the ice.",
        "Steam engines turned the pressure of hot vapour into motion and powered factories, ships and railways "
        "throughout the Industrial Revolution.",
    ),
}
_ROLE = "You act as a web search engine."
_KIND = {USEFUL: "useful", NOISY: "noisy"}
_CUE = {USEFUL: "Useful Output:", NOISY: "Noisy Output:"}
_ONE_SHOT_KIND = {
    USEFUL: "Useful documents hold information that helps answer the query.",
    NOISY: "Noisy documents look related to the query but hold no information that answers it.",
}

# an echoed cue (the rest of its line is kept) or an echoed query line, at the start of the output
_LEADING_ECHO = re.compile(r"^[ \t>*_#]*(?:(?:useful|noisy)\s+output\s*:[ \t]*|query\s*:[^\n]*(?:\n|$))",
                           re.IGNORECASE)
# a line where the model starts another example
_NEXT_EXAMPLE = re.compile(r"^[ \t>*_#]*(?:(?:query|(?:useful|noisy)\s+output)\s*:|example\s*:?[ \t]*$)",
                           re.IGNORECASE | re.MULTILINE)
_ECHO_PIECES = ("you act as a web search engine", "for the query below", "the user wants to answer the question",
                "write each document in about", "useful documents hold information", "noisy documents look related",
                "now the real query")
_DEMO_TOKENS = frozenset(tuple(name_tokens(d)) for docs in _DEMO_DOCS.values() for d in docs)


def check_style(style: object) -> str:
    """`style` when it is one of `PROMPT_STYLES`, else a ValueError naming the choices."""
    if not isinstance(style, str) or style not in PROMPT_STYLES:
        raise ValueError(f"simulator: unknown prompt_style {style!r}; choose one of {', '.join(PROMPT_STYLES)}")
    return style


def _fold(text: str) -> str:
    return " ".join(str(text).split())


def _mode(mode: str) -> str:
    if mode not in _KIND:
        raise ValueError(f"mode must be {USEFUL!r} or {NOISY!r}, got {mode!r}")
    return mode


def _context_line(question: str | None, answer: str | None) -> list[str]:
    question = _fold(question) if question else ""
    answer = _fold(answer) if answer else ""
    if question and answer:
        return [f'Context: the user wants to answer the question "{question}"; its answer is "{answer}".']
    if question:
        return [f'Context: the user wants to answer the question "{question}".']
    if answer:
        return [f'Context: the answer the user is looking for is "{answer}".']
    return []


def zerosearch_sft_messages(query: str, mode: str, question: str | None = None,
                            answer: str | None = None) -> list[Message]:
    """The "zerosearch-sft" prompt for `query` in `mode` ("useful" | "noisy"): one user message
    (see the module docstring); `question` / `answer` only as the knowledge source allows."""
    kind = _KIND[_mode(mode)]
    lines = [_ROLE,
             f"For the query below, generate five {kind} documents.",
             *_context_line(question, answer),
             f"Write each document in about {ZEROSEARCH_WORDS} words, with {kind} information.",
             "",
             f"Query: {_fold(query)}",
             _CUE[mode]]
    return [{"role": "user", "content": "\n".join(lines)}]


def zerosearch_prompt_messages(query: str, mode: str, question: str | None = None,
                               answer: str | None = None) -> list[Message]:
    """The "zerosearch-prompt" one-shot prompt for `query` in `mode`: one user message with a demo
    query answered by five short `Doc i:` lines of the same kind, then the real query."""
    kind = _KIND[_mode(mode)]
    lines = [_ROLE,
             f"For the query below, generate five {kind} documents, one per line, "
             f'numbered "Doc 1:" to "Doc {ZEROSEARCH_DOCS}:". {_ONE_SHOT_KIND[mode]}',
             "",
             "Example",
             f"Query: {_DEMO_QUERY}",
             _CUE[mode],
             *(f"Doc {i}: {doc}" for i, doc in enumerate(_DEMO_DOCS[mode], 1)),
             "",
             "Now the real query.",
             *_context_line(question, answer),
             f"Write each document in about {ZEROSEARCH_WORDS} words, with {kind} information.",
             f"Query: {_fold(query)}",
             _CUE[mode]]
    return [{"role": "user", "content": "\n".join(lines)}]


def style_messages(style: str, query: str, mode: str, question: str | None = None,
                   answer: str | None = None) -> list[Message]:
    """The prompt of a ZeroSearch style ("default" is built by `prompts`, from the knowledge)."""
    if check_style(style) == ZEROSEARCH_SFT:
        return zerosearch_sft_messages(query, mode, question, answer)
    if style == ZEROSEARCH_PROMPT:
        return zerosearch_prompt_messages(query, mode, question, answer)
    raise ValueError("the default style's prompt is built by prompts.grounded_messages / build_messages")


def trim_output(text: str) -> str:
    """`text` without leading echoed `Query: ...` lines and output cues, cut before the model starts
    another example (a later line opening with `Query:` or an output cue, or a line `Example`)."""
    text = text.lstrip()
    while (m := _LEADING_ECHO.match(text)) and m.end():
        text = text[m.end():].lstrip()
    m = _NEXT_EXAMPLE.search(text)
    return text[: m.start()] if m else text


def _is_copy(body: str) -> bool:
    low = body.lower()
    return tuple(name_tokens(body)) in _DEMO_TOKENS or any(piece in low for piece in _ECHO_PIECES)


def style_segments(text: str, k: int, max_doc_chars: int = 600) -> list[tuple[str | None, str]]:
    """At most `k` (title or None, body) pairs from a ZeroSearch style's output: `trim_output`, then
    `parsing.parse_segments` (`Doc i:` lines, untitled), without copies of the demo documents or of
    the prompt's lines."""
    if not isinstance(text, str) or k <= 0:
        return []
    segments = parse_segments(trim_output(text), ZEROSEARCH_DOCS + k, max_doc_chars)
    return [(title, body) for title, body in segments if not _is_copy(body)][:k]
