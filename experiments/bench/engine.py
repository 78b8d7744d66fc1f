"""Benchmark: the co-simulation engine against the limit and against mosaik 3.6.

For each size, one scenario: households on IEEE 123 with PV and batteries under the
self-consumption rule (orders at each household's marginal value, the reserve covering what
the market did not fill), a uniform-price double auction per 100 households, the AC power
flow every 15-minute step, 96 steps. Household sizes are scaled by 1,000/N so every size
loads the feeder alike. Contenders, all on the same households and the same library code
(`agents.households`, `markets.double_auction`, `grid`):

- **ours**: `cosim.Simulation` on the local backend, writing every record (and on Ray,
  whose runs take the hosts the last run closed: warm processes, as the local backend's
  is from the second repeat on);
- **limit**: the pure compute of the same steps in one process without the engine: all
  households as one batch (device step, rule, orders, cover), one clearing call for every
  market, the power flow at batch 1 warm-started from the last step, and the same record
  tables written to Parquet (cosim.records.RunFolder.write) at ours' checkpoints, one
  thread;
- **mosaik** (experiments/bench/mosaik_peer.py): the per-household layout with OpenDSS as
  grid, and the array layout (one entity per group of microgrids) with OpenDSS and with our
  power flow as grid, both recording nothing, and with our power flow writing every record
  (the tables ours writes, equal to ours': households, trades, markets, grid, buses,
  lines; encoded on a writer thread at ours' checkpoints, as ours does). The array layout's
  number of entities is the fastest of the candidates (one per microgrid, one per ten, as
  many as our shards), picked per size by a short untimed calibration run.

Timed: the stepping (and, where records are written, writing them) after set-up;
set-up (actor start, mosaik world and connections) is reported apart. Throughput is
household-steps per second. The contenders take turns within each repeat, so a slow moment
of the machine hits all of them, and each starts after a garbage collection, so none pays
for the last one's garbage; rates are medians over repeats, and each ratio is the median
of the per-repeat ratios. Sizes up to SMALL households run SMALL_REPEATS times as many
repeats: a 100-household run takes about 0.2 s, and the machine's speed moves by more than
its margins from one run to the next.

    cosim bench engine [--sizes 100 1000 10000 100000] [--mosaik-max 10000] [--no-ray]
                       [--repeats 3] [--array-max N] [--array-entities K ...] [--steps 96]
                       [--threads T]
"""

from __future__ import annotations

import argparse
import gc
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cosim.backends import LocalBackend, RayBackend
from cosim.config import auto_checkpoint_every, parse_config
from cosim.profiles import synthetic
from cosim.scenario import Scenario, build
from cosim.simulation import Simulation
from experiments.bench.common import add_output_arguments, machine_info, save
from grid import PowerFlow, load_feeder
from markets.double_auction import DoubleAuction
from markets.mechanism import Orders

MARK = "<!-- bench:engine -->"
END = "<!-- /bench:engine -->"
STEPS = 96
SMALL, SMALL_REPEATS = 1000, 3  # sizes up to SMALL households: 3x the repeats
# contenders in the order they take turns within a repeat
CONTENDERS = ("ours", "ray", "limit", "mosaik_household", "mosaik_array_opendss",
              "mosaik_array_powerflow", "mosaik_array_records")


@dataclass
class Row:
    households: int
    steps: int
    # medians over repeats, seconds; None where the contender did not run
    setup_s: dict[str, float | None] = field(default_factory=dict)
    run_s: dict[str, float | None] = field(default_factory=dict)
    # median over repeats of contender's run time / ours (for the limit: ours / limit)
    ratio: dict[str, float | None] = field(default_factory=dict)
    array_entities: int | None = None  # mosaik array layout: entities (groups) used
    calibration_s: dict[int, float] = field(default_factory=dict)  # entities -> run s
    # the same for the array layout writing every record (calibrated with its records)
    records_entities: int | None = None
    records_calibration_s: dict[int, float] = field(default_factory=dict)
    repeats: dict[str, list[float]] = field(default_factory=dict)  # raw run times
    # the limit's seconds per part (households, clearing, power_flow, records), medians
    limit_parts_s: dict[str, float] = field(default_factory=dict)

    def rate(self, name: str) -> float | None:
        run = self.run_s.get(name)
        return None if run is None else self.households * self.steps / run


