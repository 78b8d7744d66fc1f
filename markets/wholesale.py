"""The wholesale market as an aggregator meets it: a day-ahead position, then imbalance.

An aggregator buys (or sells) its portfolio's energy on the day-ahead market before the
day, one position per step (kWh, + bought), at the day-ahead price. What its members then
really draw differs; the difference is the imbalance, settled after the fact against the
real-time price with dual pricing: energy the aggregator is short of (it drew more than it
bought) is bought at max(real-time, day-ahead) plus `penalty`, energy it is long of is
sold at min(real-time, day-ahead) minus `penalty`. A deviation never pays better than
having bought or sold it day-ahead, so the aggregator has a reason to forecast well (the
usual design of European balancing markets; the penalty stands for the balancing
responsible party's fees).

Positions come from a forecast of the portfolio's net draw: `persistence` uses the same
step of the day before, the first day's from a baseline the caller gives (the members'
best response to the aggregator's tariff, or their plain net load).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Imbalance:
    """One step's settlement of a position: energies in kWh (+ drawn), prices in
    currency/kWh, costs in currency (+ paid by the aggregator)."""

    position_kwh: float  # bought day-ahead (+) or sold (-)
    actual_kwh: float  # what the portfolio really drew (+) or fed in (-)
    day_ahead_price: float
    imbalance_price: float

    @property
    def deviation_kwh(self) -> float:
        return self.actual_kwh - self.position_kwh

    @property
    def day_ahead_cost(self) -> float:
        return self.position_kwh * self.day_ahead_price

    @property
    def imbalance_cost(self) -> float:
        return self.deviation_kwh * self.imbalance_price

    @property
    def total_cost(self) -> float:
        return self.day_ahead_cost + self.imbalance_cost

    @property
    def balancing_revenue(self) -> float:
        """What balancing earns beyond the day-ahead value of the deviation: the
        counterparty's booking when the energy itself is booked at the day-ahead price."""
        return self.deviation_kwh * (self.imbalance_price - self.day_ahead_price)


def imbalance_price(deviation_kwh: float, day_ahead: float, real_time: float,
                    penalty: float = 0.0) -> float:
    """The price a deviation settles at (module docstring), currency/kWh."""
    if deviation_kwh > 0:  # short: buys the missing energy
        return max(real_time, day_ahead) + penalty
    return min(real_time, day_ahead) - penalty


def settle(position_kwh: float, actual_kwh: float, day_ahead: float, real_time: float,
           penalty: float = 0.0) -> Imbalance:
    """Settle one step of a day-ahead position against what was really drawn."""
    if not (np.isfinite(position_kwh) and np.isfinite(actual_kwh)):
        raise ValueError(f"wholesale: position {position_kwh} and actual {actual_kwh} kWh "
                         "must be finite")
    price = imbalance_price(actual_kwh - position_kwh, day_ahead, real_time, penalty)
    return Imbalance(float(position_kwh), float(actual_kwh), float(day_ahead), price)


def persistence(actual_kwh: np.ndarray, baseline_kwh: np.ndarray, first: int,
                steps: int, steps_per_day: int) -> np.ndarray:
    """Day-ahead positions for steps first..first+steps-1: what the portfolio drew at the
    same step a day earlier (`actual_kwh`, per step so far), the `baseline_kwh` (per step
    of the run) where that is not known."""
    t = np.arange(first, first + steps)
    day_before = t - steps_per_day
    known = (day_before >= 0) & (day_before < len(actual_kwh))
    out = np.asarray(baseline_kwh, dtype=float)[t].copy()
    out[known] = np.asarray(actual_kwh, dtype=float)[day_before[known]]
    return out
