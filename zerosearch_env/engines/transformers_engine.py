"""`TransformersEngine`: batched, seeded chat generation with any local transformers causal LM.

Prompts are rendered with the tokenizer's chat template, left padded, and generated in chunks of
`max_batch_size` (sorted by length to waste little padding, results returned in request order).
Sampling is seeded per prompt: prompt `i` of a call draws from its own generator seeded with
`params.seed + i` (or the caller's `seeds[i]`), so the same seed and prompts give the same texts, and
a prompt's text does not depend on which other prompts share its batch (up to float rounding from
padding). top_p = 1 samples the whole vocabulary (`SeededSampler`). Temperature 0
is greedy decoding. Generation stops at EOS or at the first stop string; the returned text is cut
right after that stop string (kept, as `zerosearch_env.protocol.cut_turn` does).
"""

from __future__ import annotations

import random
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch

from zerosearch_env.engines.base import LLMEngine, Message, SamplingParams, row_seeds
from zerosearch_env.engines.identity import source_identity, weights_identity

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """"auto" -> bfloat16 on CUDA (when supported) or on a CPU with native bf16, else float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        from zerosearch_env.models import cpu_supports_bf16

        return torch.bfloat16 if cpu_supports_bf16() else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'auto', 'float32', 'bfloat16' or 'float16', got {dtype!r}")
    return _DTYPES[dtype]


def validate_conversations(conversations: Sequence[Sequence[Message]]) -> list[list[dict]]:
    """Check the shape of a batch of chat conversations; raise ValueError naming the bad one."""
    if isinstance(conversations, (str, bytes)) or not isinstance(conversations, Sequence):
        raise ValueError("conversations must be a list of message lists")
    out = []
    for i, conv in enumerate(conversations):
        if isinstance(conv, (str, bytes, dict)) or not isinstance(conv, Sequence) or len(conv) == 0:
            raise ValueError(f"conversation {i} must be a non-empty list of messages")
        for m in conv:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError(f"conversation {i}: every message needs string 'role' and 'content', got {m!r}")
        out.append([{"role": m["role"], "content": m["content"]} for m in conv])
    return out


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """Cut `text` right after the stop string that starts earliest (the stop string is kept)."""
    best, end = -1, -1
    for stop in stops:
        i = text.find(stop) if stop else -1
        if i >= 0 and (best < 0 or i < best):
            best, end = i, i + len(stop)
    return text if best < 0 else text[:end]


class SeededSampler:
    """A logits processor that samples (temperature + top-p) from one generator per row and turns
    the scores into a one-hot choice, so greedy decoding emits exactly the sampled token.

    top_p >= 1 samples the whole vocabulary. Below 1 the nucleus is looked for among the
    `candidates` most likely tokens first, 1,024 then 8,192 (sorting SmolLM2's 49,152-token vocabulary
    for 16 rows took 93 ms a step here against 14 ms and 22 ms for those two top-k; a profile of
    `zerosearch fidelity` with only the first size put 15.2 of 23.6 s of generation in the full sort);
    when none holds `top_p` of the mass in every row, the nucleus may reach past them and the whole
    vocabulary is sorted instead, so the result is always the exact top-p distribution.
    """

    candidates: tuple[int, ...] = (1024, 8192)

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float):
        self.generators = [torch.Generator().manual_seed(int(s) % (2**63)) for s in seeds]
        self.temperature = float(temperature)
        self.top_p = float(top_p)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p >= 1.0:
            order, cdf = None, probs.cumsum(dim=-1)
        else:
            order_probs, order = self._nucleus_candidates(probs)
            before = order_probs.cumsum(dim=-1) - order_probs
            cdf = (order_probs * (before < self.top_p)).cumsum(dim=-1)
        cdf = cdf / cdf[:, -1:]
        u = torch.cat([torch.rand(1, generator=g) for g in self.generators]).to(cdf.device, cdf.dtype)
        chosen = torch.searchsorted(cdf, u.unsqueeze(1)).clamp_(max=cdf.shape[-1] - 1)
        if order is not None:
            chosen = order.gather(1, chosen)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen, 0.0)
        return out

    def _nucleus_candidates(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities in descending order and their token ids: the first top-k of `candidates`
        that holds at least `top_p` of every row's mass (then no token beyond it is in the nucleus),
        else the whole sorted vocabulary."""
        for k in self.candidates:
            if k >= probs.shape[-1]:
                break
            top_probs, top_idx = probs.topk(k, dim=-1, sorted=True)
            if bool((top_probs.sum(dim=-1) >= self.top_p).all()):
                return top_probs, top_idx
        return probs.sort(dim=-1, descending=True)


