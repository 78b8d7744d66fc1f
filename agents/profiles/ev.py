"""Electric vehicles: ownership, battery, and a statistical model of daily trips.

Per owning home and local day (all parameters in the config's `[ev]` section; defaults are
round figures of the shape of UK travel-survey statistics, not fitted values):
1. The car is used with probability `use_weekday` or `use_weekend`.
2. A used day has one tour, or two with probability `second_tour`. A tour leaves home,
   drives half its distance, parks, and drives back.
3. First tour: departure ~ Normal(`depart_h`, `depart_sd_h`) by day type, clipped to
   05:00-20:00; parking time ~ log-normal with median `dwell_h` and log-sd `dwell_sigma`;
   round-trip distance ~ log-normal with median `distance_km` and log-sd `distance_sigma`.
4. Second tour: leaves 0.5 to 3 h (uniform) after the first returns; parking median
   `second_dwell_h`; distance median `second_distance_km`.
5. Driving at `speed_kmh`; consumption `kwh_per_km` (per car, uniform in its range).
6. Limits: every car is home by `home_by_h` (23:45), so each local day's trips start and end
   at home: a tour that would return later has its parking cut short, a second tour that
   no longer fits is dropped. A day's trips never need more than `usable_share` of the
   battery: longer days have their distances scaled down to that.

On the grid: a step where the car is away for any part of it has `ev_at_home` False (it
cannot charge for the whole step); `ev_trip_kwh` is the energy the car uses driving within
the step (kWh per step), so driving steps are never at-home steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.profiles.config import EVConfig
from agents.profiles.timegrid import TimeGrid


@dataclass
class EVFleet:
    """Per home: has_ev [homes] bool; battery_kwh, kwh_per_km, charger_kw [homes], zero where
    a home has no EV."""

    has_ev: np.ndarray
    battery_kwh: np.ndarray
    kwh_per_km: np.ndarray
    charger_kw: np.ndarray


def ev_fleet(n_homes: int, share: float, battery_kwh: list[float], kwh_per_km: tuple[float, float],
             charger_kw: float, rng: np.random.Generator) -> EVFleet:
    """Draw EV ownership (probability `share`), a battery size from the list, consumption."""
    has = rng.random(n_homes) < share
    battery = np.asarray(battery_kwh, float)[rng.integers(len(battery_kwh), size=n_homes)]
    per_km = np.round(rng.uniform(*kwh_per_km, n_homes), 3)
    return EVFleet(has, np.where(has, battery, 0.0), np.where(has, per_km, 0.0),
                   np.where(has, charger_kw, 0.0))


@dataclass
class Tours:
    """One row per tour: home (index into the homes passed), day, and in local hours from
    that day's midnight: depart, back, drive (one leg's duration); energy of the tour, kWh."""

    home: np.ndarray
    day: np.ndarray
    depart: np.ndarray
    back: np.ndarray
    drive: np.ndarray
    energy: np.ndarray


def draw_tours(fleet: EVFleet, homes: np.ndarray, weekend: np.ndarray, p: EVConfig,
               rng: np.random.Generator) -> Tours:
    """The tours of the EV-owning homes among `homes` over days with day types `weekend`."""
    owners = np.flatnonzero(fleet.has_ev[homes])
    days = len(weekend)
    wk = np.broadcast_to(np.asarray(weekend, int), (len(owners), days))
    used = rng.random(wk.shape) < np.where(wk == 1, p.use_weekend, p.use_weekday)
    two = used & (rng.random(wk.shape) < p.second_tour)
    depart1 = np.clip(rng.normal(np.take(p.depart_h, wk), np.take(p.depart_sd_h, wk)), 5, 20)
    dwell1 = np.take(p.dwell_h, wk) * np.exp(p.dwell_sigma * rng.standard_normal(wk.shape))
    dist1 = np.take(p.distance_km, wk) * np.exp(p.distance_sigma * rng.standard_normal(wk.shape))
    gap = rng.uniform(0.5, 3.0, wk.shape)
    dwell2 = p.second_dwell_h * np.exp(p.dwell_sigma * rng.standard_normal(wk.shape))
    dist2 = p.second_distance_km * np.exp(p.distance_sigma * rng.standard_normal(wk.shape))

    per_km = fleet.kwh_per_km[homes[owners]][:, None]
    usable = p.usable_share * fleet.battery_kwh[homes[owners]][:, None]
    # The first tour must fit before home_by_h with at least a quarter hour parked.
    dist1 = np.minimum(dist1, p.speed_kmh * (p.home_by_h - depart1 - 0.25))
    drive1 = dist1 / 2 / p.speed_kmh
    dwell1 = np.minimum(dwell1, p.home_by_h - depart1 - 2 * drive1)
    back1 = depart1 + 2 * drive1 + dwell1
    depart2 = back1 + gap
    drive2 = dist2 / 2 / p.speed_kmh
    two &= depart2 + 2 * drive2 + dwell2 <= p.home_by_h
    dist2 = np.where(two, dist2, 0.0)
    energy = (dist1 + dist2) * per_km
    shrink = np.minimum(1.0, usable / np.maximum(energy, 1e-12))
    # Shorter distances at the same speed: drives get shorter, parking keeps its times.
    rows, cols = np.nonzero(used)
    first = Tours(owners[rows], cols, depart1[rows, cols], back1[rows, cols],
                  (drive1 * shrink)[rows, cols], (dist1 * per_km * shrink)[rows, cols])
    rows2, cols2 = np.nonzero(two)
    second = Tours(owners[rows2], cols2, depart2[rows2, cols2],
                   (depart2 + 2 * drive2 + dwell2)[rows2, cols2], (drive2 * shrink)[rows2, cols2],
                   (dist2 * per_km * shrink)[rows2, cols2])
    return Tours(*(np.concatenate([getattr(first, f), getattr(second, f)])
                   for f in ("home", "day", "depart", "back", "drive", "energy")))


def tours_on_grid(tours: Tours, n_homes: int, grid: TimeGrid) -> tuple[np.ndarray, np.ndarray]:
    """(at_home [n_homes, steps] bool, trip_kwh [n_homes, steps]) from `tours`.

    Each tour is laid on the steps of its own local day from that day's midnight, so a
    daylight-saving change moves it with the clock.
    """
    dt = grid.dt_s
    window = -(-(25 * 3600) // dt) + 1  # steps a local day can touch (25 h on DST days)
    first = grid.day_start[tours.day]
    idx = first[:, None] + np.arange(window)[None]
    valid = idx < grid.n_steps
    idx = np.minimum(idx, grid.n_steps - 1)
    start = idx * dt - grid.midnight_s[tours.day][:, None]  # step start, s after local midnight
    end = start + dt

    def overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.clip(np.minimum(b[:, None] * 3600, end) - np.maximum(a[:, None] * 3600, start),
                       0, None)

    leg = tours.drive * 3600
    rate = np.where(leg > 0, tours.energy / 2 / np.maximum(leg, 1e-9), 0.0)[:, None]
    out_leg = overlap(tours.depart, tours.depart + tours.drive)
    back_leg = overlap(tours.back - tours.drive, tours.back)
    kwh = np.where(valid, rate * (out_leg + back_leg), 0.0)
    away = valid & (overlap(tours.depart, tours.back) > 0)
    flat = (tours.home[:, None] * grid.n_steps + idx).ravel()
    size = n_homes * grid.n_steps
    trip = np.bincount(flat, weights=kwh.ravel(), minlength=size).reshape(n_homes, -1)
    away_count = np.bincount(flat, weights=away.ravel(), minlength=size).reshape(n_homes, -1)
    return away_count == 0, trip