@dataclass
class Result:
    machine: dict[str, str]
    rows: list[Row] = field(default_factory=list)


def scenario_for(n: int, seed: int = 0, steps: int = STEPS, per_market: int = 100) -> Scenario:
    """The benchmark's scenario at `n` households (module docstring)."""
    config = parse_config({
        # checkpoints (records written) and shards as a user gets them by default:
        # "auto", by the household count and the machine
        "run": {"name": f"bench-{n}", "seed": seed, "steps": steps},
        "grid": {"feeder": "ieee123"},
        "households": {"count": n, "size_factor": 1000.0 / n},
        "markets": {"households_per_market": per_market},
        "profiles": {"dataset": "synthetic"},
    }, "bench.toml")
    return build(config, synthetic(homes=200, steps=steps, seed=seed))


def homes_of(scenario: Scenario) -> object:
    """The households of our scenario, in household order, as the mosaik peer and the limit
    read them (experiments.bench.mosaik_peer.Homes): the same arrays our shards step."""
    from experiments.bench.mosaik_peer import Homes  # imports mosaik: only where needed

    specs = {s.name: s for s in scenario.actors}
    shards = [s.kwargs["homes"] for s in scenario.actors if s.name.startswith("shard")]
    if any((h.policy != "rule").any() for h in shards):
        raise ValueError("the engine benchmark's peers run the rule policy only")
    ids = np.concatenate([h.household for h in shards])
    order = np.argsort(ids)

    def cat(x: list[np.ndarray | None]) -> np.ndarray | None:
        return None if x[0] is None else np.concatenate(x)[order]

    devices = {
        name: {k: (cat([h.devices[name][k] for h in shards]) if isinstance(v, np.ndarray)
                   else v) for k, v in kw.items()}
        for name, kw in shards[0].devices.items()}
    first = shards[0]
    tariff = specs["distributor"].cls("distributor", **specs["distributor"].kwargs).table()
    market_spec = next(s for s in scenario.actors if s.name.startswith("market"))
    if market_spec.kwargs["kind"] != "double_auction":
        raise ValueError("the engine benchmark's peers clear with the double auction only")
    return Homes(
        market=cat([h.market for h in shards]), connection=cat([h.connection for h in shards]),
        load_kw=cat([h.load_kw for h in shards]), pv_kw=cat([h.pv_kw for h in shards]),
        devices=devices, initial=dict(first.initial), power_factor=first.power_factor,
        hour=first.hour, weekend=first.weekend, outdoor_c=first.outdoor_c,
        buy=tariff[:, 0], sell=tariff[:, 1], auction=dict(market_spec.kwargs["settings"]),
        dt_s=float(scenario.config.run.dt_s),
        ev_at_home=cat([h.ev_at_home for h in shards]),
        ev_trip_kwh=cat([h.ev_trip_kwh for h in shards]),
        ev_steps_left=cat([h.ev_steps_left for h in shards]),
        carbon=next(s for s in scenario.actors if s.name == "feed").kwargs["carbon_intensity"],
        time=scenario.time)


def _ours(scenario: Scenario, backend: object, folder: Path) -> tuple[float, float]:
    """(set-up, stepping) seconds of one run."""
    sim = Simulation(scenario, backend, folder)
    start = time.perf_counter()
    sim.run(progress=False)
    setup = sim.wall["start_actors"]
    return setup, time.perf_counter() - start - setup


