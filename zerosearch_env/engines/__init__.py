"""LLM engines for the simulator: local transformers, any OpenAI-compatible server, in-process vLLM."""

from __future__ import annotations

import importlib
from typing import Any

from zerosearch_env.engines.base import LLMEngine, Message, SamplingParams

_LAZY = {
    "TransformersEngine": "zerosearch_env.engines.transformers_engine",
    "OpenAIEngine": "zerosearch_env.engines.openai_engine",
    "VLLMEngine": "zerosearch_env.engines.vllm_engine",
    "EngineError": "zerosearch_env.engines.openai_engine",
}
__all__ = ["LLMEngine", "Message", "SamplingParams", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zerosearch_env.engines' has no attribute {name!r}")
