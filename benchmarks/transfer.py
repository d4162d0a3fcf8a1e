"""Sim-to-real transfer: GRPO from the same warm-up model, with the same budget and seeds, against
(a) the grounded simulator with the noise curriculum, (b) the answer-hinted simulator (the old
behaviour, `knowledge: oracle`), (c) BM25 itself, and, given `--tuned-model DIR` (a `zerosearch
sim-tune` output), (d) `tuned`: the grounded simulator with that model as its engine (issue 14: tuned
against untuned = `tuned` against `grounded`); each policy, and the warm-up model, evaluated
greedily with BM25 on the same held-out questions.

    python benchmarks/transfer.py runs/transfer --steps 24 --n 300
    python benchmarks/transfer.py runs/transfer --no-run          # tabulate what is there
    python benchmarks/transfer.py runs/transfer --arms grounded,tuned --tuned-model runs/sim-tune/model

The warm-up is trained once (`zerosearch train --max-steps 0`, the tiny preset's oracle warm-up) unless
`--warmup-model DIR` names one. Each arm is a `zerosearch train` run into OUT/<arm> from that model
(`warmup.enabled: false`), its curriculum spanning `--steps`; each evaluation is a `zerosearch eval
--records` report in OUT/eval/<arm>.json. A finished arm or evaluation is not run again, so an
interrupted experiment continues where it stopped (a half-trained arm resumes from its checkpoint).

Prints a markdown table (EM overall, single-hop, multi-hop = bridge + comparison, searches per
episode) and the paired differences on the same questions (a - b, a - c, each arm - warm-up; EM
difference ± paired s.e., exact McNemar p), writes both to OUT/transfer.md and OUT/transfer.json,
and ends with one JSON line of the figures. Every figure is a BM25 figure: the simulator is only
trained against here, never evaluated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MULTI_HOP = ("bridge", "comparison")


ARMS = ("grounded", "oracle", "bm25", "tuned")


def arm_overrides(arm: str, tuned_model: str | None = None) -> dict:
    """Config sections that make arm `arm` of the experiment (on top of the base config)."""
    if arm == "tuned":
        if not tuned_model:
            raise ValueError("the tuned arm needs --tuned-model DIR (a `zerosearch sim-tune` model folder)")
        return {"env": {"backend": "simulator"}, "simulator": {"knowledge": "world", "model": str(tuned_model)}}
    if arm == "grounded":
        return {"env": {"backend": "simulator"}, "simulator": {"knowledge": "world"}}
    if arm == "oracle":
        return {"env": {"backend": "simulator"}, "simulator": {"knowledge": "oracle"}}
    if arm == "bm25":
        return {"env": {"backend": "bm25"}}
    raise ValueError(f"unknown arm {arm!r}; choose from {', '.join(ARMS)}")


def arm_config(base: dict, arm: str, steps: int, warmup_model: str, tuned_model: str | None = None) -> dict:
    """The TrainConfig mapping of one arm: the base config, GRPO for `steps` steps from the warm-up
    model (no second warm-up), the curriculum spanning those steps, the arm's backend."""
    from agents.train_config import merge_config

    cfg = merge_config(base, arm_overrides(arm, tuned_model))
    cfg = merge_config(cfg, {"model": warmup_model, "warmup": {"enabled": False}, "grpo": {"steps": steps}})
    curriculum = dict(cfg.get("curriculum") or {})
    if "total_steps" in curriculum:
        curriculum["total_steps"] = steps
    cfg["curriculum"] = curriculum
    return cfg


def subset(records: list[dict], kinds: tuple[str, ...] | None) -> list[dict]:
    return [r for r in records if kinds is None or r["kind"] in kinds]


def figures(records: list[dict]) -> dict:
    """EM and searches per episode overall, single-hop and multi-hop."""
    out = {}
    for name, kinds in (("all", None), ("single", ("single",)), ("multi_hop", MULTI_HOP)):
        rs = subset(records, kinds)
        out[name] = {"n": len(rs), "em": sum(r["em"] for r in rs) / len(rs) if rs else None,
                     "searches_per_episode": sum(r["num_searches"] for r in rs) / len(rs) if rs else None}
    return out


def paired(records: dict[str, list[dict]], pairs: list[tuple[str, str]]) -> list[dict]:
    """Paired EM differences (second minus first) overall and on multi-hop questions."""
    from agents.evaluate import paired_em_difference

    rows = []
    for a, b in pairs:
        if a not in records or b not in records:
            continue
        for scope, kinds in (("all", None), ("multi_hop", MULTI_HOP)):
            ra, rb = subset(records[a], kinds), subset(records[b], kinds)
            if ra and rb:
                rows.append({"from": a, "to": b, "scope": scope, **paired_em_difference(ra, rb)})
    return rows


