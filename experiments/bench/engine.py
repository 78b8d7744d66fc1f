"""Benchmark: the co-simulation engine against a mosaik 3.6 scenario of the same job.

For each size, one scenario: households on IEEE 123 with PV and batteries under the
self-consumption rule, a uniform-price market per 100 households, the AC power flow every
15-minute step, 96 steps. Household sizes are scaled by 1,000/N so every size loads the
feeder alike. The same household arrays drive ours (local and Ray backends) and the mosaik
peer (experiments/bench/mosaik_peer.py), one after the other in one process.

Timed: the stepping (and, for ours, writing every record) after set-up; set-up (actor start,
mosaik world and connections) is reported apart. Throughput is household-steps per second.
The contenders take turns within each repeat (ours local, ours Ray, mosaik), so a slow
moment of the machine hits all of them; rates are medians over repeats, and the ratio to
mosaik is the median of the per-repeat ratios.

    cosim bench engine [--sizes 100 1000 10000 100000] [--mosaik-max 10000] [--no-ray]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cosim.backends import LocalBackend, RayBackend
from cosim.config import parse_config
from cosim.profiles import synthetic
from cosim.scenario import build
from cosim.simulation import Simulation
from experiments.bench.common import add_output_arguments, machine_info, save
from grid import load_feeder

MARK = "<!-- bench:engine -->"
END = "<!-- /bench:engine -->"
STEPS = 96


@dataclass
class Row:
    households: int
    local_setup_s: float
    local_run_s: float
    ray_setup_s: float | None = None
    ray_run_s: float | None = None
    mosaik_setup_s: float | None = None
    mosaik_run_s: float | None = None
    local_x_mosaik: float | None = None  # median over repeats of mosaik time / ours


    def rate(self, run_s: float | None) -> float | None:
        return None if run_s is None else self.households * STEPS / run_s


@dataclass
class Result:
    machine: dict[str, str]
    rows: list[Row] = field(default_factory=list)


def scenario_for(n: int, seed: int = 0):
    config = parse_config({
        "run": {"name": f"bench-{n}", "seed": seed, "steps": STEPS, "checkpoint_every": 24},
        "grid": {"feeder": "ieee123"},
        "households": {"count": n, "shard_size": max(-(-n // 4), 1),
                       "size_factor": 1000.0 / n},
        "markets": {"households_per_market": 100},
        "profiles": {"dataset": "synthetic"},
    }, "bench.toml")
    return build(config, synthetic(homes=200, steps=STEPS, seed=seed))


def _ours(scenario, backend, folder: Path) -> tuple[float, float]:
    """(set-up, stepping) seconds of one run."""
    sim = Simulation(scenario, backend, folder)
    start = time.perf_counter()
    sim.run(progress=False)
    setup = sim.wall["start_actors"]
    return setup, time.perf_counter() - start - setup


def run(sizes: list[int], mosaik_max: int, with_ray: bool, repeats: int = 3) -> Result:
    """Each contender `repeats` times per size, taking turns (module docstring)."""
    result = Result(machine=machine_info("cpu"))
    feeder = load_feeder("ieee123")
    for n in sizes:
        scenario = scenario_for(n)
        runs: dict[str, list[tuple[float, float]]] = {"local": [], "ray": [], "mosaik": []}
        with tempfile.TemporaryDirectory() as tmp:
            for k in range(repeats):
                runs["local"].append(_ours(scenario, LocalBackend(), Path(tmp) / f"local{k}"))
                if with_ray:
                    runs["ray"].append(_ours(scenario, RayBackend(num_cpus=2),
                                             Path(tmp) / f"ray{k}"))
                if n <= mosaik_max:
                    from experiments.bench import mosaik_peer  # only the benchmark needs it

                    out = mosaik_peer.run(_household_arrays(scenario), feeder,
                                          scenario.connections, STEPS)
                    runs["mosaik"].append((out["setup_s"], out["run_s"]))

        def median(name: str, i: int) -> float | None:
            return float(np.median([r[i] for r in runs[name]])) if runs[name] else None

        row = Row(n, median("local", 0), median("local", 1), median("ray", 0),
                  median("ray", 1), median("mosaik", 0), median("mosaik", 1))
        if runs["mosaik"]:
            row.local_x_mosaik = float(np.median([m[1] / o[1] for m, o in zip(
                runs["mosaik"], runs["local"])]))
        result.rows.append(row)
        print(_line(row), flush=True)
    return result


def _household_arrays(scenario) -> dict[str, np.ndarray]:
    """The households of our scenario, in household order, for the mosaik simulators."""
    shards = [s.kwargs["homes"] for s in scenario.actors if s.name.startswith("shard")]
    order = np.argsort(np.concatenate([h.household for h in shards]))
    cat = {k: np.concatenate([getattr(h, k) for h in shards])[order]
           for k in ("load_kw", "pv_kw", "connection")}
    for k, name in (("battery_kwh", "capacity_kwh"), ("battery_kw", "power_kw")):
        cat[k] = np.concatenate([h.devices["battery"][name] for h in shards])[order]
    return cat


def _line(row: Row) -> str:
    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:,.0f}"

    return (f"{row.households:>7,} households: ours local {fmt(row.rate(row.local_run_s))}/s, "
            f"ray {fmt(row.rate(row.ray_run_s))}/s, mosaik {fmt(row.rate(row.mosaik_run_s))}/s")


def markdown(result: Result, args: argparse.Namespace) -> str:
    m = result.machine
    lines = [
        MARK,
        f"### Co-simulation engine against mosaik 3.6 ({m['date']})",
        "",
        f"Machine: {m['cpu']}; torch {m['torch']}. Command: `cosim bench engine --sizes "
        f"{' '.join(map(str, args.sizes))} --mosaik-max {args.mosaik_max}"
        f"{' --no-ray' if args.no_ray else ''}`. Households on IEEE 123, 96 steps of 15 min, "
        "a market per 100 households, AC power flow every step; ours writes every record, "
        "mosaik records nothing. Rates are household-steps per second of stepping, medians "
        f"over {args.repeats} repeats in which the contenders take turns; local x mosaik is "
        "the median of the per-repeat ratios. Set-up (actor start, mosaik world and "
        "connections) is in its own columns.",
        "",
        "| households | ours local /s | ours Ray /s | mosaik /s | local x mosaik "
        "| Ray / local wall | set-up local, Ray, mosaik (s) |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in result.rows:
        def rate(x: float | None) -> str:
            return "-" if x is None else f"{row.households * STEPS / x:,.0f}"

        ratio = "-" if row.local_x_mosaik is None else f"{row.local_x_mosaik:.1f}"
        ray_ratio = "-" if row.ray_run_s is None else f"{row.ray_run_s / row.local_run_s:.1f}"
        setups = ", ".join("-" if x is None else f"{x:.1f}" for x in
                           (row.local_setup_s, row.ray_setup_s, row.mosaik_setup_s))
        lines.append(f"| {row.households:,} | {rate(row.local_run_s)} | {rate(row.ray_run_s)} "
                     f"| {rate(row.mosaik_run_s)} | {ratio} | {ray_ratio} | {setups} |")
    lines.append(END)
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000, 100000])
    parser.add_argument("--mosaik-max", type=int, default=10000,
                        help="largest size to run the mosaik peer at")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray backend")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per contender and size, taking turns; medians count")
    add_output_arguments(parser)


def main(args: argparse.Namespace) -> int:
    result = run(args.sizes, args.mosaik_max, not args.no_ray, args.repeats)
    save("engine", args, markdown(result, args), asdict(result), MARK, END)
    return 0
