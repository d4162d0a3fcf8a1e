"""Best-of-N against greedy decoding of the same checkpoint, paired per question, recomputed from
`zerosearch eval --best-of N --records` reports (their greedy records and per-sample head scores).

    python benchmarks/best_of_vs_greedy.py benchmarks/results/tiny_signals/*_eval_bm25_bo4_fit.json

Prints one line per (report, head) and ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.sprm import selection_by_score  # noqa: E402


def figures(report: dict) -> dict:
    """Per head: best-of-N EM, greedy EM, paired gain over greedy and over one sample (with s.e.)."""
    best = report.get("best_of") or {}
    samples, n = best.get("samples"), best.get("n")
    if not samples or not report.get("records"):
        raise ValueError("the report needs per-sample scores and greedy records (eval --best-of N --records)")
    greedy = {r["task_id"]: float(r["em"]) for r in report["records"]}
    task_ids = [samples[g]["task_id"] for g in range(0, len(samples), n)]
    em = [float(s["em"]) for s in samples]
    out = {}
    for head in samples[0]["scores"]:
        f = selection_by_score([s["scores"][head] for s in samples], em, n, [greedy[t] for t in task_ids])
        out[head or best["sprm_head"]] = {"questions": len(task_ids), **{k: f[k] for k in (
            "best_of_n_em", "greedy_em", "gain_over_greedy", "gain_over_greedy_se", "gain_over_best_of_1", "gain_se")}}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="eval JSON reports written with --best-of N --records")
    args = parser.parse_args(argv)
    result = {}
    for path in args.reports:
        for head, f in figures(json.loads(Path(path).read_text(encoding="utf-8"))).items():
            result[f"{Path(path).name}:{head}"] = f
            print(f"{Path(path).name} | {head}: best-of-N {f['best_of_n_em']:.3f} vs greedy {f['greedy_em']:.3f}: "
                  f"{f['gain_over_greedy']:+.3f} ± {f['gain_over_greedy_se']:.3f} (over one sample "
                  f"{f['gain_over_best_of_1']:+.3f} ± {f['gain_se']:.3f}), n={f['questions']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
