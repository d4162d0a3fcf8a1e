"""`zerosearch bench NAME [ARGS...]`: run benchmarks/NAME.py and print its figures.

    zerosearch bench --list
    zerosearch bench grpo_step --tiny-random

The script's last output line is a JSON object of its figures; it is printed again, pretty, at the end.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default=None, help="benchmark script name (without .py)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    parser.add_argument("--list", action="store_true", help="list the benchmarks")


def run(args: argparse.Namespace) -> int:
    scripts = sorted(p.stem for p in BENCH_DIR.glob("*.py")) if BENCH_DIR.is_dir() else []
    if args.list or not args.name:
        print("\n".join(scripts) if scripts else f"no benchmarks found in {BENCH_DIR}")
        return 0 if args.list or scripts else 2
    if args.name not in scripts:
        print(f"zerosearch bench: unknown benchmark {args.name!r}; choose one of {', '.join(scripts)}", file=sys.stderr)
        return 2
    proc = subprocess.run([sys.executable, str(BENCH_DIR / f"{args.name}.py"), *args.args],
                          stdout=subprocess.PIPE, text=True)
    sys.stdout.write(proc.stdout)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    if proc.returncode == 0 and lines:
        try:
            print(json.dumps(json.loads(lines[-1]), indent=1))
        except json.JSONDecodeError:
            print("zerosearch bench: the script's last line is not JSON", file=sys.stderr)
            return 1
    return proc.returncode
