"""The `cosim` command line. Each command group lives in a module of cosim/commands.

    cosim run CONFIG                run a scenario (local or Ray backend), or --resume RUN_DIR
    cosim sweep CONFIG --set K=a,b  the cross product of a scenario's variants, as Ray tasks
    cosim bank init CONFIG          a policy bank, one policy per household of a scenario
    cosim grid info FEEDER          facts about a feeder (shipped name or .dss path)
    cosim grid solve FEEDER         power-flow demo: base case plus random scenarios, a plot
    cosim viz RUN_DIR | CONFIG --live   the Mesa SolaraViz viewer of a run, in the browser
    cosim report RUN_DIR            a run's PNG plots and a Markdown summary
    cosim bench powerflow           batched power flow against OpenDSS, side by side
    cosim bench engine|profiles|households|markets   the other benchmarks and their peers
    cosim hems interview|evaluate   natural-language HEMS set-up, and its accuracy
    cosim reproduce NAME            a seed paper's table re-run beside its numbers
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from grid.errors import GridError

# Command groups in the order `cosim --help` lists them.
GROUPS = ("run", "sweep", "train", "bank", "grid", "data", "viz", "bench", "hems",
          "reproduce")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cosim",
        description="Grid-edge co-simulation: households, markets and three-phase power flow.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        importlib.import_module(f"cosim.commands.{group}").register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GridError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
