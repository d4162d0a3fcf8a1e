"""What the simulator writes for a request depends on the request, not on its batch: per-request
seeds from the request's identity, and sampling over the whole vocabulary when top_p = 1."""

from __future__ import annotations

import torch

from curricula import ConstantCurriculum
from zerosearch_env.engines import LLMEngine, SamplingParams, TransformersEngine
from zerosearch_env.engines.transformers_engine import SeededSampler
from zerosearch_env.search import SearchRequest
from zerosearch_env.search.cache import CachedSearch
from zerosearch_env.search.simulator import SimulatedSearch, request_seed


def _request(i: int, episode: str = "") -> SearchRequest:
    return SearchRequest(f"birthplace of person {i}", top_k=2, question=f"Where was person {i} born?",
                         answers=("Velmora Quintesse",), episode_id=episode or f"ep-{i}")


def _simulator(tiny_model_dir) -> SimulatedSearch:
    engine = TransformersEngine(tiny_model_dir, dtype="float32", max_batch_size=4)
    return SimulatedSearch(engine, curriculum=ConstantCurriculum(0.0), seed=3, gate=False, words_per_doc=6,
                           sampling=SamplingParams(max_new_tokens=16, temperature=1.0, top_p=1.0, seed=0))


def test_a_request_gets_the_same_documents_alone_and_in_any_batch(tiny_model_dir):
    sim = _simulator(tiny_model_dir)
    target = _request(0)
    alone = sim.search([target])[0]
    assert alone
    mixed = sim.search([_request(5), _request(6), target, _request(7)])
    reordered = sim.search([_request(8), target])
    # the same request content from another episode, as CachedSearch's de-duplication would send it
    other_episode = sim.search([_request(9), _request(0, episode="another-episode")])
    assert mixed[2] == alone and reordered[1] == alone and other_episode[1] == alone
    assert mixed[0] != alone  # other requests get their own documents


def test_cache_dedup_does_not_change_what_the_simulator_writes(tiny_model_dir, tmp_path):
    plain = _simulator(tiny_model_dir)
    cached = CachedSearch(_simulator(tiny_model_dir), tmp_path / "cache")
    batch = [_request(1), _request(2), _request(1, episode="group-mate"), _request(3)]
    assert cached.search(batch) == plain.search(batch)


def test_request_seed_is_a_stable_hash_of_what_the_cache_keys_on():
    sim = SimulatedSearch(_NoEngine(), curriculum=ConstantCurriculum(0.0), seed=3)
    fields = sim.cache_key_fields(_request(0))
    assert fields == sim.cache_key_fields(_request(0, episode="elsewhere"))
    a = request_seed(3, 0, fields, attempt=0)
    assert a == STABLE_SEED  # the same in every process and Python version (blake2b, not hash())
    noisy = SimulatedSearch(_NoEngine(), curriculum=ConstantCurriculum(1.0), seed=3).cache_key_fields(_request(0))
    other_k = SearchRequest("birthplace of person 0", top_k=3, question="Where was person 0 born?",
                            answers=("Velmora Quintesse",))
    others = {request_seed(4, 0, fields, 0), request_seed(3, 1, fields, 0), request_seed(3, 0, fields, 1),
              request_seed(3, 0, noisy, 0), request_seed(3, 0, sim.cache_key_fields(_request(1)), 0),
              request_seed(3, 0, sim.cache_key_fields(other_k), 0)}
    assert a not in others and len(others) == 6 and all(0 <= x < 2**63 for x in others)


class _NoEngine(LLMEngine):
    def generate(self, conversations, params=None, *, seeds=None):
        raise AssertionError("not called")


STABLE_SEED = 2797792750237367895  # cache_key_fields gained supporting_titles (issue 13)


def _spread_logits(vocab: int = 5000, top: int = 1024) -> torch.Tensor:
    """`top` tokens slightly more likely than each of the others, which together hold ~70% of the mass."""
    logits = torch.full((1, vocab), -0.5)
    logits[0, :top] = 0.0
    return logits


def _sample(sampler: SeededSampler, logits: torch.Tensor) -> int:
    out = sampler(torch.zeros((1, 1), dtype=torch.long), logits.clone())
    assert torch.isfinite(out).sum() == 1
    return int(out.argmax())


def test_top_p_one_samples_the_whole_vocabulary():
    logits = _spread_logits()
    picks = [_sample(SeededSampler([s], 1.0, 1.0), logits) for s in range(200)]
    outside = sum(p >= 1024 for p in picks) / len(picks)
    assert 0.55 < outside < 0.85  # the exact share is 3976 e^-0.5 / (1024 + 3976 e^-0.5) = 0.70


def test_top_p_below_one_is_exact_when_the_nucleus_reaches_past_the_top_1024():
    logits = _spread_logits()
    picks = [_sample(SeededSampler([s], 1.0, 0.9), logits) for s in range(200)]
    assert sum(p >= 1024 for p in picks) > 60  # the 0.9 nucleus holds most of the tail
    peaked = torch.full((1, 5000), -30.0)
    peaked[0, 7] = 5.0
    peaked[0, 11] = 4.0
    assert {_sample(SeededSampler([s], 1.0, 0.5), peaked) for s in range(20)} == {7}


def test_top_p_nucleus_from_a_wider_top_k_matches_the_full_sort():
    # random logits (no ties) whose 0.9 nucleus needs more than 1,024 but fewer than 8,192 of 20,000 tokens
    logits = torch.randn((3, 20000), generator=torch.Generator().manual_seed(0)) * 2.5
    probs = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True).values
    need = int((probs.cumsum(dim=-1) < 0.9).sum(dim=-1).max()) + 1
    assert 1024 < need < 8192

    class FullSort(SeededSampler):
        candidates = ()

    for seed in range(30):
        fast = SeededSampler([seed, seed + 1, seed + 2], 1.0, 0.9)(torch.zeros((3, 1), dtype=torch.long), logits.clone())
        full = FullSort([seed, seed + 1, seed + 2], 1.0, 0.9)(torch.zeros((3, 1), dtype=torch.long), logits.clone())
        assert torch.equal(fast.argmax(dim=-1), full.argmax(dim=-1))
