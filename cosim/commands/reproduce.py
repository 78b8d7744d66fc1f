"""`cosim reproduce NAME`: a seed paper's table, re-run here beside the paper's numbers.

    cosim reproduce mahtm [--quick] [--out DIR] [--seed N]

Each NAME is a module of experiments/reproduce (its registry, REPRODUCTIONS, lists only
those that exist). A reproduction prints its table with the paper's numbers beside ours
and writes table.md and table.csv under the run folder (`--out`); `--quick` is a reduced
run for CI that still exercises every part. An unknown NAME or a bad option is exit code
2, naming what is available.
"""

from __future__ import annotations

import argparse
import importlib


def register(commands: argparse._SubParsersAction) -> None:
    # experiments sits above cosim in the dependency order; only the CLI reaches up to it
    from experiments.reproduce import REPRODUCTIONS

    reproduce = commands.add_parser(
        "reproduce", help="reproduce a seed paper's table",
        description="Re-run a seed paper's experiment and print its table beside the "
        "paper's numbers. Available: " + ", ".join(REPRODUCTIONS) + ".")
    names = reproduce.add_subparsers(dest="reproduction", required=True, metavar="NAME")
    for name, (module_name, text) in REPRODUCTIONS.items():
        module = importlib.import_module(module_name)
        parser = names.add_parser(name, help=text, description=text)
        module.add_arguments(parser)
        parser.set_defaults(func=module.main)

