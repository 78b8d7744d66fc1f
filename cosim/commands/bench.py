"""`cosim bench`: the benchmarks of experiments/bench, side by side with their peers."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    # experiments sits above cosim in the dependency order; only the CLI reaches up to it.
    from experiments.bench import engine, households, markets, powerflow, profiles, rl

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(
        dest="bench_command", required=True, metavar="BENCHMARK")
    pf = bench.add_parser("powerflow", help="batched power flow against OpenDSS")
    powerflow.add_arguments(pf)
    pf.set_defaults(func=powerflow.main)
    prof = bench.add_parser("profiles", help="household profile generator against its peers")
    profiles.add_arguments(prof)
    prof.set_defaults(func=profiles.main)
    eng = bench.add_parser("engine", help="co-simulation engine against a mosaik 3.6 peer")
    engine.add_arguments(eng)
    eng.set_defaults(func=engine.main)
    homes = bench.add_parser("households", help="households with every device against a "
                             "naive per-household loop")
    households.add_arguments(homes)
    homes.set_defaults(func=households.main)
    mkt = bench.add_parser("markets", help="market clearing (double auction, MAHTM pool) "
                           "against a per-market numpy loop")
    markets.add_arguments(mkt)
    mkt.set_defaults(func=markets.main)
    train = bench.add_parser("rl", help="RLlib training with the stacked policy bank against "
                             "one RLlib module per agent")
    rl.add_arguments(train)
    train.set_defaults(func=rl.main)
