"""MAHTM's price and emission scores of a scenario (Cuadrado et al., 2023).

Per household, summed over the run: the price score is its bill with its storage minus
its bill with the storage removed, the emission score the same for the emissions of its
grid imports (energy traded inside and between microgrids is carbon-free); both runs see
the same households, profiles and markets, so only the batteries differ. Lower is better;
0 means the battery changed nothing. The scores are averaged over households, as in the
paper's tables.

    python -m experiments.mahtm_scores experiments/configs/mahtm_microgrid.toml
    python -m experiments.mahtm_scores experiments/configs/mahtm_microgrid.toml --policy mpc
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from cosim.config import ConfigError, ScenarioConfig, load_config
from cosim.simulation import Simulation


@dataclass(frozen=True)
class Scores:
    """Per household: price score (currency) and emission score (kgCO2)."""

    household: np.ndarray
    price: np.ndarray
    emission: np.ndarray
    cost_with: np.ndarray
    cost_without: np.ndarray


def without_storage(config: ScenarioConfig) -> ScenarioConfig:
    """The same scenario with every battery removed (drawn or listed)."""
    hh = config.households
    homes = [h.model_copy(update={"battery_kwh": 0.0, "battery_kw": 0.0}) for h in hh.homes]
    return config.model_copy(update={"households": hh.model_copy(update={
        "homes": homes, "battery": hh.battery.model_copy(update={"share": 0.0})})})


def day_totals(config: ScenarioConfig) -> tuple[np.ndarray, np.ndarray]:
    """(bill, emissions) per household summed over the run, on the households' own
    policies; a step whose power flow fails is an error, never a silent zero."""
    sim = Simulation.from_config(config, record=False)
    try:
        sim.reset()
        bill = np.zeros(sim.n_households)
        emissions = np.zeros(sim.n_households)
        for _ in range(sim.total):
            result = sim.step()
            if not result.grid.converged:
                raise RuntimeError(f"step {result.step}: the power flow did not converge")
            bill += result.costs.bill
            emissions += result.costs.emissions_kg
    finally:
        sim.close()
    return bill, emissions


def scores(config: ScenarioConfig) -> Scores:
    with_bill, with_emissions = day_totals(config)
    no_bill, no_emissions = day_totals(without_storage(config))
    return Scores(np.arange(len(with_bill)), with_bill - no_bill,
                  with_emissions - no_emissions, with_bill, no_bill)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--policy", choices=("rule", "mpc"), default=None,
                        help="every household's policy (default: the scenario's)")
    args = parser.parse_args(argv)
    overrides = {"households.policy": args.policy} if args.policy else None
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = scores(config)
    print(f"{'household':>9} {'bill with':>10} {'without':>10} {'price score':>12} "
          f"{'emission score':>15}")
    for k in s.household:
        print(f"{k:>9} {s.cost_with[k]:>10.4f} {s.cost_without[k]:>10.4f} "
              f"{s.price[k]:>12.4f} {s.emission[k]:>15.4f}")
    print(f"{'mean':>9} {s.cost_with.mean():>10.4f} {s.cost_without.mean():>10.4f} "
          f"{s.price.mean():>12.4f} {s.emission.mean():>15.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
