"""Baselines and trained policies on one scenario, in one table (issue 11).

Every row runs the same scenario (households, devices, profiles, markets, feeder, seed)
through `cosim.Simulation` with every household on one policy:

- "no battery": the self-consumption rule with every battery removed
  (`experiments.mahtm_scores.without_storage`), what the batteries are worth against;
- "rule": the self-consumption rule;
- "mpc": the receding-horizon MPC with the scenario's settings ([policies.mpc]) and a
  limited look-ahead: `mpc_horizon` steps, else the scenario's `policies.mpc.horizon`, else
  `MPC_HORIZON_H` hours;
- "optimum": perfect foresight. The same MPC re-planning every step over the whole rest of
  the episode (horizon and price forecast covering all of run.steps, `terminal_value` 0, so
  energy left stored at the end is worth nothing, as in every other row). It is each
  household's own optimum of the MPC's objective (bill, device wear and fuel, discomfort and
  car shortfall at the prices of [policies.mpc]) under perfect foresight of its own load, PV,
  car use and weather and of the price forecast its retailer sends. The forecast is the
  retailer's table of the run, so with a tariff (flat or time of use) or an aggregator's
  margin on the day-ahead price it is exact and so is the optimum (up to the LP's
  relaxations, agents.policies.mpc). Where what a household pays depends on the others (a
  peer-to-peer market, MAHTM's pools, a Stackelberg leader re-pricing each day) it is the
  optimum against the forecast prices, not the best it could have done. The table's cost
  column leaves discomfort and shortfall out, so where homes have heat pumps or cars the
  optimum may pay more than another row to keep them warm and charged.
- one row per trained policy bank (`banks`: row name -> bank file), every household on its
  own agent of the bank.

Columns, totals over households and steps: cost (bill + operating_cost, currency), bill
(market payments and retail energy bills, currency), emissions_kg (of the households' grid
imports, kgCO2), voltage_violations (node-steps outside the limits), losses_kwh,
discomfort_kh (K h outside the comfort bands), ev_shortfall_kwh (missing at departures),
nonconverged_steps and wall_s (building and running the row, s). The rows run with
`run.on_nonconvergence = "record"`, so one failed power flow does not end the comparison:
such a step is counted in nonconverged_steps, and the network totals (voltage_violations,
losses_kwh) are over the converged steps only.

    python -m experiments.rl.baselines experiments/configs/lv_55.toml \\
        --bank ippo=runs/ippo/bank.pt --steps 96 --out runs/baselines.csv
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from cosim.config import ConfigError, ScenarioConfig, load_config
from cosim.scenario import ProfileData
from cosim.simulation import HouseholdCosts, Simulation
from experiments.mahtm_scores import without_storage

BASELINES = ("no battery", "rule", "mpc", "optimum")
MPC_HORIZON_H = 4.0  # the "mpc" row's look-ahead when neither caller nor scenario sets one
COLUMNS = ("cost", "bill", "emissions_kg", "voltage_violations", "losses_kwh",
           "discomfort_kh", "ev_shortfall_kwh", "nonconverged_steps", "wall_s")
FORMATS = {"cost": "{:,.2f}", "bill": "{:,.2f}", "emissions_kg": "{:,.2f}",
           "voltage_violations": "{:,.0f}", "losses_kwh": "{:,.2f}", "discomfort_kh": "{:,.2f}",
           "ev_shortfall_kwh": "{:,.2f}", "nonconverged_steps": "{:,.0f}", "wall_s": "{:,.1f}"}


def with_mpc(config: ScenarioConfig, horizon: int, **settings: float) -> ScenarioConfig:
    """`config` with the MPC planning `horizon` steps ahead (and other [policies.mpc]
    `settings`), its price forecast made at least that long."""
    run = config.run.model_copy(update={
        "forecast_steps": max(config.run.forecast_horizon, horizon)})
    mpc = config.policies.mpc.model_copy(update={"horizon": horizon, **settings})
    return config.model_copy(update={
        "run": run, "policies": config.policies.model_copy(update={"mpc": mpc})})


def scenarios(config: ScenarioConfig, banks: Mapping[str, str | Path] | None = None,
              mpc_horizon: int | None = None) -> dict[str, ScenarioConfig]:
    """The scenario of each row (module docstring), in table order. `mpc_horizon`: the
    "mpc" row's look-ahead in steps (default: the scenario's, else MPC_HORIZON_H)."""
    banks = dict(banks or {})
    clash = sorted(set(banks) & set(BASELINES))
    if clash:
        raise ConfigError(f"bank name {clash[0]!r} is a baseline's; name the bank otherwise")
    run = config.run
    # a failed power flow is counted in its row, not a reason to drop the whole table
    config = config.model_copy(update={
        "run": run.model_copy(update={"on_nonconvergence": "record"})})
    horizon = (mpc_horizon or config.policies.mpc.horizon
               or max(1, round(MPC_HORIZON_H * 3600 / run.dt_s)))
    rows = {
        "no battery": without_storage(config).everyone("rule"),
        "rule": config.everyone("rule"),
        "mpc": with_mpc(config, horizon).everyone("mpc"),
        "optimum": with_mpc(config, run.steps, terminal_value=0.0).everyone("mpc"),
    }
    for name, path in banks.items():
        rows[name] = config.everyone("bank", Path(path).resolve())
    return rows


def check_banks(banks: Mapping[str, str | Path], households: int) -> None:
    """Fail early (ConfigError naming the row and the file) on a bank a row could not
    load, before the other rows spend minutes running."""
    from agents.households import ACTIONS, FIELDS
    from agents.policies.bank import BankError, PolicyBank

    for name, path in banks.items():
        try:
            PolicyBank.load(path, agents=range(households), fields=FIELDS, actions=ACTIONS)
        except BankError as exc:
            raise ConfigError(f"bank {name!r}: {exc}") from None


def totals(config: ScenarioConfig, profiles: ProfileData, progress: bool = False,
           label: str = "") -> dict[str, float]:
    """One row of the table: `config` run to its end on its households' own policies,
    every column of COLUMNS summed over households and steps (network totals over the
    converged steps)."""
    t0 = time.perf_counter()
    sim = Simulation.from_config(config, record=False, profiles=profiles)
    terms = dict.fromkeys(HouseholdCosts._fields, 0.0)
    violations, losses, nonconverged = 0, 0.0, 0
    try:
        sim.reset()
        for _ in tqdm(range(sim.total), desc=label, unit="step", leave=False,
                      disable=not progress):
            result = sim.step()
            for name in terms:
                terms[name] += float(getattr(result.costs, name).sum())
            if result.grid.converged:
                violations += result.grid.violations
                losses += result.grid.losses_kwh
            else:
                nonconverged += 1
    finally:
        sim.close()
    return {"cost": terms["bill"] + terms["operating_cost"], "bill": terms["bill"],
            "emissions_kg": terms["emissions_kg"], "voltage_violations": violations,
            "losses_kwh": losses, "discomfort_kh": terms["discomfort_kh"],
            "ev_shortfall_kwh": terms["ev_shortfall_kwh"], "nonconverged_steps": nonconverged,
            "wall_s": time.perf_counter() - t0}


def compare(config: ScenarioConfig, banks: Mapping[str, str | Path] | None = None,
            profiles: ProfileData | None = None, mpc_horizon: int | None = None,
            progress: bool = True) -> pd.DataFrame:
    """The table: one row per policy (index "policy": BASELINES, then the banks in the
    order given), the columns of COLUMNS (module docstring). `profiles` replace the
    scenario's profile source (by default it is loaded once and shared by every row)."""
    from cosim.profiles import load_profiles

    rows = scenarios(config, banks, mpc_horizon)
    check_banks(dict(banks or {}), config.households.count)
    if profiles is None:  # a generator would otherwise run again for every row
        with tempfile.TemporaryDirectory(prefix="baselines-profiles-") as folder:
            profiles = load_profiles(config, Path(folder))
    out = {}
    bar = tqdm(rows.items(), desc="baselines", unit="row", disable=not progress)
    for name, row_config in bar:
        bar.set_postfix_str(name)
        out[name] = totals(row_config, profiles, progress, name)
    table = pd.DataFrame.from_dict(out, orient="index", columns=list(COLUMNS))
    table.index.name = "policy"
    return table.astype({"voltage_violations": int, "nonconverged_steps": int})


