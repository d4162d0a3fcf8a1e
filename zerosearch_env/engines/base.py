"""The LLM engine interface: batched, seeded chat generation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Sampling settings shared by every engine. `seed` makes a batch reproducible; engines derive
    one seed per prompt from it (`seed + index`) so results do not depend on batch composition
    where the engine allows that."""

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
    def generate(self, conversations: Sequence[Sequence[Message]], params: SamplingParams | None = None) -> list[str]: ...

    async def agenerate(self, conversations: Sequence[Sequence[Message]], params: SamplingParams | None = None) -> list[str]:
        import asyncio

        return await asyncio.to_thread(self.generate, conversations, params)

    def close(self) -> None:
        """Release resources."""
