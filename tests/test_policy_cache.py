"""Keys/values kept across turns (`Policy.generate_turns(..., cache_keys=...)`) change the cost of a
turn, never its result: the same tokens and log-probabilities as a fresh pass over the transcript."""

from __future__ import annotations

import pytest
import torch

from agents.policy import Policy
from tests.train_helpers import tiny_model, tiny_tokenizer

ENV_TEXT = ["<information>Doc 1 (Title: Ab) Ab was born in Cd.</information>", "<information>nothing</information>"]


def _two_turns(policy: Policy, keys, greedy: bool, seed: int):
    gen = torch.Generator().manual_seed(seed)
    ctx = [policy.prompt_ids("Question: where was Ab born?"), policy.prompt_ids("Question: who wrote Ef, and when?"),
           policy.prompt_ids("Q?")]
    first = policy.generate_turns(ctx, greedy=greedy, generator=gen, cache_keys=keys)
    # the episodes go on with environment feedback of different lengths; the last one ends
    nxt = [c + t.ids + policy.encode(e) for c, t, e in zip(ctx, first, ENV_TEXT)]
    second = policy.generate_turns(nxt, greedy=greedy, generator=gen, cache_keys=None if keys is None else keys[:2])
    return first, second


@pytest.mark.parametrize("greedy", [True, False])
def test_kept_cache_gives_the_same_turns_as_fresh_passes(greedy):
    model, tok = tiny_model(seed=4), tiny_tokenizer()
    fresh = Policy(model, tok, max_new_tokens=10, temperature=0.9)
    kept = Policy(model, tok, max_new_tokens=10, temperature=0.9)
    a1, a2 = _two_turns(fresh, None, greedy, seed=3)
    b1, b2 = _two_turns(kept, ["e0", "e1", "e2"], greedy, seed=3)
    assert sorted(kept._kv) == ["e0", "e1", "e2"]
    assert kept.cache_stats["hits"] == 2 and fresh.cache_stats["hits"] == 0  # the second turn started from the cache
    assert kept.cache_stats["computed_tokens"] < fresh.cache_stats["computed_tokens"]
    for x, y in zip(a1 + a2, b1 + b2):
        assert x.ids == y.ids and x.finish == y.finish
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)
    # what is kept covers the context and every fed token (the last sampled one is never fed)
    held, _ = kept._kv["e2"]
    assert len(held) == len(kept.prompt_ids("Q?")) + len(b1[2].ids) - 1
    kept.forget(["e0"])
    assert "e0" not in kept._kv
    kept.forget()
    assert not kept._kv


def test_a_context_that_does_not_extend_the_kept_ids_is_computed_afresh():
    model, tok = tiny_model(seed=6), tiny_tokenizer()
    policy = Policy(model, tok, max_new_tokens=6)
    ctx = policy.prompt_ids("Question: where was Ab born?")
    policy.generate_turns([ctx], greedy=True, cache_keys=["k"])
    other = policy.prompt_ids("Question: something else entirely")
    with_key = policy.generate_turns([other], greedy=True, cache_keys=["k"])[0]
    without = Policy(model, tok, max_new_tokens=6).generate_turns([other], greedy=True)[0]
    assert with_key.ids == without.ids
    assert with_key.logprobs == pytest.approx(without.logprobs, abs=1e-4)
    with pytest.raises(ValueError, match="one cache key per context"):
        policy.generate_turns([ctx, other], cache_keys=["k"])


def test_the_kept_cache_stays_within_its_token_budget():
    model, tok = tiny_model(seed=6), tiny_tokenizer()
    policy = Policy(model, tok, max_new_tokens=4, cache_token_budget=60)
    for i in range(6):
        policy.generate_turns([policy.prompt_ids(f"Question number {i}?")], greedy=True, cache_keys=[f"k{i}"])
    held = sum(len(ids) for ids, _ in policy._kv.values())
    assert all(len(ids) < 60 for ids, _ in policy._kv.values())  # so the budget is what limits the store
    assert 1 < len(policy._kv) < 6 and held <= 60
    assert "k5" in policy._kv and "k0" not in policy._kv  # the oldest go first


def test_fresh_episodes_start_from_the_prompt_prefix_they_share():
    model, tok = tiny_model(seed=8), tiny_tokenizer()
    head = "Answer the question below. You may search as often as you need. To search, write a query. "
    prompts = [head + q for q in ("Question: where was Ab born?", "Question: who founded Cd?", "Q: which river?")]
    kept, fresh = Policy(model, tok, max_new_tokens=8), Policy(model, tok, max_new_tokens=8)
    ctx = [kept.prompt_ids(p) for p in prompts]
    a = fresh.generate_turns(ctx, greedy=True)
    b = kept.generate_turns(ctx, greedy=True, cache_keys=["x", "y", "z"])
    shared_ids, _ = kept._shared
    assert len(shared_ids) >= 16 and all(c[:len(shared_ids)] == shared_ids for c in ctx)
    assert kept.cache_stats["hits"] == 3
    for x, y in zip(a, b):
        assert x.ids == y.ids and x.logprobs == pytest.approx(y.logprobs, abs=1e-4)
    kept.forget()
    assert kept._shared is None and not kept._kv
