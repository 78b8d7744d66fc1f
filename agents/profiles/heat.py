"""Space-heating demand of each home's building, and which homes heat with a heat pump.

Degree-hour model: heat_demand_kw = loss_kw_per_k * max(0, base - outdoor temperature), where
`loss_kw_per_k` is the building's heat-loss coefficient (fabric plus ventilation, per home,
uniform in its range) and `base` is the balance-point temperature: the outdoor temperature
below which the home needs heating once internal and solar gains are counted. The base is
`day_base_c` in the daytime schedule and `night_base_c` (a set-back) from `night_from_h` to
`night_to_h` local time.

The demand is thermal (kW of heat) and is given for every home, whatever heats it; turning
it into electricity is the heat-pump device model's job (`has_heat_pump` says who has one).
Domestic hot water is not included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.profiles.timegrid import TimeGrid


@dataclass
class HeatFleet:
    """Per home: has_heat_pump [homes] bool, loss_kw_per_k [homes] heat-loss coefficient."""

    has_heat_pump: np.ndarray
    loss_kw_per_k: np.ndarray


def heat_fleet(n_homes: int, share: float, loss_kw_per_k: tuple[float, float],
               rng: np.random.Generator) -> HeatFleet:
    has = rng.random(n_homes) < share
    return HeatFleet(has, np.round(rng.uniform(*loss_kw_per_k, n_homes), 4))


def balance_temperature(grid: TimeGrid, day_base_c: float, night_base_c: float,
                        night_from_h: float, night_to_h: float) -> np.ndarray:
    """[steps] balance-point temperature by local clock time (set-back at night)."""
    hour = grid.minute / 60
    if night_from_h > night_to_h:  # the set-back spans midnight
        night = (hour >= night_from_h) | (hour < night_to_h)
    else:
        night = (hour >= night_from_h) & (hour < night_to_h)
    return np.where(night, night_base_c, day_base_c)


def heat_demand(fleet: HeatFleet, homes: np.ndarray, temp_c: np.ndarray, base_c: np.ndarray
                ) -> np.ndarray:
    """[len(homes), steps] thermal kW."""
    return fleet.loss_kw_per_k[homes, None] * np.maximum(base_c - temp_c, 0.0)[None]
