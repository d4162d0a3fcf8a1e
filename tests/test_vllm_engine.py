"""VLLMEngine: a clear error where vLLM is absent; real generation where it is installed."""

from __future__ import annotations

import importlib.util

import pytest

from zerosearch_env.engines import SamplingParams

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed: the missing-extra error cannot be shown")
def test_missing_vllm_names_the_extra():
    from zerosearch_env.engines import VLLMEngine

    with pytest.raises(ImportError, match=r"zerosearch-env\[vllm\]"):
        VLLMEngine()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed (pip install 'zerosearch-env[vllm]')")
def test_vllm_engine_order_and_seeds():
    from zerosearch_env.engines import VLLMEngine

    eng = VLLMEngine(max_model_len=1024, dtype="float32")
    convs = [[{"role": "user", "content": f"Name the number {i}."}] for i in range(4)]
    p = SamplingParams(max_new_tokens=16, temperature=0.8, seed=1)
    a, b = eng.generate(convs, p), eng.generate(convs, p)
    assert a == b and len(a) == 4
    alone = eng.generate(convs[2:3], SamplingParams(max_new_tokens=16, temperature=0.8, seed=3))
    assert alone[0] == a[2]
    greedy = eng.generate([[{"role": "user", "content": "What is the capital of France?"}]],
                          SamplingParams(max_new_tokens=12, temperature=0))
    assert "Paris" in greedy[0]
