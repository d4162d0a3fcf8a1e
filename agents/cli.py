"""The `zerosearch` command line. Each sub-command lives in `agents/commands/<name>.py` ("-" -> "_") and
exposes `add_arguments(parser)` and `run(args) -> int`; they are imported only when used."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "demo": "run baseline agents (oracle, closed-book, random) on the vector env and print EM/F1",
    "train": "train a search agent (warm-up, then GRPO) from a preset or a config file",
    "eval": "evaluate a checkpoint, base model or baseline agent on a split; writes a JSON report",
    "compare": "one agent against several search backends: EM, F1, latency, cost; table and PNG",
    "serve": "serve any backend behind a Search-R1-compatible /retrieve HTTP endpoint",
    "fidelity": "the same queries through the simulator and a real backend: answer leaks, realism, discriminator AUROC",
    "bench": "run a benchmark script from benchmarks/ and print its figures",
    "sprm-fit": "fit a checkpoint's SPRM head on the policy's own rollouts (for eval --best-of)",
    "sim-tune": "fine-tune the simulator on real search traffic (labelled useful/noisy query-document pairs, TRL SFT)",
    "flywheel": "serve, gate, write back, harvest and train in rounds (issue 15), with ablations; table, JSON, PNG",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zerosearch",
        description="Train LLM search agents with RL against a simulated search engine.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(f"agents.commands.{name.replace('-', '_')}")
        except ModuleNotFoundError as e:
            if e.name != f"agents.commands.{name.replace('-', '_')}":
                raise
            p.set_defaults(_unavailable=name)
            continue
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_unavailable", None):
        print(f"zerosearch {args.command}: not available in this version", file=sys.stderr)
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