def limit(scenario: Scenario, homes: object, feeder: object, folder: Path,
          trace: bool = False) -> dict[str, object]:
    """The pure compute of the scenario's steps in one process, one thread (module
    docstring): set-up and stepping seconds, and with `trace` a mosaik_peer.Trace of what
    it computed (household net draw, market prices, substation kW)."""
    from experiments.bench.mosaik_peer import (
        Fleet,
        Records,
        Trace,
        fills,
        grid_rows,
        household_rows,
        market_rows,
    )

    t0 = time.perf_counter()
    steps, n, n_markets = scenario.config.run.steps, homes.n, homes.n_markets
    fleet = Fleet(homes, np.arange(n))
    pf = PowerFlow(feeder, scenario.connections, device="cpu", tol=scenario.config.grid.tol)
    if feeder.shaped:
        raise NotImplementedError("the limit has no daily generation shapes")
    auction = DoubleAuction(**homes.auction)
    n_conn = len(scenario.connections)
    conn_base_v = feeder.connection_bases_v(scenario.connections)
    household = np.arange(n)
    # the same Parquet parts as ours writes, written in line at ours' checkpoints
    written = Records(folder, scenario.time, steps, scenario.config.run.checkpoint_every,
                      threaded=False)
    record = Trace(np.empty((steps, n)), np.empty((steps, n_markets)), np.empty(steps),
                   np.empty((steps, n))) if trace else None
    warm = None
    # seconds spent in each part: households (rule, orders, cover, device step, bill),
    # clearing, power flow, records (columns, Parquet encoding, writing)
    parts = dict.fromkeys(("households", "clearing", "power_flow", "records"), 0.0)
    t1 = time.perf_counter()
    for t in range(steps):
        a = time.perf_counter()
        quantity, limit_price = fleet.decide(t)
        b = time.perf_counter()
        orders = Orders(household, homes.market, quantity, limit_price, n_markets)
        result = auction.clear(orders, None, homes.market)
        c = time.perf_counter()
        p, q = fleet.dispatch(result.filled_kwh, result.payment)
        d = time.perf_counter()
        solved = pf.solve(torch.as_tensor(np.bincount(homes.connection, p, n_conn)[None]),
                          torch.as_tensor(np.bincount(homes.connection, q, n_conn)[None]),
                          load_scale=0.0, initial=warm)
        converged = bool(solved.converged[0])
        warm = solved.u if converged else None
        e = time.perf_counter()
        parts["households"] += (b - a) + (d - c)
        parts["clearing"] += c - b
        parts["power_flow"] += e - d
        # the record tables ours writes: households, trades, markets, grid, buses, lines
        conn_v = np.abs(solved.connection_voltages[0].numpy()) / conn_base_v
        written.add(t, "limit", {"households": household_rows(
            fleet, fills(result), homes.carbon[t], conn_v[homes.connection])})
        written.add(t, "limit", market_rows(t, household, homes.market, quantity,
                                            limit_price, result, np.arange(n_markets)))
        written.add(t, "limit", grid_rows(t, solved, float(p.sum()), feeder.nodes))
        written.voltages(t, conn_v)  # the step is complete: flushed at a checkpoint
        if trace:
            record.net_kw[t], record.bill[t] = fleet.net_kw, fleet.bill
            record.price[t] = result.market_price
            record.substation_kw[t] = float(solved.substation_power[0].real)
        parts["records"] += time.perf_counter() - e
    written.close()
    t2 = time.perf_counter()
    out: dict[str, object] = {"setup_s": t1 - t0, "run_s": t2 - t1, "parts_s": parts}
    if trace:
        out["trace"] = record
    return out


def repeats_at(n: int, repeats: int) -> int:
    """Repeats at `n` households: SMALL_REPEATS times `repeats` up to SMALL households."""
    return repeats * SMALL_REPEATS if n <= SMALL else repeats


