"""`cosim run`: a scenario from its TOML file, on the local or the Ray backend."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run", help="run a scenario", description="Run a scenario (or resume a run).")
    run.add_argument("config", nargs="?", type=Path, help="scenario TOML file")
    run.add_argument("--backend", choices=("local", "ray"), default="local")
    run.add_argument("--address", default=None,
                     help="Ray cluster to join (ray backend), e.g. auto or host:6379")
    run.add_argument("--num-cpus", type=int, default=None,
                     help="CPUs for a Ray instance started here (ray backend)")
    run.add_argument("--out", type=Path, default=None,
                     help="run folder (default runs/<name>-<timestamp>)")
    run.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    run.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                     help="continue a run from its last checkpoint")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    from cosim.backends import LocalBackend, PhaseError, RayBackend
    from cosim.config import ConfigError, ScenarioConfig, load_config
    from cosim.engine import Engine
    from cosim.profiles import load_profiles
    from cosim.scenario import build

    try:
        if args.resume:
            folder = args.resume
            manifest_path = folder / "manifest.json"
            if not manifest_path.exists():
                raise ConfigError(f"{folder}: not a run folder (no manifest.json)")
            config = ScenarioConfig.model_validate(json.loads(manifest_path.read_text())["config"])
        elif args.config is None:
            raise ConfigError("give a scenario file, or --resume RUN_DIR")
        else:
            config = load_config(args.config)
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            folder = args.out or Path("runs") / f"{config.run.name}-{stamp}"
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(args.config, folder / "scenario.toml")
        scenario = build(config, load_profiles(config, cache=folder / "profiles"))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    backend = (RayBackend(args.address, args.num_cpus) if args.backend == "ray"
               else LocalBackend())
    engine = Engine(scenario, backend, folder)
    print(f"{config.run.name}: {len(scenario.households['household'])} households in "
          f"{sum(s.name.startswith('shard') for s in scenario.actors)} shards, "
          f"{scenario.n_markets} markets, feeder {config.grid.feeder}, {config.run.steps} steps "
          f"of {config.run.dt_s} s on the {backend.name} backend -> {folder}")
    try:
        summary = engine.run(steps=args.steps, resume=args.resume is not None,
                             progress=not args.no_progress)
    except PhaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"records up to the last completed step are in {folder}; continue with "
              f"`cosim run --resume {folder}`", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0


def format_summary(s: dict) -> str:
    """The closing summary: energy, cost, emissions, voltages, time."""
    lines = [
        f"households {s['households']:,}, steps {s['steps']:,}",
        f"energy     load {s['load_kwh']:,.1f} kWh, PV {s['pv_kwh']:,.1f} kWh, "
        f"grid import {s['import_kwh']:,.1f} kWh, export {s['export_kwh']:,.1f} kWh, "
        f"peer-to-peer {s['p2p_kwh']:,.1f} kWh",
        f"devices    batteries net {s.get('battery_kwh', 0):,.1f} kWh, cars "
        f"{s.get('ev_kwh', 0):,.1f} kWh, heat pumps {s.get('heat_pump_kwh', 0):,.1f} kWh, "
        f"generators {s.get('generator_kwh', 0):,.1f} kWh, PV curtailed "
        f"{s.get('curtailed_kwh', 0):,.1f} kWh",
        f"comfort    {s.get('discomfort_kh', 0):,.1f} K h outside the heating bands, cars "
        f"{s.get('ev_shortfall_kwh', 0):,.1f} kWh short at departure",
        f"network    substation {s['substation_kwh']:,.1f} kWh, losses {s['losses_kwh']:,.1f} "
        f"kWh",
        f"cost       households paid {s['household_cost']:,.2f} in total, and "
        f"{s.get('operating_cost', 0):,.2f} in device wear and fuel",
        f"emissions  {s['emissions_kg']:,.1f} kgCO2 at the substation",
        f"voltages   {s['v_min_pu']:.4f} to {s['v_max_pu']:.4f} p.u., "
        f"{s['voltage_violations']:,} node-steps outside limits, "
        f"{s['nonconverged_steps']} steps without convergence",
        f"balances   money {s['max_money_imbalance']:.1e}, household energy "
        f"{s['max_household_energy_mismatch_kwh']:.1e} kWh, Kirchhoff "
        f"{s['max_kcl_mismatch_kw']:.1e} kW (worst step)",
        f"wall time  {s['wall_s']:.1f} s, {s['household_steps_per_s']:,.0f} household-steps/s",
    ]
    return "\n".join(lines)
