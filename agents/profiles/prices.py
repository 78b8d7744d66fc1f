"""Wholesale electricity price and grid carbon intensity: synthetic series, or a user CSV.

Both synthetic series are built the same way, per step at the local clock time h:

    x(t) = level * (1 + season * cos(2 pi (doy - coldest_day) / 365.25))
           + morning * bump(h, 8.0) + evening * bump(h, 18.5)
           - solar * GHI / 1000 W/m2
           + AR(1) noise (standard deviation `noise`, time constant `noise_time_s`)

with bump(h, c) = exp(-d^2 / (2 * 1.5^2)), d the clock distance in hours from c. Prices
are then scaled by (1 - `weekend_discount`) at weekends. The solar term ties both to the
same weather that drives the PV: sunny hours are cheaper and cleaner, as on grids with
much solar. Defaults are round numbers of the order of a European market (prices in
currency/kWh, carbon in kgCO2/kWh), set in `[price]` and `[carbon]`; a series is floored
at `floor` when one is set (carbon: 0.02), so a price may go slightly negative.

A CSV replaces a synthetic series: it is checked and converted by `csvinput` (units, gaps,
resolution) and laid on the run's steps, held over coarser steps or averaged over finer ones.
"""

from __future__ import annotations

import numpy as np

from agents.profiles.config import SeriesConfig
from agents.profiles.timegrid import TimeGrid
from agents.profiles.weather import ar1


def _bump(hour: np.ndarray, centre: float) -> np.ndarray:
    d = np.abs((hour - centre + 12) % 24 - 12)
    return np.exp(-d * d / (2 * 1.5 ** 2))


def synthetic_series(grid: TimeGrid, ghi: np.ndarray, p: SeriesConfig, rng: np.random.Generator
                     ) -> np.ndarray:
    """[steps] series for `grid` given the step-mean GHI (W/m2); see the module docstring."""
    hour = (grid.minute + grid.dt_s / 120) / 60  # clock time at the step midpoint
    doy = grid.times.day_of_year.to_numpy()
    x = (p.level * (1 + p.season * np.cos(2 * np.pi * (doy - p.coldest_day) / 365.25))
         + p.morning * _bump(hour, 8.0) + p.evening * _bump(hour, 18.5)
         - p.solar * ghi / 1000
         + ar1(rng, grid.n_steps, float(np.exp(-grid.dt_s / p.noise_time_s)), p.noise))
    x = x * np.where(grid.weekend[grid.day], 1 - p.weekend_discount, 1.0)
    return x if p.floor is None else np.maximum(x, p.floor)
