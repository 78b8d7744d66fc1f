"""`cosim bench`: the benchmarks of experiments/bench, side by side with their peers."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    # experiments sits above cosim in the dependency order; only the CLI reaches up to it.
    from experiments.bench import powerflow

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(
        dest="bench_command", required=True, metavar="BENCHMARK")
    pf = bench.add_parser("powerflow", help="batched power flow against OpenDSS")
    powerflow.add_arguments(pf)
    pf.set_defaults(func=powerflow.main)
