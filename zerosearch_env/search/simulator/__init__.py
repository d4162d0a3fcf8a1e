"""`SimulatedSearch`: an LLM writes the search results (the ZeroSearch idea), with a noise
curriculum and a verification gate.

The package, one piece per module: `noise` (the per-call useful/noisy draw and sampling seeds),
`prompts` (what the engine is asked), `parsing` (generated text -> documents), `gate` (the
verification gate and its repair), `backend` (`SimulatedSearch` itself and `make_engine`).
"""

from zerosearch_env.search.simulator.backend import SimulatedSearch, make_engine
from zerosearch_env.search.simulator.gate import (REDACTED, answer_sentence, contains_answer, doc_contains_answer,
                                                  gate_passes, redact_answers, repair)
from zerosearch_env.search.simulator.noise import NOISY, USEFUL, draw_mode, noise_uniform, request_seed
from zerosearch_env.search.simulator.parsing import default_title, doc_id, parse_documents
from zerosearch_env.search.simulator.prompts import PROMPT_VERSION, build_messages

__all__ = ["SimulatedSearch", "make_engine", "REDACTED", "answer_sentence", "contains_answer", "doc_contains_answer",
           "gate_passes", "redact_answers", "repair", "NOISY", "USEFUL", "draw_mode", "noise_uniform",
           "request_seed", "default_title", "doc_id", "parse_documents", "PROMPT_VERSION", "build_messages"]
