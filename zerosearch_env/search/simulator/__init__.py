"""`SimulatedSearch`: an LLM writes the search results (the ZeroSearch idea) from what it knows
about the query (a knowledge source), with a noise curriculum and a verification gate.

The package, one piece per module: `noise` (the per-call useful/noisy draw and sampling seeds),
`prompts` (what the engine is asked), `styles` (the prompt styles: ours, and ZeroSearch's fine-tuned
and one-shot formats), `parsing` (generated text -> documents), `gate` (the
verification gate against the knowledge, and the knowledge fallback), `consistency` (the gate's
hallucination check), `oracle` (the answer-checking gate and repair of the oracle ablation),
`backend` (`SimulatedSearch` itself, `make_engine`, `knowledge_option`). The knowledge sources
are in `zerosearch_env.search.knowledge`.
"""

from zerosearch_env.search.simulator.backend import KNOWLEDGE_OPTIONS, ORACLE, SimulatedSearch, knowledge_option, make_engine
from zerosearch_env.search.simulator.oracle import (REDACTED, answer_sentence, contains_answer, doc_contains_answer,
                                                  gate_passes, redact_answers, repair)
from zerosearch_env.search.simulator.noise import NOISY, USEFUL, draw_mode, noise_uniform, request_seed
from zerosearch_env.search.simulator.parsing import default_title, doc_id, parse_documents
from zerosearch_env.search.simulator.prompts import PROMPT_VERSION, build_messages
from zerosearch_env.search.simulator.styles import PROMPT_STYLES

__all__ = ["SimulatedSearch", "make_engine", "knowledge_option", "KNOWLEDGE_OPTIONS", "ORACLE", "REDACTED", "answer_sentence", "contains_answer", "doc_contains_answer",
           "gate_passes", "redact_answers", "repair", "NOISY", "USEFUL", "draw_mode", "noise_uniform",
           "request_seed", "default_title", "doc_id", "parse_documents", "PROMPT_VERSION", "build_messages",
           "PROMPT_STYLES"]