def array_candidates(n_markets: int, shards: int) -> list[int]:
    """Entity counts tried for mosaik's array layout: one per microgrid, one per ten
    microgrids, and as many as our shards."""
    return sorted({n_markets, max(1, -(-n_markets // 10)), min(shards, n_markets)})


def calibrate(homes: object, feeder: object, connections: list[str],
              candidates: list[int], steps: int = 8, rounds: int = 3,
              records: bool = False) -> dict[int, float]:
    """Run seconds of a short array-layout run (our power flow as grid) per candidate
    entity count, the best of `rounds` in which the candidates take turns (run one after
    the other, best of two, it picked ten entities over one at 10,000 households in two
    runs, where one ran twice as fast in the timed runs): untimed for the table, it only
    picks the layout. With `records`, the layout writing every record, flushed every
    `steps // 2` steps, so that the second half steps beside the first half's writing (as
    ours' shards, its entities' best size changes when a writer runs beside them)."""
    from experiments.bench import mosaik_peer

    best = dict.fromkeys(candidates, math.inf)
    for _ in range(rounds):
        for c in candidates:
            with tempfile.TemporaryDirectory() as tmp:
                written = ({"records": Path(tmp), "records_every": max(1, steps // 2)}
                           if records else {})
                best[c] = min(best[c], mosaik_peer.run(
                    homes, feeder, connections, steps, layout="array", grid="powerflow",
                    entities=c, **written)["run_s"])
    return best


def run(sizes: list[int], mosaik_max: int, with_ray: bool, repeats: int = 3,
        array_max: int | None = None, steps: int = STEPS,
        entities: list[int] | None = None) -> Result:
    """Each contender `repeats` times per size, taking turns (module docstring). The
    per-household mosaik layout runs up to `mosaik_max` households, the array layout up
    to `array_max` (None: every size); `entities` overrides the array candidates."""
    from experiments.bench import mosaik_peer  # imports mosaik

    result = Result(machine=machine_info("cpu"))
    feeder = load_feeder("ieee123")
    for n in sizes:
        scenario = scenario_for(n, steps=steps)
        homes = homes_of(scenario)
        conns = scenario.connections
        row = Row(n, steps)
        use_array = array_max is None or n <= array_max
        if use_array:
            shards = sum(s.name.startswith("shard") for s in scenario.actors)
            candidates = entities or array_candidates(homes.n_markets, shards)
            row.calibration_s = calibrate(homes, feeder, conns, candidates,
                                          steps=min(8, steps))
            row.array_entities = min(row.calibration_s, key=row.calibration_s.get)
            row.records_calibration_s = calibrate(homes, feeder, conns, candidates,
                                                  steps=min(16, steps), records=True)
            row.records_entities = min(row.records_calibration_s,
                                       key=row.records_calibration_s.get)
        runs: dict[str, list[tuple[float, float]]] = {c: [] for c in CONTENDERS}
        parts: list[dict[str, float]] = []
        with tempfile.TemporaryDirectory() as tmp:
            def local(k: int) -> tuple[float, float]:
                return _ours(scenario, LocalBackend(), Path(tmp) / f"local{k}")

            def ray(k: int) -> tuple[float, float]:
                return _ours(scenario, RayBackend(num_cpus=2), Path(tmp) / f"ray{k}")

            def the_limit(k: int) -> tuple[float, float]:
                out = limit(scenario, homes, feeder, Path(tmp) / f"limit{k}")
                parts.append(out["parts_s"])
                return out["setup_s"], out["run_s"]

            def mosaik(records: bool = False, **kw: object
                       ) -> Callable[[int], tuple[float, float]]:
                def go(k: int) -> tuple[float, float]:
                    written = ({"records": Path(tmp) / f"mosaik{k}",
                                "records_every": scenario.config.run.checkpoint_every}
                               if records else {})
                    out = mosaik_peer.run(homes, feeder, conns, steps, **kw, **written)
                    return out["setup_s"], out["run_s"]
                return go

            array = {"layout": "array", "entities": row.array_entities}
            takes = {"ours": local, "ray": ray if with_ray else None, "limit": the_limit,
                     "mosaik_household": mosaik(layout="household")
                     if n <= mosaik_max else None}
            if use_array:
                takes |= {"mosaik_array_opendss": mosaik(**array, grid="opendss"),
                          "mosaik_array_powerflow": mosaik(**array, grid="powerflow"),
                          "mosaik_array_records": mosaik(
                              True, layout="array", entities=row.records_entities,
                              grid="powerflow")}
            for k in range(repeats_at(n, repeats)):
                for name, take in takes.items():  # in the order of CONTENDERS
                    if take is not None:
                        # the last contender's garbage is not the next one's to collect:
                        # the per-household layout's at 10,000 households, 190,000
                        # objects, took 0.5 s
                        gc.collect()
                        runs[name].append(take(k))
                        # nor its files: run folders left to pile up (about 200 MB a run
                        # at 10,000 households) made the later runs slower, Ray's the
                        # most (0.74 s in the first repeat, 1.26 s in the fifth)
                        for folder in Path(tmp).iterdir():
                            shutil.rmtree(folder)

        row.limit_parts_s = {k: float(np.median([p[k] for p in parts])) for k in parts[0]}
        ours = [r[1] for r in runs["ours"]]
        for name, times in runs.items():
            if not times:
                row.setup_s[name] = row.run_s[name] = row.ratio[name] = None
                continue
            row.setup_s[name] = float(np.median([r[0] for r in times]))
            row.run_s[name] = float(np.median([r[1] for r in times]))
            row.repeats[name] = [r[1] for r in times]
            per_repeat = ([o / r[1] for o, r in zip(ours, times)] if name == "limit"
                          else [r[1] / o for o, r in zip(ours, times)])
            row.ratio[name] = float(np.median(per_repeat))
        result.rows.append(row)
        print(_line(row), flush=True)
    return result


def _fmt(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _entities(row: Row) -> str:
    """The array layout's entity count, and the recording one's where it differs."""
    if row.records_entities in (None, row.array_entities):
        return _fmt(row.array_entities)
    return f"{_fmt(row.array_entities)} ({row.records_entities} with records)"


def _line(row: Row) -> str:
    return (f"{row.households:>7,} households (household-steps/s): ours "
            f"{_fmt(row.rate('ours'))}, limit {_fmt(row.rate('limit'))}, mosaik per household "
            f"{_fmt(row.rate('mosaik_household'))}, array OpenDSS "
            f"{_fmt(row.rate('mosaik_array_opendss'))}, array our power flow "
            f"{_fmt(row.rate('mosaik_array_powerflow'))}, with every record "
            f"{_fmt(row.rate('mosaik_array_records'))} ({row.array_entities} entities, "
            f"{row.records_entities} with records), "
            f"Ray {_fmt(row.rate('ray'))}")


def markdown(result: Result, args: argparse.Namespace) -> str:
    m = result.machine
    steps = result.rows[0].steps if result.rows else STEPS
    flags = (f"--sizes {' '.join(map(str, args.sizes))} --mosaik-max {args.mosaik_max}"
             f"{'' if args.array_max is None else f' --array-max {args.array_max}'}"
             f"{' --no-ray' if args.no_ray else ''} --repeats {args.repeats}"
             f"{'' if args.steps == STEPS else f' --steps {args.steps}'}"
             f"{'' if args.threads is None else f' --threads {args.threads}'}")
    every = ", ".join(f"{auto_checkpoint_every(row.households)} steps at "
                      f"{row.households:,} households" for row in result.rows)
    lines = [
        MARK,
        f"### Co-simulation engine against the limit and mosaik 3.6 ({m['date']})",
        "",
        f"Machine: {m['cpu']}; torch {m['torch']} ({m['torch_threads']} threads). Command: "
        f"`cosim bench engine {flags}`. Households on IEEE 123, {steps} steps of 15 min, a "
        "market per 100 households, AC power flow every step. Ours and the limit write every "
        "record; mosaik records nothing, except in the array layout with every record: "
        "the households, trades, markets, grid, buses and lines tables ours writes, equal "
        "to ours, encoded on a writer thread at ours' checkpoints as ours does (the "
        f"default, by the household count: {every}). "
        "Rates are household-steps per second of stepping, "
        f"medians over {args.repeats} repeats ({repeats_at(SMALL, args.repeats)} up to "
        f"{SMALL:,} households) in which the contenders take turns. "
        "**ours / limit** is ours' time over the limit's (the target is at most 1.25); "
        "**ours x** a peer is the peer's time over ours (above 1: ours is faster); both are "
        "medians of per-repeat ratios. Array entities: the number of mosaik entities "
        "(groups of microgrids) of the array layout, the fastest of "
        "the candidates by a short calibration run (with every record: its own run, "
        "writing). Set-up (actor start, mosaik world and "
        "connections) is in its own column. On Ray, a run takes the hosts the last one "
        "closed (as a user's next run in the same process does), so from the second "
        "repeat on its set-up is building the actors in them.",
        "",
        "| households | ours /s | limit /s | ours / limit | mosaik per household /s "
        "| mosaik array, OpenDSS /s | mosaik array, our power flow /s "
        "| mosaik array, every record /s | array entities "
        "| ours x per household | ours x array (OpenDSS) | ours x array (our power flow) "
        "| ours x array (every record) "
        "| ours Ray /s | Ray / local wall | set-up ours, Ray, limit, per household, array "
        "(s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in result.rows:
        r = row.ratio
        setups = ", ".join(_fmt(row.setup_s.get(k), 1) for k in (
            "ours", "ray", "limit", "mosaik_household", "mosaik_array_opendss"))
        lines.append(
            f"| {row.households:,} | {_fmt(row.rate('ours'))} | {_fmt(row.rate('limit'))} "
            f"| {_fmt(r.get('limit'), 2)} | {_fmt(row.rate('mosaik_household'))} "
            f"| {_fmt(row.rate('mosaik_array_opendss'))} "
            f"| {_fmt(row.rate('mosaik_array_powerflow'))} "
            f"| {_fmt(row.rate('mosaik_array_records'))} | {_entities(row)} "
            f"| {_fmt(r.get('mosaik_household'), 2)} | {_fmt(r.get('mosaik_array_opendss'), 2)} "
            f"| {_fmt(r.get('mosaik_array_powerflow'), 2)} "
            f"| {_fmt(r.get('mosaik_array_records'), 2)} | {_fmt(row.rate('ray'))} "
            f"| {_fmt(r.get('ray'), 1)} | {setups} |")
    lines += ["", "Where the limit's time goes, ms per step (medians over repeats):", "",
              "| households | households (rule, orders, cover, devices, bill) | clearing "
              "| power flow | records (columns, Parquet, write) | ours, all phases |",
              "|---:|---:|---:|---:|---:|---:|"]
    for row in result.rows:
        ms = {k: 1e3 * v / row.steps for k, v in row.limit_parts_s.items()}
        lines.append(f"| {row.households:,} | {ms['households']:.1f} | {ms['clearing']:.1f} "
                     f"| {ms['power_flow']:.1f} | {ms['records']:.1f} "
                     f"| {1e3 * row.run_s['ours'] / row.steps:.1f} |")
    lines.append(END)
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000, 100000])
    parser.add_argument("--mosaik-max", type=int, default=10000,
                        help="largest size to run mosaik's per-household layout at")
    parser.add_argument("--array-max", type=int, default=None,
                        help="largest size to run mosaik's array layout at (default: all)")
    parser.add_argument("--array-entities", type=int, nargs="+", default=None,
                        help="entity counts to try for mosaik's array layout (default: one "
                             "per microgrid, one per ten, as many as our shards)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray backend")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per contender and size, taking turns; medians count")
    parser.add_argument("--steps", type=int, default=STEPS, help="15-minute steps per run")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of this process, for every in-process contender "
                             "alike (default: torch's); on a machine shared with other work, "
                             "1 avoids threads waiting on a busy core")
    add_output_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = run(args.sizes, args.mosaik_max, not args.no_ray, args.repeats, args.array_max,
                 args.steps, args.array_entities)
    save("engine", args, markdown(result, args), asdict(result), MARK, END)
    return 0