def table(cells: dict[str, dict], pairs: list[dict], minutes: dict[str, float]) -> str:
    def f(x, d=3):
        return "-" if x is None else f"{x:.{d}f}"

    lines = ["| policy (BM25 eval) | n | EM | single-hop EM | multi-hop EM | searches/ep | multi-hop searches/ep | "
             "train min |", "|---|---|---|---|---|---|---|---|"]
    for name, c in cells.items():
        lines.append(f"| {name} | {c['all']['n']} | {f(c['all']['em'])} | {f(c['single']['em'])} | "
                     f"{f(c['multi_hop']['em'])} (n={c['multi_hop']['n']}) | {f(c['all']['searches_per_episode'], 2)} | "
                     f"{f(c['multi_hop']['searches_per_episode'], 2)} | {f(minutes.get(name), 1)} |")
    if pairs:
        lines += ["", "| to - from | questions | EM from | EM to | difference ± paired s.e. | McNemar p |",
                  "|---|---|---|---|---|---|"]
        for p in pairs:
            lines.append(f"| {p['to']} - {p['from']} ({p['scope']}) | {p['n']} | {f(p['em_a'])} | {f(p['em_b'])} | "
                         f"{p['diff']:+.3f} ± {f(p['se'])} | {p['p_mcnemar']:.3g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="experiment folder (arms, evaluations, table)")
    ap.add_argument("--steps", type=int, default=24, help="GRPO steps of every arm (the same budget)")
    ap.add_argument("--n", type=int, default=300, help="held-out test questions, the same seeded sample for all")
    ap.add_argument("--arms", default="grounded,oracle,bm25", help=f"comma-separated subset of {', '.join(ARMS)}")
    ap.add_argument("--tuned-model", default=None, help="the simulator model of the tuned arm (a sim-tune output)")
    ap.add_argument("--config", default=None, help="base TrainConfig file (default: the tiny preset)")
    ap.add_argument("--warmup-model", default=None, help="start every arm from this model (default: train the warm-up)")
    ap.add_argument("--num-envs", type=int, default=50, help="episodes side by side in the evaluations")
    ap.add_argument("--no-run", action="store_true", help="tabulate what is already there; train and evaluate nothing")
    args = ap.parse_args(argv)

    from agents.cli import main as cli
    from agents.train_config import TrainConfig, preset

    if args.steps < 1 or args.n < 1:
        print("transfer: --steps and --n must be >= 1", file=sys.stderr)
        return 2
    try:
        arms = [a.strip() for a in args.arms.split(",") if a.strip()]
        for arm in arms:
            arm_overrides(arm, args.tuned_model)
        base_cfg = TrainConfig.load(args.config) if args.config else preset("tiny")
    except (OSError, ValueError) as e:
        print(f"transfer: {e}", file=sys.stderr)
        return 2
    base = json.loads(base_cfg.model_dump_json())
    out = Path(args.out)
    (out / "eval").mkdir(parents=True, exist_ok=True)

    def run_cli(cmd: list[str]) -> None:
        print(f"transfer: zerosearch {' '.join(cmd)}", flush=True)
        rc = cli(cmd)
        if rc != 0:
            raise SystemExit(f"transfer: `zerosearch {' '.join(cmd)}` failed (exit {rc})")

    warmup = args.warmup_model
    if warmup is None:
        warmup = str(out / "warmup" / "checkpoint")
        if not (Path(warmup) / "config.json").exists() and not args.no_run:
            wcfg = out / "warmup_config.json"
            wcfg.write_text(json.dumps(base), encoding="utf-8")
            run_cli(["train", "--config", str(wcfg), "--max-steps", "0", "--output", str(out / "warmup"), "--no-progress"])
    minutes: dict[str, float] = {}
    evals = {"warmup": ["--checkpoint", warmup]}
    for arm in arms:
        run_dir = out / arm
        cfg_path = out / f"{arm}_config.json"
        cfg_path.write_text(json.dumps(arm_config(base, arm, args.steps, warmup, args.tuned_model)), encoding="utf-8")
        state = run_dir / "checkpoint" / "trainer_state.json"
        done = state.exists() and json.loads(state.read_text(encoding="utf-8")).get("grpo_step", 0) >= args.steps
        if not done and not args.no_run:
            run_cli(["train", "--config", str(cfg_path), "--output", str(run_dir), "--no-progress",
                     *(["--resume"] if state.exists() else [])])
        summary = run_dir / "train_summary.json"
        if summary.exists():
            minutes[arm] = json.loads(summary.read_text(encoding="utf-8"))["wall_s"] / 60
        evals[arm] = ["--checkpoint", str(run_dir)]
    records: dict[str, list[dict]] = {}
    for name, who in evals.items():
        path = out / "eval" / f"{name}.json"
        if not path.exists() and not args.no_run:
            t0 = time.perf_counter()
            run_cli(["eval", *who, "--backend", "bm25", "--n", str(args.n), "--num-envs", str(args.num_envs),
                     "--records", "--output", str(path), "--no-progress",
                     *(["--config", args.config] if args.config else [])])
            print(f"transfer: evaluated {name} in {time.perf_counter() - t0:.0f} s", flush=True)
        if path.exists():
            records[name] = json.loads(path.read_text(encoding="utf-8"))["records"]
    cells = {name: figures(r) for name, r in records.items()}
    pairs = paired(records, [("oracle", "grounded"), ("bm25", "grounded"), ("warmup", "grounded"),
                             ("warmup", "oracle"), ("warmup", "bm25"),
                             ("grounded", "tuned"), ("warmup", "tuned")])
    text = table(cells, pairs, minutes)
    print(text)
    result = {"steps": args.steps, "n": args.n, "arms": arms, "cells": cells, "paired": pairs,
              "train_minutes": minutes}
    (out / "transfer.md").write_text(text + "\n", encoding="utf-8")
    (out / "transfer.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
