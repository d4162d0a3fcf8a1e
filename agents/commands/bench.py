"""`zerosearch bench NAME [ARGS...]`: run benchmarks/NAME.py and print its figures.

    zerosearch bench --list
    zerosearch bench grpo_step --tiny-random

The script's last output line is a JSON object of its figures; it is printed again, pretty, at the end.
The scripts live in the repository's `benchmarks/` folder, which the installed wheel does not ship:
this command works from a source checkout only.
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
    if not BENCH_DIR.is_dir():
        print(f"zerosearch bench: no benchmarks folder at {BENCH_DIR}: the benchmark scripts are not part of the "
              "installed package, so this command works only from a source checkout "
              "(git clone the zerosearch-env repository, pip install -e . there, and run it from that checkout)",
              file=sys.stderr)
        return 2
    scripts = sorted(p.stem for p in BENCH_DIR.glob("*.py"))
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
