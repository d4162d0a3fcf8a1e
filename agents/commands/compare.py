"""`zerosearch compare`: one agent, the same questions, several search backends.

    zerosearch compare --agent oracle --backends sim:0,sim:0.5,sim:1,bm25,dense --episodes 100
    zerosearch compare --agent runs/tiny/final --backends sim:0,bm25 --out runs/compare-tiny
    zerosearch compare --agent base --backends bm25,retriever=http://127.0.0.1:8000

Prints a table (EM, F1, searches per episode, latency per search, share of searches whose results
hold a gold answer, estimated USD per 1,000 searches), and writes compare.json, records.jsonl and
compare.png to --out. The cost model is documented in `agents.compare`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

BASELINES = ("oracle", "closed_book", "random")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", default="oracle",
                        help="oracle | closed_book | random | base (the default small model) | a checkpoint folder")
    parser.add_argument("--backends", default="sim:0,sim:0.5,sim:1,bm25,dense",
                        help="comma-separated: sim:P (simulator at noise P), bm25, dense, retriever=URL, web")
    parser.add_argument("--dataset", default="world", help="'world' or a FlashRAG JSONL / Search-R1 parquet file")
    parser.add_argument("--corpus", default=None, help="corpus file for bm25/dense when --dataset is a file")
    parser.add_argument("--split", default="test", choices=("train", "test", "all"))
    parser.add_argument("--episodes", type=int, default=100, help="questions sampled from the split (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--num-envs", type=int, default=16, help="parallel episodes (one backend call per step)")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="per agent turn (model agents)")
    parser.add_argument("--sim-engine", default="transformers", choices=("transformers", "openai", "vllm"))
    parser.add_argument("--sim-model", default=None, help="simulator model (default: the small model)")
    parser.add_argument("--sim-base-url", action="append", default=[], help="OpenAI-compatible server (repeatable)")
    parser.add_argument("--sim-device", default="cpu")
    parser.add_argument("--sim-words-per-doc", type=int, default=40)
    parser.add_argument("--sim-knowledge", default=None, choices=("world", "answer_hint", "none", "oracle"),
                        help="what the simulator knows about a query (default: world for the built-in world, "
                             "answer_hint for a data file; oracle = the answer whatever the query, an ablation)")
    parser.add_argument("--gpu-usd-per-hour", type=float, default=2.50, help="simulator cost basis")
    parser.add_argument("--cpu-usd-per-hour", type=float, default=0.05, help="local retrieval cost basis")
    parser.add_argument("--web-usd-per-1k", type=float, default=None, help="web API price (default: provider's)")
    parser.add_argument("--out", default=None, help="output folder (default runs/compare-<agent>-<time>)")
    parser.add_argument("--no-progress", action="store_true")


def find_checkpoint(path: str | Path) -> Path:
    """A folder holding a model (config.json or adapter_config.json): `path` itself, a training
    run's `checkpoint/`, else its newest sub-folder that holds one."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {p}")
    if (p / "config.json").exists() or (p / "adapter_config.json").exists():
        return p
    if (p / "checkpoint" / "config.json").exists():  # a `zerosearch train` run folder: its latest checkpoint
        return p / "checkpoint"
    found = [c.parent for c in p.rglob("config.json")] + [c.parent for c in p.rglob("adapter_config.json")]
    if not found:
        raise FileNotFoundError(f"{p} holds no model (no config.json or adapter_config.json below it)")
    return max(found, key=lambda d: d.stat().st_mtime)


