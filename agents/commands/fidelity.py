"""`zerosearch fidelity`: the same queries through the simulator (at chosen noise levels) and a real
search backend, side by side.

    zerosearch fidelity                                  # 8 test questions (6 bridge), sim p=0 and 0.5 vs BM25
    zerosearch fidelity --noise 0 --n 48 --kinds bridge --out runs/fidelity-bridge
    zerosearch fidelity --records runs/eval-tiny/eval.json   # also the queries a checkpoint sent
    zerosearch fidelity --agent oracle --real retriever=http://127.0.0.1:8000
    zerosearch fidelity --tuned-model runs/sim-tune/model --noise 0 --n 48   # untuned vs tuned vs BM25

Prints a table, and writes fidelity.json (every figure, the settings, a few example documents) and
fidelity.png (answer in results by query kind, simulator vs real) to --out. The figures are
defined in `agents.fidelity`. Cost: 6 probes per bridge or comparison question (5 per single one)
and backend. The SmolLM2-135M simulator on 2 shared CPU cores took 4.5 s per simulated search at the
defaults (20 words per document, 1 regeneration round; 534 s for 10 bridge questions at 2 noise
levels, 120 searches), and about 10 s at 40 words and 2 rounds: the default run (8 questions, 2
noise levels, ~94 searches) takes about 7 minutes; 48 questions about 45. A GPU engine (--engine
vllm, or openai with --base-url) takes seconds; BM25 answers in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

FIGURES_HELP = """figures (per backend column; the real backend is the reference):
  <kind> ans        share of probes whose top-k results hold a gold answer, by query kind:
                    first-hop (the question's first-hop subject), second-hop (the answer-bearing
                    article's title), unrelated (another question's subject), garbage (random words),
                    wrong-guess (subject + another question's answer), right-guess (subject + the
                    gold answer), recorded (an agent's own queries; --records / --agent); also by
                    question kind (single / bridge / comparison). A guessed answer must not reveal
                    whether it is right: compare guess_gap (right - wrong) with the real backend's.
  first-hop leak    first-hop probes whose query does not reach the answer (world knowledge) but
                    whose results hold it
  needed in useful (no fallback)   first/second-hop probes answered in useful mode by the
                    engine's own text (not the fallback) whose results hold what the query needed
                    (a document naming the hop entity and the next hop or the answer; for a
                    comparison the compared entity's article): compare with the real backend's
  contradictions    documents contradicting the world per 100 (all / useful only; the simulator's
                    consistency check: on the real backend this is its false-positive floor)
  fallback share, engine-failure share   the simulator's stats() (- for real search)
  words/doc, distinct-1, distinct-2      document length, distinct n-grams / all n-grams
  overlap w/ real   mean token Jaccard of a probe's documents with the real backend's
  discriminator AUROC  logistic regression on hashed n-grams trained on half the questions,
                    scored on the other half: 0.5 = simulated text indistinguishable from real
  AUROC, own text only   the same on the results the engine wrote itself (not the gate's
                    fallback): what a tuned model changed, where the fallback answers many probes"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = FIGURES_HELP
    parser.add_argument("--noise", default="0,0.5", help="simulator noise levels, comma-separated, each in [0, 1]")
    parser.add_argument("--real", default="bm25", help="the real backend: bm25, dense or retriever=URL")
    parser.add_argument("--knowledge", default=None, choices=("world", "answer_hint", "none", "oracle"),
                        help="what the simulator knows (default: world for the built-in world, answer_hint for a file)")
    parser.add_argument("--model", default=None, help="simulator model folder or name (default: the small model)")
    parser.add_argument("--sim", action="append", default=[], metavar="NAME=DIR",
                        help="one more simulator column per noise level (labelled 'NAME p=P'): the model folder DIR "
                             "with the same options as the untuned one (repeatable)")
    parser.add_argument("--tuned-model", default=None, metavar="DIR",
                        help="shorthand for --sim tuned=DIR (a model folder written by zerosearch sim-tune)")
    parser.add_argument("--prompt-style", default=None,
                        help="every simulator's prompt style: default | zerosearch-sft | zerosearch-prompt "
                             "(a tuned model: the style it was tuned in)")
    parser.add_argument("--engine", default="transformers", choices=("transformers", "openai", "vllm"))
    parser.add_argument("--base-url", action="append", default=[], help="OpenAI-compatible server (repeatable)")
    parser.add_argument("--device", default="cpu", help="transformers engine device")
    parser.add_argument("--words-per-doc", type=int, default=20,
                        help="document length asked of the simulator (the world's articles have ~32 words)")
    parser.add_argument("--max-regenerations", type=int, default=1, help="gate regeneration rounds")
    parser.add_argument("--fallback-unit", default="result", choices=("result", "document"),
                        help="what a result failing the gate loses to the knowledge fallback: all its documents "
                             "(result) or only those failing a per-document check (document)")
    parser.add_argument("--dataset", default="world", help="'world' or a FlashRAG JSONL / Search-R1 parquet file")
    parser.add_argument("--corpus", default=None, help="corpus file for bm25/dense when --dataset is a file")
    parser.add_argument("--split", default="test", choices=("train", "test", "all"))
    parser.add_argument("--n", type=int, default=8,
                        help="questions sampled from the split (about 4.5 s per simulated search on 2 CPU cores)")
    parser.add_argument("--kinds", default="bridge:4,single:1,comparison:1",
                        help="question kinds and their weights in the sample (a loaded data set has kind qa)")
    parser.add_argument("--records", default=None,
                        help="an eval report written with --records: its agent's queries are probed too")
    parser.add_argument("--agent", default=None,
                        help="run this agent (oracle | closed_book | random | base | checkpoint) on the real "
                             "backend over the sampled questions and probe its queries too")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16, help="probes per backend call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output folder (default runs/fidelity-<time>)")
    parser.add_argument("--no-progress", action="store_true")


def parse_kinds(text: str) -> dict[str, float]:
    """`"bridge:4,single:1"` -> {"bridge": 4.0, "single": 1.0} (a bare kind weighs 1)."""
    weights: dict[str, float] = {}
    for raw in (t.strip() for t in text.split(",")):
        if not raw:
            continue
        kind, _, w = raw.partition(":")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise ValueError(f"--kinds {raw!r}: the weight must be a number") from None
        if weight <= 0 or kind in weights:
            raise ValueError(f"--kinds {raw!r}: weights must be > 0 and kinds unique")
        weights[kind] = weight
    if not weights:
        raise ValueError("--kinds names no question kind")
    return weights


def sample_tasks(tasks, n: int, weights: dict[str, float], seed: int) -> list:
    """`n` tasks split over the kinds by weight (largest remainders), each kind sampled with `seed`."""
    by_kind = {k: [t for t in tasks if t.kind == k] for k in weights}
    missing = [k for k, ts in by_kind.items() if not ts]
    if missing:
        have = sorted({t.kind for t in tasks})
        raise ValueError(f"--kinds: no {', '.join(missing)} questions in this split (it has {', '.join(have)})")
    total = sum(weights.values())
    exact = {k: n * w / total for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: counts[k] - exact[k])[: n - sum(counts.values())]:
        counts[k] += 1
    rng = random.Random(seed)
    chosen = []
    for k, c in counts.items():
        if c > len(by_kind[k]):
            raise ValueError(f"--n {n}: asks for {c} {k} questions, the split has {len(by_kind[k])}")
        chosen += rng.sample(by_kind[k], c)
    return chosen


def run(args: argparse.Namespace) -> int:
    from agents.compare import BackendSpec, build_backend, parse_backend_specs, simulator_cli_options
    from agents.fidelity import format_table, make_probes, measure, plot_report, recorded_probes
    from zerosearch_env import EnvConfig
    from zerosearch_env.data import load_corpus, load_tasks
    from zerosearch_env.data.task import select_split

    def fail(message: str) -> int:
        print(f"zerosearch fidelity: {message}", file=sys.stderr)
        return 2

    try:
        noise = [float(p) for p in args.noise.split(",") if p.strip()]
    except ValueError:
        return fail(f"--noise {args.noise!r}: give numbers in [0, 1], e.g. 0,0.5")
    if not noise or any(not 0.0 <= p <= 1.0 for p in noise) or len(set(noise)) != len(noise):
        return fail(f"--noise {args.noise!r}: give distinct numbers in [0, 1], e.g. 0,0.5")
    if args.n < 1 or args.top_k < 1 or args.batch < 1 or args.words_per_doc < 1 or args.max_regenerations < 0:
        return fail("--n, --top-k, --batch and --words-per-doc must be >= 1, --max-regenerations >= 0")
    if args.records and args.agent:
        return fail("give --records or --agent, not both")
    try:
        specs = parse_backend_specs(args.real)
    except ValueError as e:
        return fail(f"--real: {e}")
    if len(specs) != 1 or specs[0].kind in ("simulator", "web"):
        return fail(f"--real {args.real!r}: give one real backend: bm25, dense or retriever=URL")
    real = specs[0]
    try:
        from agents.fidelity import parse_simulator_models
        from zerosearch_env.search.simulator.styles import check_style

        if args.prompt_style is not None:
            check_style(args.prompt_style)
        sim_models = parse_simulator_models(args.sim + ([f"tuned={args.tuned_model}"] if args.tuned_model else []),
                                            taken=("sim", real.label))
    except ValueError as e:
        return fail(str(e))
    try:
        weights = parse_kinds(args.kinds)
        config = EnvConfig(dataset=args.dataset, world_seed=args.world_seed, split=args.split, top_k=args.top_k,
                           seed=args.seed)
        all_tasks = load_tasks(args.dataset, "all", args.world_seed)
        tasks = sample_tasks(select_split(all_tasks, args.split, args.dataset), args.n, weights, args.seed)
        recorded = None
        if args.records:
            path = Path(args.records)
            if not path.is_file():
                raise ValueError(f"--records {path}: no such file")
            try:
                report = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ValueError(f"--records {path}: not JSON ({e})") from None
            if not isinstance(report, dict) or not isinstance(report.get("records"), list) or not report["records"]:
                raise ValueError(f"--records {path}: holds no per-question records (write the eval report with --records)")
            recorded = report["records"]
        documents = load_corpus(args.dataset, args.world_seed, path=args.corpus) if real.kind in ("bm25", "dense") else None
        knowledge = None
        if args.dataset == "world":
            from zerosearch_env.data.world import generate_world
            from zerosearch_env.search.knowledge import WorldKnowledge

            knowledge = WorldKnowledge(generate_world(args.world_seed))
    except (ValueError, FileNotFoundError) as e:
        return fail(str(e))

    extra = {"prompt_style": args.prompt_style} if args.prompt_style else {}
    if args.fallback_unit != "result":
        extra["fallback_unit"] = args.fallback_unit
    sim_opts = simulator_cli_options(args.engine, args.words_per_doc, args.knowledge, args.model, args.base_url,
                                 args.device, max_regenerations=args.max_regenerations, seed=args.seed, **extra)
    for name, folder in sim_models:
        for note in _settings_mismatch(folder, sim_opts):
            print(f"zerosearch fidelity: warning: --sim {name}: {note}", file=sys.stderr)
    out = Path(args.out or f"runs/fidelity-{time.strftime('%Y%m%d-%H%M%S')}")
    backends = {}
    try:
        backends[real.label] = build_backend(real, config, documents)
        for p in noise:
            spec = BackendSpec(f"sim p={p:g}", "simulator", {}, p)
            backends[spec.label] = build_backend(spec, config, documents, sim_opts)
        for name, folder in sim_models:
            for p in noise:
                spec = BackendSpec(f"{name} p={p:g}", "simulator", {}, p)
                backends[spec.label] = build_backend(spec, config, documents, {**sim_opts, "model": str(folder)})
    except (ValueError, FileNotFoundError, OSError, ImportError) as e:
        for b in backends.values():
            b.close()
        return fail(f"cannot build the backends: {type(e).__name__}: {e}")
    try:
        probes = make_probes(tasks, select_split(all_tasks, args.split, args.dataset), seed=args.seed)
        by_id = {t.id: t for t in all_tasks}
        if args.agent:
            recorded = _agent_records(args, all_tasks, tasks, config, backends[real.label])
        if recorded is not None:
            probes += recorded_probes(recorded, by_id)
        others = "".join(f" and {name} ({folder})" for name, folder in sim_models)
        print(f"fidelity: {len(tasks)} {args.split} questions, {len(probes)} probes; simulator{others} at noise "
              f"{', '.join(f'{p:g}' for p in noise)} vs {real.label}; output {out}", flush=True)
        t0 = time.perf_counter()
        report = measure(probes, backends, real.label, knowledge=knowledge, top_k=args.top_k, batch=args.batch,
                         seed=args.seed, progress=not args.no_progress)
    except ValueError as e:
        return fail(str(e))
    finally:
        for b in backends.values():
            b.close()
    report["wall_seconds"] = time.perf_counter() - t0
    report["settings"] = {k: v for k, v in vars(args).items() if not k.startswith("_") and not callable(v)}
    report["simulator_options"] = sim_opts
    print(format_table(report))
    out.mkdir(parents=True, exist_ok=True)
    (out / "fidelity.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    plot_report(report, out / "fidelity.png")
    print(f"{report['wall_seconds']:.0f}s; wrote {out / 'fidelity.json'} and {out / 'fidelity.png'}")
    return 0


def _settings_mismatch(folder: Path, sim_opts: dict) -> list[str]:
    """Where a sim-tune model folder was tuned with other prompt settings than this run serves it with."""
    path = folder / "prompt_settings.json"
    if not path.is_file():
        return []
    try:
        tuned = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return [f"{path} is unreadable"]
    notes = []
    for key, default in (("prompt_style", "default"), ("words_per_doc", None)):
        serving = sim_opts.get(key, default)
        if key in tuned and serving is not None and tuned[key] != serving:
            flag = "--" + key.replace("_", "-")
            notes.append(f"tuned with {key} {tuned[key]!r}, served with {serving!r} (pass {flag} {tuned[key]})")
    return notes


def _agent_records(args, all_tasks, tasks, config, backend) -> list[dict]:
    """Run `--agent` on the real backend over `tasks`; its episode records (their queries are probed)."""
    from agents.commands.compare import build_agent
    from agents.evaluate import run_episodes
    from zerosearch_env import make_vec

    agent = build_agent(args.agent, all_tasks, args.seed, 96)
    vec = make_vec(min(16, len(tasks)), config, backend=backend, tasks=all_tasks)
    try:
        return run_episodes(agent, vec, tasks, progress=not args.no_progress, desc=f"agent {agent.name}")
    finally:
        vec.close()
