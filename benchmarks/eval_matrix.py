"""The evaluation matrix of a training run: the base model, the policy after the warm-up and the
policy after GRPO, each with BM25 and with the simulator at several noise levels, on the same
held-out questions; EM and format compliance for single-hop and multi-hop questions apart.

    python benchmarks/eval_matrix.py runs/tiny                  # 300 test questions, noise 0 and 0.5
    python benchmarks/eval_matrix.py runs/tiny --n 500 --noises 0 0.5 1

Each cell is one `zerosearch eval` run, its JSON report written to RUN/eval/<model>_<backend>.json;
cells whose report already exists are not run again, so an interrupted matrix continues, and
several processes may share the work (`--models`, `--backends`; `--config` with `threads: 1` each). Prints a
markdown table and writes it, with the figures, to RUN/eval/matrix.md and RUN/eval/matrix.json;
`--no-run` only tabulates the cells already there. With `--records` each new cell keeps its
per-question records, and consecutive models (base -> warmup -> grpo) with records on the same
backend get a paired comparison (EM difference, paired s.e., exact McNemar p-value).
Multi-hop = bridge and comparison questions (both need two searches).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _models(run: Path) -> list[tuple[str, list[str]]]:
    out = [("base", ["--base-model"])]
    if (run / "warmup_model" / "config.json").exists():
        out.append(("warmup", ["--checkpoint", str(run / "warmup_model")]))
    out.append(("grpo", ["--checkpoint", str(run)]))
    return out


def _merge_kinds(by_kind: dict, kinds: tuple[str, ...]) -> dict:
    """EM and format over several kinds, weighted by their question counts."""
    blocks = [by_kind[k] for k in kinds if k in by_kind]
    n = sum(b["n"] for b in blocks)
    if not n:
        return {"n": 0, "em": None, "format_compliance": None}
    return {"n": n, "em": sum(b["em"] * b["n"] for b in blocks) / n,
            "format_compliance": sum(b["format_compliance"] * b["n"] for b in blocks) / n}


def _se(p: float | None, n: int) -> float | None:
    return None if p is None or n == 0 else math.sqrt(max(p * (1 - p), 1e-12) / n)


def _paired_rows(records: dict, models: list[str], backends: list[str]) -> list[dict]:
    """Paired EM differences between consecutive models (base -> warmup -> grpo) per backend, where
    both cells kept their per-question records (`--records`)."""
    from agents.evaluate import paired_em_difference

    rows = []
    for b in backends:
        have = [m for m in models if (m, b) in records]
        for a_name, b_name in zip(have, have[1:]):
            rows.append({"backend": b, "from": a_name, "to": b_name,
                         **paired_em_difference(records[(a_name, b)], records[(b_name, b)])})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a `zerosearch train` output folder (checkpoint/, warmup_model/)")
    ap.add_argument("--n", type=int, default=300, help="held-out test questions (the same seeded sample in every cell)")
    ap.add_argument("--noises", type=float, nargs="*", default=[0.0, 0.5], help="simulator noise levels")
    ap.add_argument("--config", default=None, help="the run's TrainConfig file, when it was not the tiny preset")
    ap.add_argument("--num-envs", type=int, default=50)
    ap.add_argument("--models", nargs="*", default=None, help="subset of base, warmup, grpo")
    ap.add_argument("--backends", nargs="*", default=None, help="subset of bm25, sim<P> (e.g. sim0.5)")
    ap.add_argument("--records", action="store_true",
                    help="keep per-question records in each new cell's report (for paired tests between cells)")
    ap.add_argument("--no-run", action="store_true", help="tabulate existing cells only; start no evaluation")
    args = ap.parse_args(argv)

    from agents.cli import main as cli

    run = Path(args.run)
    out_dir = run / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    backends = [("bm25", ["--backend", "bm25"])] + [
        (f"sim{p:g}", ["--backend", "simulator", "--noise", str(p)]) for p in args.noises]
    backends = [b for b in backends if args.backends is None or b[0] in args.backends]
    models = [m for m in _models(run) if args.models is None or m[0] in args.models]
    cells = []
    records: dict[tuple[str, str], list] = {}
    for mname, margs in models:
        for bname, bargs in backends:
            path = out_dir / f"{mname}_{bname}.json"
            if not path.exists() and args.no_run:
                continue
            if not path.exists():
                t0 = time.perf_counter()
                cmd = ["eval", *margs, *bargs, "--n", str(args.n), "--num-envs", str(args.num_envs),
                       "--output", str(path), "--no-progress"]
                if args.config:
                    cmd += ["--config", args.config]
                if args.records:
                    cmd.append("--records")
                print(f"[{mname} x {bname}] zerosearch {' '.join(cmd)}", flush=True)
                rc = cli(cmd)
                if rc != 0:
                    print(f"eval_matrix: cell {mname} x {bname} failed (exit {rc})", file=sys.stderr)
                    return rc
                print(f"[{mname} x {bname}] {time.perf_counter() - t0:.0f} s", flush=True)
            report = json.loads(path.read_text(encoding="utf-8"))
            s = report["summary"]
            if report.get("records"):
                records[(mname, bname)] = report["records"]
            single = _merge_kinds(s["by_kind"], ("single",))
            multi = _merge_kinds(s["by_kind"], ("bridge", "comparison"))
            cells.append({"model": mname, "backend": bname, "n": s["n"], "em": s["em"], "em_se": _se(s["em"], s["n"]),
                          "format": s["format_compliance"], "single": single, "multi_hop": multi,
                          "searches_per_episode": s["searches_per_episode"], "invalid_rate": s["invalid_rate"],
                          "answer_in_results": s.get("answer_in_results"), "wall_s": report.get("wall_s")})

    def f(x, d=3):
        return "-" if x is None else f"{x:.{d}f}"

    lines = ["| model | backend | n | EM (± s.e.) | format | single-hop EM / format | multi-hop EM / format | "
             "searches/ep | invalid rate | results hold answer | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        lines.append(
            f"| {c['model']} | {c['backend']} | {c['n']} | {f(c['em'])} ± {f(c['em_se'])} | {f(c['format'], 2)} | "
            f"{f(c['single']['em'])} / {f(c['single']['format_compliance'], 2)} (n={c['single']['n']}) | "
            f"{f(c['multi_hop']['em'])} / {f(c['multi_hop']['format_compliance'], 2)} (n={c['multi_hop']['n']}) | "
            f"{f(c['searches_per_episode'], 2)} | {f(c['invalid_rate'])} | {f(c['answer_in_results'], 2)} | "
            f"{f(c['wall_s'], 0)} |")
    paired = _paired_rows(records, [m for m, _ in models], [b for b, _ in backends])
    if paired:
        lines += ["", "Paired on the same questions (exact McNemar test on the questions only one model got right):", "",
                  "| backend | from -> to | n | EM from | EM to | difference ± paired s.e. | only to right | only from right "
                  "| p (McNemar) |", "|---|---|---|---|---|---|---|---|---|"]
        for p in paired:
            lines.append(f"| {p['backend']} | {p['from']} -> {p['to']} | {p['n']} | {f(p['em_a'])} | {f(p['em_b'])} | "
                         f"{p['diff']:+.3f} ± {f(p['se'])} | {p['b_only']} | {p['a_only']} | {p['p_mcnemar']:.2g} |")
    table = "\n".join(lines)
    print(table)
    (out_dir / "matrix.md").write_text(table + "\n", encoding="utf-8")
    (out_dir / "matrix.json").write_text(json.dumps({"cells": cells, "paired": paired}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
