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


def test_vllm_cpu_venv_failure_is_remembered_with_reason(tmp_path):
    import os
    import time

    from zerosearch_env.engines.vllm_server import VLLMServer, VLLMUnavailable, vllm_cpu_venv

    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".zerosearch-failed").write_text("pip install failed: no network\n")
    with pytest.raises(VLLMUnavailable, match="no network"):
        vllm_cpu_venv(venv)
    # an old failure is not held against a new attempt; with build=False that attempt says so
    old = time.time() - 7 * 3600
    os.utime(venv / ".zerosearch-failed", (old, old))
    with pytest.raises(VLLMUnavailable, match="build=False"):
        vllm_cpu_venv(venv, build=False)
    server = VLLMServer("/models/x", venv=venv, port=12345, max_model_len=1024)
    cmd = server.command(venv)
    assert server.base_url == "http://127.0.0.1:12345/v1"
    assert cmd[:3] == [str(venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server"]
    assert "--no-enable-chunked-prefill" in cmd and "--enforce-eager" in cmd
    assert cmd[cmd.index("--dtype") + 1] == server.resolved_dtype() in ("bfloat16", "float32")
    fp32 = VLLMServer("/models/x", venv=venv, port=12345, dtype="float32").command(venv)
    assert fp32[fp32.index("--dtype") + 1] == "float32"
    with pytest.raises(ValueError, match="dtype"):
        VLLMServer("/models/x", venv=venv, dtype="fp8")
