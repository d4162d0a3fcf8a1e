"""The LLM engine interface: batched, seeded chat generation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Sampling settings shared by every engine. `seed` makes a batch reproducible; engines derive
    one seed per prompt from it (`seed + index`) unless the caller passes its own per-prompt
    `seeds` (the simulator seeds each request from its content, so its position does not matter)."""

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = 0
    stop: tuple[str, ...] = ()


class LLMEngine(ABC):
    """Turns a batch of chat conversations into one completion text each, in order."""

    #: stable identity for caches and reports (model name, revision)
    name: str = "engine"

    @abstractmethod
    def generate(self, conversations: Sequence[Sequence[Message]], params: SamplingParams | None = None, *,
                 seeds: Sequence[int] | None = None) -> list[str]:
        """One completion per conversation, in order. `seeds` (one per conversation) replaces the
        per-prompt seeds `params.seed + i`."""

    async def agenerate(self, conversations: Sequence[Sequence[Message]], params: SamplingParams | None = None, *,
                        seeds: Sequence[int] | None = None) -> list[str]:
        import asyncio

        return await asyncio.to_thread(lambda: self.generate(conversations, params, seeds=seeds))

    def close(self) -> None:
        """Release resources."""


def row_seeds(params: SamplingParams, n: int, seeds: Sequence[int] | None) -> list[int | None]:
    """The seed of each of `n` prompts: `seeds` when given (exactly one per prompt), else
    `params.seed + i` (None for every prompt when `params.seed` is None)."""
    if seeds is not None:
        if len(seeds) != n:
            raise ValueError(f"got {len(seeds)} seeds for {n} conversations")
        return [int(s) for s in seeds]
    return [None if params.seed is None else params.seed + i for i in range(n)]