def format_table(table: pd.DataFrame) -> str:
    """`compare`'s table in Markdown, with a note naming the rows whose network totals
    leave out steps whose power flow did not converge."""
    heads = ["policy", *table.columns]
    lines = ["| " + " | ".join(heads) + " |",
             "|" + "|".join([":---"] + ["---:"] * len(table.columns)) + "|"]
    for name, row in table.iterrows():
        cells = [FORMATS.get(c, "{}").format(row[c]) for c in table.columns]
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    failed = table["nonconverged_steps"]
    if (failed > 0).any():
        named = ", ".join(f"{name} ({int(n)})" for name, n in failed[failed > 0].items())
        lines.append(f"\nSteps without a converged power flow: {named}; their "
                     "voltage_violations and losses_kwh are over the converged steps only.")
    return "\n".join(lines)


def _bank_argument(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise ConfigError(f"--bank {text!r}: expected NAME=PATH, e.g. ippo=runs/ippo/bank.pt")
    path = Path(path.strip())
    if not path.is_file():
        raise ConfigError(f"--bank {text!r}: policy bank file {path} not found")
    return name.strip(), path


def main(argv: list[str] | None = None) -> int:
    """Print the table of a scenario file. Exit codes: 0 done, 2 bad input (nothing run)."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.rl.baselines", description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="scenario TOML file")
    parser.add_argument("--bank", action="append", default=[], metavar="NAME=PATH",
                        help="a trained policy bank to add as row NAME (repeatable)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps to run (default: the scenario's run.steps)")
    parser.add_argument("--mpc-horizon", type=int, default=None, metavar="STEPS",
                        help="the mpc row's look-ahead (default: the scenario's "
                        f"policies.mpc.horizon, else {MPC_HORIZON_H:g} h)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the table here (.csv or .parquet)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        for flag, value in (("--steps", args.steps), ("--mpc-horizon", args.mpc_horizon)):
            if value is not None and value <= 0:
                raise ConfigError(f"{flag} {value}: must be a positive whole number")
        if args.out is not None and args.out.suffix not in (".csv", ".parquet"):
            raise ConfigError(f"--out {args.out}: write .csv or .parquet")
        banks: dict[str, Path] = {}
        for text in args.bank:
            name, path = _bank_argument(text)
            if name in banks:
                raise ConfigError(f"--bank {text!r}: row {name!r} is given twice")
            banks[name] = path
        overrides = {"run.steps": args.steps} if args.steps else None
        config = load_config(args.config, overrides)
        table = compare(config, banks, mpc_horizon=args.mpc_horizon,
                        progress=not args.no_progress)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(table))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        flat = table.reset_index()
        if args.out.suffix == ".csv":
            flat.to_csv(args.out, index=False)
        else:
            flat.to_parquet(args.out, index=False)
        print(f"table: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
