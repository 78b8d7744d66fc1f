"""`cosim run`: a scenario from its TOML file, on the local or the Ray backend.

Exit codes: 0 the run completed; 1 an actor failed (records up to the last completed step
are kept; `--resume` goes on); 2 bad input (nothing is written); 3 a step's power flow did
not converge (the run stopped there, or went on and recorded it).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cosim.config import ScenarioConfig
    from cosim.simulation import Simulation


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}") \
            from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {value}")
    return value


def register(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run", help="run a scenario", description="Run a scenario (or resume a run). Exit "
        "codes: 0 complete, 1 an actor failed, 2 bad input, 3 a power flow did not converge.")
    run.add_argument("config", nargs="?", type=Path, help="scenario TOML file")
    run.add_argument("--backend", choices=("local", "ray"), default="local")
    run.add_argument("--address", default=None,
                     help="Ray cluster to join (ray backend), e.g. auto or host:6379")
    run.add_argument("--num-cpus", type=_positive, default=None,
                     help="CPUs for a Ray instance started here (ray backend)")
    run.add_argument("--out", type=Path, default=None,
                     help="run folder (default runs/<name>-<timestamp>)")
    run.add_argument("--steps", type=_positive, default=None,
                     help="stop after this many steps (the run is then 'partial')")
    run.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                     help="continue a run from its last checkpoint")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=run_command)


def refuse_external(config: ScenarioConfig, path: Path, command: str) -> None:
    """A ConfigError if any household uses policy "external" or "bidder": its actions or
    bids come from Python (cosim.Simulation.step), which a command line cannot supply."""
    hh = config.households
    policies = {hh.policy, *(g.policy for g in hh.policy_groups), *(h.policy for h in hh.homes)}
    driven = sorted(policies & {"external", "bidder"})
    if driven:
        from cosim.config import ConfigError

        raise ConfigError(f"{path}: households use policy \"{driven[0]}\": their actions "
                          "or bids come from Python (cosim.Simulation.step), which "
                          f"{command} cannot supply")


def run_command(args: argparse.Namespace) -> int:
    from cosim.backends import LocalBackend, RayBackend
    from cosim.config import ConfigError, load_config
    from cosim.simulation import Simulation

    backend = (RayBackend(args.address, args.num_cpus) if args.backend == "ray"
               else LocalBackend())
    folder, created = None, False
    try:
        if args.resume and args.config:
            raise ConfigError(f"give a scenario file or --resume {args.resume}, not both: a "
                              "resumed run keeps the scenario it started with")
        if args.resume:
            folder = args.resume
            if not (folder / "manifest.json").exists():
                raise ConfigError(f"{folder}: not a run folder (no manifest.json)")
            sim = Simulation.resume(folder, backend)
        elif args.config is None:
            raise ConfigError("give a scenario file, or --resume RUN_DIR")
        else:
            config = load_config(args.config)
            refuse_external(config, args.config, "`cosim run`")
            folder = args.out or Simulation.default_folder(config)
            created = not folder.exists()
            sim = Simulation.from_config(config, backend, record=True, out=folder)
            shutil.copy(args.config, folder / "scenario.toml")
    except ConfigError as exc:
        if created and folder is not None:  # leave no half-written run folder behind
            shutil.rmtree(folder, ignore_errors=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return execute(sim, folder, backend.name, args.steps, not args.no_progress)


def execute(sim: Simulation, folder: Path, backend: str, steps: int | None, progress: bool) -> int:
    """Run a built simulation to its end (or `steps`), print its summary, and return the
    exit code (module docstring); shared with `cosim evaluate`."""
    from cosim.backends import PhaseError
    from cosim.simulation import NotConverged

    config = sim.config
    print(f"{config.run.name}: {sim.n_households} households in {len(sim.shards)} shards, "
          f"{sim.scenario.n_markets} markets, feeder {config.grid.feeder}, {config.run.steps} "
          f"steps of {config.run.dt_s} s on the {backend} backend -> {folder}")
    try:
        summary = sim.run(steps=steps, progress=progress)
    except NotConverged as exc:
        sim.close()
        print(f"error: {exc}", file=sys.stderr)
        print(f"records up to step {exc.step} are in {folder}", file=sys.stderr)
        return 3
    except PhaseError as exc:
        sim.close()
        print(f"error: {exc}", file=sys.stderr)
        print(f"records up to the last completed step are in {folder}; continue with "
              f"`cosim run --resume {folder}`", file=sys.stderr)
        return 1
    print(format_summary(summary))
    print(f"pictures   cosim report {folder}   (in the browser: cosim viz {folder})")
    return 3 if summary["nonconverged_steps"] else 0


def _kwh(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.1f} kWh"


def format_summary(s: dict) -> str:
    """The closing summary: energy, cost, emissions, voltages, balances, time. Network
    quantities of a run with steps that did not converge are n/a, and the count says why."""
    failed = s["nonconverged_steps"]
    lines = [
        f"households {s['households']:,}, steps {s['steps']:,}"
        + (f", {failed} of them WITHOUT a converged power flow (first: step "
           f"{s['first_nonconverged_step']}); network totals are n/a" if failed else ""),
        f"energy     load {s['load_kwh']:,.1f} kWh, PV {s['pv_kwh']:,.1f} kWh, "
        f"grid import {s['import_kwh']:,.1f} kWh, export {s['export_kwh']:,.1f} kWh, "
        f"peer-to-peer {s['p2p_kwh']:,.1f} kWh",
        f"devices    batteries net {s['battery_kwh']:,.1f} kWh, cars {s['ev_kwh']:,.1f} kWh, "
        f"heat pumps {s['heat_pump_kwh']:,.1f} kWh, generators {s['generator_kwh']:,.1f} kWh, "
        f"PV curtailed {s['curtailed_kwh']:,.1f} kWh",
        f"comfort    {s['discomfort_kh']:,.1f} K h outside the heating bands, cars "
        f"{s['ev_shortfall_kwh']:,.1f} kWh short at departure",
        f"network    substation {_kwh(s['substation_kwh'])}, losses {_kwh(s['losses_kwh'])}",
        f"cost       households paid {s['household_cost']:,.2f} in total, and "
        f"{s['operating_cost']:,.2f} in device wear and fuel",
        "emissions  " + ("n/a" if math.isnan(s["emissions_kg"])
                         else f"{s['emissions_kg']:,.1f}") + " kgCO2 at the substation",
        f"voltages   {s['v_min_pu']:.4f} to {s['v_max_pu']:.4f} p.u."
        + (" (converged steps)" if failed else "") + ", "
        f"{s['voltage_violations']:,} node-steps outside limits, "
        f"{failed} steps without convergence",
        f"balances   money {s['max_money_imbalance']:.1e}, market energy "
        f"{s['max_market_imbalance_kwh']:.1e} kWh and money "
        f"{s['max_market_money_imbalance']:.1e}, Kirchhoff "
        f"{s['max_kcl_mismatch_kw']:.1e} kW (worst step"
        + (f" of the {s['steps'] - failed} converged)" if failed else ")"),
        f"wall time  {s['wall_s']:.1f} s, {s['household_steps_per_s']:,.0f} household-steps/s",
    ]
    return "\n".join(lines)
