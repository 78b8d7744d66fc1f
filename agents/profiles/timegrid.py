"""The time grid of a generated data set: UTC step starts, and where each falls in local time.

Behaviour (load, trips, heating schedules) follows the local clock, physics (sun, weather)
follows UTC. A run covers `days` whole local days from local midnight of `start`; each step
of length `dt_s` is mapped to the local day it starts in and its local minute of day, so a
daylight-saving change shortens or lengthens that day by an hour (the skipped local hour is
skipped, the repeated one repeated) instead of shifting every later day.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from agents.profiles.errors import ProfileError

DAY_S = 86_400
WEEKDAY, WEEKEND = "weekday", "weekend"


@dataclass(frozen=True)
class TimeGrid:
    """UTC steps covering whole local days.

    Attributes:
        times: step starts, tz-aware UTC, length `n_steps`.
        dt_s: step length in seconds.
        day: local day index (0 .. days-1) of each step.
        minute: local minute of day (0 .. 1439) at each step start.
        dates: the local calendar date of each day.
        weekend: per day, True on Saturday and Sunday.
        day_start: per day, index of the first step that starts in that local day.
        midnight_s: per day, seconds from the first step to that day's local midnight.
    """

    times: pd.DatetimeIndex
    dt_s: int
    day: np.ndarray
    minute: np.ndarray
    dates: list[dt.date]
    weekend: np.ndarray
    day_start: np.ndarray
    midnight_s: np.ndarray
    timezone: str

    @property
    def n_steps(self) -> int:
        return len(self.times)

    @property
    def days(self) -> int:
        return len(self.dates)


def make_grid(start: dt.date, days: int, dt_s: int, timezone: str) -> TimeGrid:
    """Steps of `dt_s` seconds from local midnight of `start` to local midnight `days` later."""
    if days < 1:
        raise ProfileError(f"days must be at least 1, got {days}")
    if dt_s < 60 or DAY_S % dt_s or dt_s % 60:
        raise ProfileError(f"dt must be a whole number of minutes dividing a day, got {dt_s} s")
    def midnight(day: int) -> pd.Timestamp:
        local = pd.Timestamp(start) + pd.Timedelta(days=day)
        return local.tz_localize(timezone, nonexistent="shift_forward", ambiguous=True)

    try:
        midnights = [midnight(d) for d in range(days + 1)]
    except Exception as exc:  # pytz / zoneinfo raise several types for an unknown zone
        raise ProfileError(f"unknown timezone {timezone!r}: {exc}") from exc
    times = pd.date_range(midnights[0].tz_convert("UTC"), midnights[-1].tz_convert("UTC"),
                          freq=f"{dt_s}s", inclusive="left")
    local = times.tz_convert(timezone)
    local_dates = local.normalize().tz_localize(None)
    day = ((local_dates - pd.Timestamp(start)).days).to_numpy()
    minute = (local.hour * 60 + local.minute).to_numpy()
    dates = [start + dt.timedelta(days=d) for d in range(days)]
    weekend = np.array([d.weekday() >= 5 for d in dates])
    day_start = np.searchsorted(day, np.arange(days))
    midnight_s = np.array([(m - midnights[0]).total_seconds() for m in midnights[:-1]])
    return TimeGrid(times=times, dt_s=dt_s, day=day, minute=minute, dates=dates,
                    weekend=weekend, day_start=day_start, midnight_s=midnight_s,
                    timezone=timezone)


def to_grid(per_day: np.ndarray, grid: TimeGrid) -> np.ndarray:
    """Spread per-local-day profiles onto the UTC grid by local day and clock time.

    `per_day` is [..., days, steps_per_day] at any resolution that divides a day; each
    grid step takes the value of the profile step its local start falls in (a step-hold,
    so finer grids repeat values and keep power, coarser grids should average first).
    """
    steps = per_day.shape[-1]
    idx = grid.minute * steps // 1440
    return per_day[..., grid.day, idx]


def resample_days(per_day: np.ndarray, steps: int) -> np.ndarray:
    """Mean power per day [..., n] at `steps` per day instead of n, conserving each day's energy.

    Both resolutions are split into their common multiple first, so any two that divide a
    day combine exactly (15-minute profiles to 10- or 20-minute steps, hours, minutes).
    """
    n = per_day.shape[-1]
    common = math.lcm(n, steps)
    fine = np.repeat(per_day, common // n, axis=-1)
    return fine.reshape(*per_day.shape[:-1], steps, common // steps).mean(axis=-1)
