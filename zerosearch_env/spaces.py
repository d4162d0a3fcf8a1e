"""A text space that admits any unicode string up to a maximum length.

gymnasium's `Text` space only admits a fixed character set (alphanumerics by default), which
rejects ordinary sentences; observations and actions here are free text.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.spaces import Space

# Sampling alphabet: ASCII plus a few scripts and symbols, so samples exercise non-ASCII paths.
_SAMPLE_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"()[]{}<>/-_\n"
    "éüßçøåñ日本語中文한국어العربيةрусскийΕλληνικά🙂"
)


class UnicodeText(Space[str]):
    """Any `str` with `min_length <= len(s) <= max_length`."""

    def __init__(self, max_length: int, min_length: int = 0, seed: int | np.random.Generator | None = None):
        if not 0 <= min_length <= max_length:
            raise ValueError(f"need 0 <= min_length <= max_length, got {min_length}, {max_length}")
        self.max_length = int(max_length)
        self.min_length = int(min_length)
        super().__init__(dtype=str, seed=seed)

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        hi = min(self.max_length, self.min_length + 64)
        n = int(self.np_random.integers(self.min_length, hi + 1))
        idx = self.np_random.integers(0, len(_SAMPLE_ALPHABET), size=n)
        return "".join(_SAMPLE_ALPHABET[i] for i in idx)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"UnicodeText(max_length={self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, UnicodeText) and (other.min_length, other.max_length) == (self.min_length, self.max_length)

    def to_jsonable(self, sample_n):  # type: ignore[override]
        return list(sample_n)

    def from_jsonable(self, sample_n):  # type: ignore[override]
        return list(sample_n)
