"""`zerosearch sim-tune`: fine-tune the simulator on real search traffic (ZeroSearch's simulator SFT).

    zerosearch sim-tune --out runs/sim-tune                       # oracle + random agents, BM25, world 0
    zerosearch sim-tune --agents oracle,runs/tiny/checkpoint --n 400 --lora --out runs/sim-tune-lora
    zerosearch sim-tune --backend retriever=http://127.0.0.1:8000 --prompt-style zerosearch-sft --out runs/st
    zerosearch sim-tune --out runs/sim-tune --resume              # continue an interrupted run

What it does (agents/sim_tune.py has the details):
  1. data: each agent (oracle: searches the question's supporting titles in hop order; random:
     random question words; or a checkpoint folder) plays episodes on TRAINING questions against the
     real backend; every search it made gives one pair (its query, the real documents returned).
  2. labels (--label-rule): "reached" (default): useful when a returned document names both ends of
     a link of the question's hop chain (the next hop, or the last hop's entity and the answer; for
     a comparison the compared entity's article), else noisy. "trajectory": useful when the
     episode's final answer was right (ZeroSearch's rule). The label balance is printed and kept in
     the data card.
  3. balance: duplicates dropped, the larger class down-sampled to the smaller (--no-balance keeps all).
  4. SFT: each pair becomes a chat example: prompt = exactly the simulator's own prompt for that
     query in that mode (useful/noisy = the label; --prompt-style, --words-per-doc, --knowledge),
     completion = the real documents as the simulator's parser reads them. TRL's SFTTrainer tunes
     the model (full, or --lora through peft, merged at the end), loss on the documents only.

Cost: on this machine's 2 CPU cores (shared with another job) the default small model trained at
about 24 s per step of 4 examples in bf16 (36 s in fp32; measured over 2 steps), peak memory
4.6 GB. The default run on world 0 (400 training questions per agent: 1,064 pairs, 741 useful and
323 noisy; 248 examples after dropping duplicates and empty results and balancing, 124 of each; one
epoch of 62 steps) therefore takes about 25 minutes; --max-steps bounds it. Collecting the data
with BM25 takes seconds. A GPU (--device auto) takes a fraction of that.

Writes to --out: model/ (use it as the simulator: backend_options.model: OUT/model, or
`zerosearch fidelity --tuned-model OUT/model`; serve it with the same --prompt-style and
--words-per-doc, recorded in model/prompt_settings.json), pairs.jsonl (every labelled pair),
train.jsonl (the examples), data_card.json and data_card.md (counts, label balance, sources,
prompt style, seed), config.json, metrics.jsonl, loss.png, summary.json (steps, loss, seconds, peak
memory) and trainer/ (checkpoints every --save-steps, for --resume).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from agents.sim_tune import SimTuneConfig

    d = SimTuneConfig()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    data = parser.add_argument_group("data")
    data.add_argument("--backend", default=d.backend, help="the real backend: bm25, dense, retriever=URL or web")
    data.add_argument("--agents", default=",".join(d.agents),
                      help="comma-separated agents whose searches are recorded: oracle, random, checkpoint folders")
    data.add_argument("--dataset", default=d.dataset, help="'world' or a FlashRAG JSONL / Search-R1 parquet file")
    data.add_argument("--corpus", default=None, help="corpus file for bm25/dense when --dataset is a file")
    data.add_argument("--world-seed", type=int, default=d.world_seed)
    data.add_argument("--n", type=int, default=d.n_questions, help="training questions per agent (0: all)")
    data.add_argument("--top-k", type=int, default=None,
                      help="documents per search (default 3; 5 for the ZeroSearch styles, which ask for five)")
    data.add_argument("--max-turns", type=int, default=d.max_turns)
    data.add_argument("--max-doc-chars", type=int, default=d.max_doc_chars,
                      help="each real document's text is capped here, as the simulator caps its own")
    data.add_argument("--label-rule", default=d.label_rule, choices=("reached", "trajectory"))
    data.add_argument("--no-balance", action="store_true", help="keep both classes whole (no down-sampling)")
    data.add_argument("--max-per-class", type=int, default=None, help="cap each class at this many examples")
    prompt = parser.add_argument_group("the simulator's prompt (serve the tuned model with the same)")
    prompt.add_argument("--prompt-style", default=d.prompt_style,
                        help="default | zerosearch-sft | zerosearch-prompt")
    prompt.add_argument("--knowledge", default=None, help="world | answer_hint | none | oracle (default: world for the world)")
    prompt.add_argument("--words-per-doc", type=int, default=d.words_per_doc,
                        help="document length the default style asks for (the world's articles have ~30 words)")
    train = parser.add_argument_group("training")
    train.add_argument("--model", default=None, help="simulator model folder (default: the small model, SmolLM2-135M)")
    train.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) and merge them, instead of all weights")
    train.add_argument("--lora-r", type=int, default=d.lora_r)
    train.add_argument("--epochs", type=float, default=d.epochs)
    train.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    train.add_argument("--batch-size", type=int, default=d.batch_size)
    train.add_argument("--grad-accum", type=int, default=d.grad_accum)
    train.add_argument("--lr", type=float, default=None, help=f"learning rate (default {d.learning_rate:g}; 2e-4 with --lora)")
    train.add_argument("--max-length", type=int, default=d.max_length, help="tokens per example")
    train.add_argument("--precision", default=d.precision, choices=("auto", "bf16", "fp32"))
    train.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                       help="recompute activations in the backward pass (default: on for a CPU run, where it keeps "
                            "the 135M model under 8 GB at about the same speed; off on CUDA)")
    train.add_argument("--save-steps", type=int, default=d.save_steps)
    train.add_argument("--device", default=d.device, choices=("auto", "cpu"))
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--out", default=None, help="output folder (default runs/sim-tune-<time>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out: reuse its data, resume from its last checkpoint")
    parser.add_argument("--data-only", action="store_true", help="build and write the data and card, do not train")
    parser.add_argument("--no-progress", action="store_true")


def _fail(message: str) -> int:
    print(f"zerosearch sim-tune: {message}", file=sys.stderr)
    return 2


def config_from_args(args: argparse.Namespace):
    from agents.sim_tune import SimTuneConfig

    agents = [a.strip() for a in str(args.agents).split(",") if a.strip()]
    lr = args.lr if args.lr is not None else (2e-4 if args.lora else SimTuneConfig().learning_rate)
    return SimTuneConfig(
        dataset=args.dataset, world_seed=args.world_seed, corpus=args.corpus, backend=args.backend, agents=agents,
        n_questions=args.n, top_k=args.top_k, max_turns=args.max_turns, max_doc_chars=args.max_doc_chars, label_rule=args.label_rule,
        balance=not args.no_balance, max_per_class=args.max_per_class, prompt_style=args.prompt_style,
        knowledge=args.knowledge, words_per_doc=args.words_per_doc, model=args.model, lora=args.lora,
        lora_r=args.lora_r, epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
        grad_accum=args.grad_accum, learning_rate=lr, max_length=args.max_length, precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing, save_steps=args.save_steps, device=args.device,
        seed=args.seed)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pydantic import ValidationError

    from agents.sim_tune import SimTuneError, build_data, run_sim_tune

    try:
        config = config_from_args(args)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}" for err in e.errors())
        return _fail(problems)
    out = Path(args.out or f"runs/sim-tune-{time.strftime('%Y%m%d-%H%M%S')}")
    if config.model is not None and not Path(config.model).is_dir():
        return _fail(f"--model {config.model}: no such folder")
    try:
        if args.data_only:
            if out.exists() and any(out.iterdir()):
                return _fail(f"{out} is not empty; choose another --out for the data")
            _, examples, card = build_data(config, out, progress=not args.no_progress)
            (out / "config.json").write_text(config.model_dump_json(indent=2), encoding="utf-8")
            print(json.dumps({"all_pairs": card["all_pairs"], "kept_pairs": card["kept_pairs"],
                              "by_reason": card["by_reason"]}, indent=2))
            print(f"wrote {len(examples)} examples to {out / 'train.jsonl'} and the card to {out / 'data_card.md'}")
            return 0
        summary = run_sim_tune(config, out, resume=args.resume, progress=not args.no_progress)
    except (SimTuneError, FileNotFoundError, ImportError) as e:
        return _fail(str(e))
    except ValueError as e:  # a data set or backend that cannot be loaded
        return _fail(f"{type(e).__name__}: {e}")
    t = summary.get("training") or {}
    if t:
        print(f"sim-tune: {t['steps']} steps, training loss {t['train_loss']:.4f}, {t['train_seconds']:.0f}s, "
              f"peak memory {t['peak_rss_gb']:.2f} GB ({t['device']}, {'bf16' if t['bf16'] else 'fp32'}"
              f"{', LoRA merged' if t['lora'] else ''})")
    print(f"wrote {out / 'model'} (use it as backend_options.model, prompt_style {config.prompt_style}, "
          f"words_per_doc {config.words_per_doc}), {out / 'data_card.md'}, {out / 'train.jsonl'}, {out / 'loss.png'}")
    return 0
