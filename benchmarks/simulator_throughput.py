"""Simulator throughput: documents/second by batch size, the simulator's overhead over the bare
engine call, and cache-hit latency. All figures come from one run, side by side.

    python benchmarks/simulator_throughput.py                      # CPU, default small model
    python benchmarks/simulator_throughput.py --device cuda --dtype bfloat16 \\
        --random-weights-config qwen2.5-14b --batches 1,16,64,256 --max-new-tokens 200

* `docs_per_s[B]`: documents returned per second by `SimulatedSearch.search` on B requests (one
  engine call; regenerations off so every batch size does the same work), and
  `batch16_over_batch1` their ratio.
* `overhead_fraction`: (time in `search` - time inside `engine.generate`) / time in `search`,
  summed over all batch sizes; `search_over_bare_generate` times the bare `engine.generate` on the
  same prompts right after the first search of each batch size, as a cross-check.
* `cache_hit_p50_ms`: latency of a one-request `CachedSearch.search` that hits the sqlite cache.

The last output line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

# shapes of random-weight architectures (for GPU runs without downloading weights)
RANDOM_CONFIGS = {
    "qwen2.5-14b": dict(hidden_size=5120, num_hidden_layers=48, num_attention_heads=40, num_key_value_heads=8,
                        intermediate_size=13824, vocab_size=152064, max_position_embeddings=32768,
                        rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=False),
    # a small shape with the same structure, to try the code path on a CPU
    "qwen2-tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=128, vocab_size=152064, max_position_embeddings=4096,
                       tie_word_embeddings=False),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    ap.add_argument("--model", default=None, help="model folder (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--tokenizer", default=None,
                    help="tokenizer folder for --random-weights-config (default: the default model's)")
    ap.add_argument("--random-weights-config", choices=sorted(RANDOM_CONFIGS), default=None,
                    help="build this architecture with random weights on --device instead of loading --model")
    ap.add_argument("--batches", default="1,16", help="comma-separated batch sizes (requests per search call)")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--words-per-doc", type=int, default=25)
    ap.add_argument("--min-requests", type=int, default=2,
                    help="search calls per batch size = ceil(min_requests / B): small batches are averaged")
    ap.add_argument("--no-bare", dest="bare", action="store_false",
                    help="skip the side-by-side bare engine.generate call on each batch size's first chunk")
    ap.add_argument("--cache-lookups", type=int, default=300)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (1 avoids oversubscription stalls on a shared, busy CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the JSON figures to this file")
    return ap.parse_args(argv)


def build_engine(args, max_batch_size: int = 16):
    """A TransformersEngine on the default/given model, or on a random-weight architecture."""
    import torch

    from zerosearch_env.engines import TransformersEngine

    if args.random_weights_config is None:
        return TransformersEngine(args.model, device=args.device, dtype=args.dtype, max_batch_size=max_batch_size)
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    if args.tokenizer is None:
        from zerosearch_env.models import default_model_path

        args.tokenizer = str(default_model_path())
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    n_tok = len(tok)
    decode = tok._decode

    def decode_mod(token_ids, **kw):  # the random model's ids run past the tokenizer's vocabulary
        ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
        return decode([int(i) % n_tok for i in ids], **kw)

    tok._decode = decode_mod
    dtype = {"auto": torch.bfloat16, "bfloat16": torch.bfloat16, "float16": torch.float16,
             "float32": torch.float32}[args.dtype]
    cfg = Qwen2Config(**RANDOM_CONFIGS[args.random_weights_config], bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(args.seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(args.device):
            model = Qwen2ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"random {args.random_weights_config}: {n_params / 1e9:.2f}B parameters, {dtype}, {args.device}", flush=True)
    return TransformersEngine(model_obj=model, tokenizer_obj=tok, device=args.device, dtype=args.dtype,
                              max_batch_size=max_batch_size, name=f"random:{args.random_weights_config}")


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from tqdm import tqdm

    from curricula import ConstantCurriculum
    from zerosearch_env.data import load_tasks
    from zerosearch_env.engines.base import LLMEngine, SamplingParams
    from zerosearch_env.search import SearchRequest
    from zerosearch_env.search.cache import CachedSearch
    from zerosearch_env.search.simulator import SimulatedSearch, build_messages

    class TimedEngine(LLMEngine):
        """Delegates to `inner` and adds up the wall time spent inside `generate`."""

        def __init__(self, inner: LLMEngine):
            self.inner, self.name, self.seconds, self.calls = inner, inner.name, 0.0, 0

        def generate(self, conversations, params=None, *, seeds=None):
            t0 = time.perf_counter()
            try:
                return self.inner.generate(conversations, params, seeds=seeds)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    t_load = time.perf_counter()
    engine = build_engine(args, max_batch_size=max(batches))
    load_s = time.perf_counter() - t_load
    timed = TimedEngine(engine)
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.95, seed=args.seed)
    sim = SimulatedSearch(timed, curriculum=ConstantCurriculum(0.0), seed=args.seed, words_per_doc=args.words_per_doc,
                          max_regenerations=0, sampling=sampling)
    tasks = load_tasks("world", "test")
    need = sum(b * math.ceil(args.min_requests / b) for b in batches) + 8
    tasks = (tasks * (need // len(tasks) + 1))[:need]
    requests = [SearchRequest(t.question, top_k=args.top_k, question=t.question, answers=t.answers,
                              episode_id=f"bench-{i}", search_index=0) for i, t in enumerate(tasks)]

    # warm-up: the largest batch with a few tokens (allocators, kernels), then one small real call
    warm = SamplingParams(max_new_tokens=4, temperature=0.7, top_p=0.95, seed=args.seed)
    engine.generate([build_messages(r, "useful", args.top_k, args.words_per_doc) for r in requests[: max(batches)]], warm)
    sim.search(requests[:1])

    per_batch: dict[int, dict] = {}
    cursor = 8
    total_search = total_engine = 0.0
    for b in tqdm(batches, desc="batch sizes", file=sys.stdout):
        calls = math.ceil(args.min_requests / b)
        search_s = engine_s = bare_s = first_search_s = 0.0
        n_docs = n_requests = n_tokens = 0
        for call in range(calls):
            chunk = requests[cursor: cursor + b]
            cursor += b
            timed.seconds = 0.0
            t0 = time.perf_counter()
            docs = sim.search(chunk)
            elapsed = time.perf_counter() - t0
            search_s += elapsed
            engine_s += timed.seconds
            n_docs += sum(len(d) for d in docs)
            n_requests += len(chunk)
            if call > 0 or not args.bare:
                continue
            # the first chunk's prompts through the bare engine, right after (side by side)
            first_search_s = elapsed
            prompts = [build_messages(r, "useful", r.top_k, args.words_per_doc) for r in chunk]
            t0 = time.perf_counter()
            texts = engine.generate(prompts, sampling)
            bare_s += time.perf_counter() - t0
            counted = _count_tokens(engine, texts)
            n_tokens = None if counted is None or n_tokens is None else n_tokens + counted
        total_search += search_s
        total_engine += engine_s
        per_batch[b] = {
            "requests": n_requests, "docs": n_docs, "search_s": round(search_s, 4), "engine_s": round(engine_s, 4),
            "bare_generate_s": round(bare_s, 4), "docs_per_s": n_docs / search_s,
            "requested_docs_per_s": n_requests * args.top_k / search_s,
            "requests_per_s": n_requests / search_s,
            "max_tokens_per_s": n_requests * args.max_new_tokens / engine_s,
            "text_tokens_per_s_bare": (n_tokens / bare_s) if n_tokens is not None and bare_s else None,
            "overhead_fraction": (search_s - engine_s) / search_s,
            "search_over_bare_generate": first_search_s / bare_s if bare_s else None,
        }
        print(f"batch {b}: {json.dumps({k: _r(v) for k, v in per_batch[b].items()})}", flush=True)

    # cache hits: fill with one batch (one engine call), then time one-request lookups
    with tempfile.TemporaryDirectory() as tmp:
        cache = CachedSearch(sim, Path(tmp))
        fill = requests[:8]
        cache.search(fill)
        lat = []
        for i in range(args.cache_lookups):
            r = fill[i % len(fill)]
            t0 = time.perf_counter()
            got = cache.search([r])
            lat.append((time.perf_counter() - t0) * 1000)
            assert got and cache.stats()["cache_hits"] == i + 1
        cache.close()
    lat.sort()
    figures = {
        "device": args.device, "dtype": args.dtype,
        "model": args.random_weights_config or args.model or "smollm2-135m-instruct",
        "max_new_tokens": args.max_new_tokens, "top_k": args.top_k, "words_per_doc": args.words_per_doc,
        "load_s": round(load_s, 2),
        "docs_per_s": {str(b): _r(v["docs_per_s"]) for b, v in per_batch.items()},
        "requested_docs_per_s": {str(b): _r(v["requested_docs_per_s"]) for b, v in per_batch.items()},
        "max_tokens_per_s": {str(b): _r(v["max_tokens_per_s"]) for b, v in per_batch.items()},
        "overhead_fraction_by_batch": {str(b): _r(v["overhead_fraction"], 5) for b, v in per_batch.items()},
        "search_over_bare_generate": {str(b): _r(v["search_over_bare_generate"], 4) for b, v in per_batch.items()
                                      if v["search_over_bare_generate"] is not None},
        "overhead_fraction": _r((total_search - total_engine) / total_search, 5),
        "cache_hit_p50_ms": _r(statistics.median(lat), 4),
        "cache_hit_p99_ms": _r(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 4),
    }
    if 1 in per_batch and 16 in per_batch:
        figures["batch16_over_batch1"] = _r(per_batch[16]["docs_per_s"] / per_batch[1]["docs_per_s"], 3)
        figures["batch16_over_batch1_requested"] = _r(per_batch[16]["requested_docs_per_s"] / per_batch[1]["requested_docs_per_s"], 3)
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1), encoding="utf-8")
    print(json.dumps(figures), flush=True)
    return figures


def _count_tokens(engine, texts: list[str]) -> int | None:
    tok = getattr(engine, "tokenizer", None)
    if tok is None:
        return None
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)


def _r(v, nd: int = 3):
    return round(v, nd) if isinstance(v, float) else v


if __name__ == "__main__":
    main()