class TransformersEngine(LLMEngine):
    """Chat generation with a local transformers causal LM.

    Args:
        model: a folder or hub id (offline); None -> the default SmolLM2-135M-Instruct.
        device: "cpu", "cuda", "cuda:1", or "auto" (CUDA when present).
        dtype: "auto" | "bfloat16" | "float32" | "float16" (auto: see `resolve_dtype`).
        max_batch_size: prompts per forward batch.
        model_obj / tokenizer_obj: already-loaded model and tokenizer to share (e.g. the frozen
            policy weights); they are used as they are (not moved or cast), and the model is put in
            eval mode only for the duration of a call.
        name: identity for caches; default "transformers:<resolved folder>@<fingerprint>:<dtype>"
            for a folder or hub id, "transformers:memory@<weights hash>:<dtype>" for `model_obj`
            (`zerosearch_env.engines.identity`).
    """

    def __init__(self, model: str | Path | None = None, *, device: str = "cpu", dtype: str | torch.dtype = "auto",
                 max_batch_size: int = 16, model_obj: Any = None, tokenizer_obj: Any = None,
                 name: str | None = None):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.max_batch_size = int(max_batch_size)
        self._lock = threading.Lock()
        if model_obj is not None:
            self.model = model_obj
            self.device = str(next(model_obj.parameters()).device)
            source = getattr(getattr(model_obj, "config", None), "_name_or_path", "") or type(model_obj).__name__
        else:
            from transformers import AutoModelForCausalLM

            if model is None:
                from zerosearch_env.models import default_model_path

                model = default_model_path()
            source = str(model)
            self.device = device
            self.model = AutoModelForCausalLM.from_pretrained(source, dtype=resolve_dtype(dtype, device))
            self.model.to(device)
            self.model.eval()
            self.model.requires_grad_(False)
        if tokenizer_obj is None:
            from transformers import AutoTokenizer

            tokenizer_obj = AutoTokenizer.from_pretrained(source if model_obj is None else (model or source))
        self.tokenizer = tokenizer_obj
        self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = self.tokenizer.eos_token_id
        if self.pad_token_id is None:
            raise ValueError("tokenizer has neither a pad nor an eos token")
        if name is None:
            weights = weights_identity(self.model) if model_obj is not None else source_identity(source)
            dtype_name = str(next(self.model.parameters()).dtype).removeprefix("torch.")
            name = f"transformers:{weights}:{dtype_name}"
        self.name = name

    # -- prompt rendering -------------------------------------------------------------------------
    def render(self, conversation: Sequence[Message]) -> str:
        """The prompt text for one conversation (chat template, assistant turn opened)."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(list(conversation), tokenize=False, add_generation_prompt=True)
        lines = [f"{m['role']}: {m['content']}" for m in conversation]
        return "\n".join(lines) + "\nassistant:"

    def _max_positions(self) -> int | None:
        cfg = getattr(self.model, "config", None)
        return getattr(cfg, "max_position_embeddings", None)

    # -- generation -------------------------------------------------------------------------------
    def generate(self, conversations: Sequence[Sequence[Message]], params: SamplingParams | None = None, *,
                 seeds: Sequence[int] | None = None) -> list[str]:
        """One completion per conversation, in order. `seeds` (optional, one per conversation)
        overrides the per-prompt seeds `params.seed + i`, e.g. for a server batching requests that
        each carry their own seed."""
        params = params or SamplingParams()
        convs = validate_conversations(conversations)
        if not convs:
            return []
        if params.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if params.temperature < 0 or not 0 < params.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")
        base_seed = params.seed if params.seed is not None else random.randrange(2**62)
        prompt_seeds = row_seeds(replace(params, seed=base_seed), len(convs), seeds)
        prompts = [self.render(c) for c in convs]
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        limit = self._max_positions()
        for i, ids in enumerate(encoded):
            if limit is not None and len(ids) + params.max_new_tokens > limit:
                raise ValueError(f"conversation {i}: {len(ids)} prompt tokens + {params.max_new_tokens} new tokens "
                                 f"exceed the model's {limit} positions")
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: list[str | None] = [None] * len(encoded)
        with self._lock:
            was_training = bool(getattr(self.model, "training", False))
            self.model.eval()
            try:
                for start in range(0, len(order), self.max_batch_size):
                    chunk = order[start:start + self.max_batch_size]
                    texts = self._generate_chunk([encoded[i] for i in chunk], [prompt_seeds[i] for i in chunk], params)
                    for i, text in zip(chunk, texts):
                        results[i] = text
            finally:
                if was_training:
                    self.model.train()
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _generate_chunk(self, ids: list[list[int]], seeds: list[int], params: SamplingParams) -> list[str]:
        from transformers import GenerationConfig, LogitsProcessorList

        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        for row, x in enumerate(ids):
            if x:
                input_ids[row, width - len(x):] = torch.tensor(x, dtype=torch.long)
                attention[row, width - len(x):] = 1
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        eos = self.tokenizer.eos_token_id
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens, do_sample=False, num_beams=1,
            temperature=None, top_p=None, top_k=None,
            pad_token_id=self.pad_token_id, eos_token_id=eos,
            bos_token_id=getattr(self.tokenizer, "bos_token_id", None),
            stop_strings=list(params.stop) or None,
        )
        processors = LogitsProcessorList()
        if params.temperature > 0:
            processors.append(SeededSampler(seeds, params.temperature, params.top_p))
        kwargs: dict[str, Any] = {}
        if params.stop:
            kwargs["tokenizer"] = self.tokenizer
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config,
                                      logits_processor=processors, **kwargs)
        new = out[:, width:].cpu()
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [cut_at_stop(t, params.stop) for t in texts]

    def close(self) -> None:
        """Drop the references to the model and tokenizer."""
        self.model = None
        self.tokenizer = None
