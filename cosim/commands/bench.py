"""`cosim bench`: the benchmarks of experiments/bench, side by side with their peers."""

from __future__ import annotations

import argparse
import importlib

# name (a module of experiments/bench with add_arguments and main) and its one-line help
BENCHMARKS = (
    ("powerflow", "batched power flow against OpenDSS"),
    ("profiles", "household profile generator against its peers"),
    ("engine", "co-simulation engine against a mosaik 3.6 peer"),
    ("copies", "small runs for RL: one 6-house microgrid, and N copies of it as one batch"),
    ("households", "households with every device against a naive per-household loop"),
    ("markets", "market clearing (double auction, MAHTM pool) against a per-market numpy loop"),
    ("rl", "RLlib training: one stacked module for every household against one RLlib "
           "module per agent"),
    ("gradmap", "GradMAP against SSL: wall time to the same target at 100 and 1,000 agents"),
    ("viz", "the viewer: time per rendered step at 100 and 1,000 households on IEEE 123"),
    ("nodes", "one run on a two-node Ray cluster against the local backend: efficiency"),
    ("sweep", "cosim sweep: 1 to 8 variants, one after another, on Ray and on two nodes"),
    ("longrun", "a year of 15-minute steps for 1,000 households on IEEE 123: time and memory"),
)


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(
        dest="bench_command", required=True, metavar="BENCHMARK")
    for name, text in BENCHMARKS:
        # experiments sits above cosim in the dependency order; only the CLI reaches up to it
        module = importlib.import_module(f"experiments.bench.{name}")
        parser = bench.add_parser(name, help=text)
        module.add_arguments(parser)
        parser.set_defaults(func=module.main)
