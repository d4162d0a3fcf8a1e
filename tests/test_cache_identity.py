"""A search cache never serves one model's documents for another: engines are named by the resolved
model folder, a fingerprint of its files (or of the weights in memory) and the dtype; and a cache hit
reports the current call's noise probability, not the one of the call that filled the entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from curricula import ConstantCurriculum
from tests.conftest import build_tiny_llama
from zerosearch_env.engines import LLMEngine, SamplingParams, TransformersEngine
from zerosearch_env.search import SearchRequest
from zerosearch_env.search.cache import CachedSearch
from zerosearch_env.search.simulator import SimulatedSearch

REQUEST = SearchRequest("birthplace of person 0", top_k=2, question="Where was person 0 born?",
                        answers=("Velmora Quintesse",), episode_id="ep-0")
SAMPLING = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=1.0, seed=0)


def _cached(engine: LLMEngine, db: Path, curriculum=None) -> CachedSearch:
    sim = SimulatedSearch(engine, curriculum=curriculum or ConstantCurriculum(0.0), gate=False, words_per_doc=4, sampling=SAMPLING)
    return CachedSearch(sim, db)


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    return (build_tiny_llama(root / "run_a" / "checkpoint", seed=0),
            build_tiny_llama(root / "run_b" / "checkpoint", seed=1))


def test_two_models_in_folders_with_the_same_name_do_not_share_cache_entries(two_checkpoints, tmp_path):
    a_dir, b_dir = two_checkpoints
    a = TransformersEngine(a_dir, dtype="float32")
    b = TransformersEngine(b_dir, dtype="float32")
    assert a.name != b.name
    db = tmp_path / "cache.sqlite"
    cache_a, cache_b = _cached(a, db), _cached(b, db)
    assert cache_a.key_of(REQUEST) != cache_b.key_of(REQUEST)
    (docs_a,), (info_a,) = cache_a.search_with_info([REQUEST])
    (docs_b,), (info_b,) = cache_b.search_with_info([REQUEST])
    assert info_a["cache"] == "miss" and info_b["cache"] == "miss" and docs_a != docs_b
    # the same folder, same settings: the same identity (a new process would hit)
    assert TransformersEngine(a_dir, dtype="float32").name == a.name


def test_rewritten_weights_in_the_same_folder_change_the_identity(tmp_path):
    folder = build_tiny_llama(tmp_path / "checkpoint", seed=0)
    before = TransformersEngine(folder, dtype="float32").name
    build_tiny_llama(folder, seed=5)
    assert TransformersEngine(folder, dtype="float32").name != before


def test_dtype_is_part_of_the_identity(two_checkpoints, tmp_path):
    a_dir, _ = two_checkpoints
    fp32, bf16 = TransformersEngine(a_dir, dtype="float32"), TransformersEngine(a_dir, dtype="bfloat16")
    assert fp32.name != bf16.name and "float32" in fp32.name and "bfloat16" in bf16.name
    db = tmp_path / "cache.sqlite"
    assert _cached(fp32, db).key_of(REQUEST) != _cached(bf16, db).key_of(REQUEST)


def test_shared_model_objects_are_named_by_their_weights(two_checkpoints):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a_dir, _ = two_checkpoints
    tok = AutoTokenizer.from_pretrained(a_dir)
    first = AutoModelForCausalLM.from_pretrained(a_dir, dtype=torch.float32)
    second = AutoModelForCausalLM.from_pretrained(a_dir, dtype=torch.float32)
    assert TransformersEngine(model_obj=first, tokenizer_obj=tok).name == \
        TransformersEngine(model_obj=second, tokenizer_obj=tok).name
    with torch.no_grad():
        next(second.parameters()).add_(0.01)  # e.g. a policy snapshot after a training step
    assert TransformersEngine(model_obj=first, tokenizer_obj=tok).name != \
        TransformersEngine(model_obj=second, tokenizer_obj=tok).name


class _Echo(LLMEngine):
    name = "echo"

    def generate(self, conversations, params=None, *, seeds=None):
        return ["Doc 1 (Title: T) some text about it." for _ in conversations]


class _Rising:
    """p(noisy) = 0.001 * step: the request's draw stays useful, the probability moves."""

    def probability(self, step: int) -> float:
        return 0.001 * step


def test_a_cache_hit_reports_the_current_calls_noise_probability(tmp_path):
    cache = _cached(_Echo(), tmp_path / "cache.sqlite", curriculum=_Rising())
    (_,), (miss,) = cache.search_with_info([REQUEST])
    assert miss["cache"] == "miss" and miss["mode"] == "useful" and miss["p_noisy"] == 0.0
    cache.set_training_step(5)
    (_,), (hit,) = cache.search_with_info([REQUEST])
    assert hit["cache"] == "hit" and hit["mode"] == "useful" and hit["p_noisy"] == pytest.approx(0.005)
    # two calls with the same key in one batch, from different steps: each reports its own
    late = SearchRequest(REQUEST.query, REQUEST.top_k, REQUEST.question, REQUEST.answers, episode_id="ep-0", step=9)
    fresh = SearchRequest("another query", 2, REQUEST.question, REQUEST.answers, episode_id="ep-1", step=0)
    fresh_late = SearchRequest("another query", 2, REQUEST.question, REQUEST.answers, episode_id="ep-1", step=7)
    _, infos = cache.search_with_info([late, fresh, fresh_late])
    assert [i["cache"] for i in infos] == ["hit", "miss", "miss"]
    assert [i["p_noisy"] for i in infos] == pytest.approx([0.009, 0.0, 0.007])