def load_policy_agent(spec: str, max_new_tokens: int = 96):
    """`base` or a checkpoint folder -> a greedy `PolicyAgent` (LoRA adapters are merged)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agents.policy import Policy, PolicyAgent

    if spec == "base":
        from zerosearch_env.models import default_model_path

        folder = Path(default_model_path())
    else:
        folder = find_checkpoint(spec)
    if (folder / "adapter_config.json").exists() and not (folder / "config.json").exists():
        from peft import PeftModel

        base_path = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
        model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
        tok_path = folder if (folder / "tokenizer_config.json").exists() else base_path
    else:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        tok_path = folder
    tokenizer = AutoTokenizer.from_pretrained(str(tok_path))
    tokenizer.padding_side = "left"  # batched generation pads on the left
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    agent = PolicyAgent(Policy(model, tokenizer, max_new_tokens=max_new_tokens), greedy=True)
    agent.name = f"policy:{spec}"
    return agent


def build_agent(spec: str, all_tasks, seed: int, max_new_tokens: int):
    from agents.baselines import ClosedBookAgent, OracleAgent, RandomAgent

    if spec == "oracle":
        return OracleAgent(all_tasks)
    if spec == "closed_book":
        return ClosedBookAgent(all_tasks)
    if spec == "random":
        return RandomAgent(seed=seed)
    return load_policy_agent(spec, max_new_tokens)


def run(args: argparse.Namespace) -> int:
    from agents.compare import CostModel, compare, format_table, parse_backend_specs, save_report, simulator_cli_options
    from zerosearch_env import EnvConfig
    from zerosearch_env.data import load_corpus, load_tasks
    from zerosearch_env.data.task import select_split

    try:
        specs = parse_backend_specs(args.backends)
        if args.num_envs < 1 or args.episodes < 0:
            raise ValueError("--num-envs must be >= 1 and --episodes >= 0")
        config = EnvConfig(dataset=args.dataset, world_seed=args.world_seed, split=args.split,
                           max_turns=args.max_turns, top_k=args.top_k, seed=args.seed)
        all_tasks = load_tasks(args.dataset, "all", args.world_seed)
        tasks = select_split(all_tasks, args.split, args.dataset)
        if 0 < args.episodes < len(tasks):
            tasks = random.Random(args.seed).sample(tasks, args.episodes)
        needs_corpus = any(s.kind in ("bm25", "dense") for s in specs)
        documents = None
        if needs_corpus:
            documents = load_corpus(args.dataset, args.world_seed, path=args.corpus)
        agent = build_agent(args.agent, all_tasks, args.seed, args.max_new_tokens)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"zerosearch compare: {e}", file=sys.stderr)
        return 2
    sim_opts = simulator_cli_options(args.sim_engine, args.sim_words_per_doc, args.sim_knowledge, args.sim_model,
                                 args.sim_base_url, args.sim_device)
    cost = CostModel(gpu_usd_per_hour=args.gpu_usd_per_hour, cpu_usd_per_hour=args.cpu_usd_per_hour,
                     web_usd_per_1k=args.web_usd_per_1k)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in args.agent)[-40:]
    out = Path(args.out or f"runs/compare-{safe}-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"compare: agent {agent.name}, {len(tasks)} {args.split} questions, backends "
          f"{', '.join(s.label for s in specs)}; output {out}", flush=True)

    def partial(rep: dict) -> None:
        last = rep["rows"][-1]
        print(f"  {last['backend']}: EM {last['em']:.3f}  F1 {last['f1']:.3f}  "
              f"({last['searches']} searches in {last['backend_calls']} backend calls, {last['wall_seconds']:.1f}s)",
              flush=True)
        save_report({**rep, "split": args.split, "dataset": args.dataset, "partial": True}, out)

    try:
        report = compare(agent, tasks, specs, config, env_tasks=all_tasks, documents=documents,
                         num_envs=args.num_envs, cost=cost, simulator_options=sim_opts,
                         progress=not args.no_progress, on_row=partial)
    except (ValueError, ImportError, RuntimeError) as e:
        print(f"zerosearch compare: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    report["split"] = args.split
    report["dataset"] = args.dataset
    print(format_table(report))
    paths = save_report(report, out)
    print(f"wrote {paths['json']}, {paths['records']} and {paths['png']}")
    return 0
