"""The simulator's per-call randomness: the useful/noisy draw and per-request sampling seeds.

Both are blake2b hashes of what identifies the call or the request, never Python's salted `hash()`,
so they are the same in every process.
"""

from __future__ import annotations

import hashlib
import json

USEFUL, NOISY = "useful", "noisy"

def noise_uniform(seed: int, episode_id: str, search_index: int, query: str = "") -> float:
    """A uniform number in [0, 1) from blake2b of (seed, episode_id, search_index).

    Requests without an episode id (direct `search` calls) are keyed by their query instead, so two
    different anonymous queries do not share one draw; the retrieval server gives every call
    without one a unique id (`server.with_call_id`), so a repeated query draws again. Never uses
    Python's salted `hash()`.
    """
    key = episode_id if episode_id else "\x00query:" + query
    digest = hashlib.blake2b(f"{int(seed)}\x1f{key}\x1f{int(search_index)}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / float(1 << 64)


def draw_mode(p_noisy: float, seed: int, episode_id: str, search_index: int, query: str = "") -> str:
    """"noisy" when the call's uniform draw falls below `p_noisy`, else "useful"."""
    return NOISY if noise_uniform(seed, episode_id, search_index, query) < p_noisy else USEFUL


def request_seed(seed: int, sampling_seed: int, key_fields: tuple, attempt: int) -> int:
    """The sampling seed of one request's generation round: 63 bits of blake2b over the simulator's
    seed, the sampling seed, the request's `cache_key_fields` (what its documents are written from:
    query, top_k, mode, question, gold answers) and the regeneration round. Not the episode, the
    step or the position in the batch, so a request's documents do not depend on the batch it
    shares and a cache's de-duplication changes nothing. Never uses Python's salted `hash()`."""
    blob = json.dumps([int(seed), int(sampling_seed), list(key_fields), int(attempt)], ensure_ascii=False,
                      separators=(",", ":"))
    return int.from_bytes(hashlib.blake2b(blob.encode("utf-8"), digest_size=8).digest(), "big") >> 1
