"""Households and their input series from a profile data set (agents.profiles' tables).

Reads the documented tables of a generated folder (`agents.profiles.read_dataset`: homes,
households, exogenous, manifest) without importing the generator:

- `households_from_homes(homes)`: the devices each home owns (PV, EV, heat pump, and a
  battery where the table has one, as in the MAHTM family), with keyword overrides;
- `HouseholdSeries.from_dataset(tables)`: `[households, steps]` tensors of load, PV, EV
  availability and trips, and the `[steps]` weather, clock, price and carbon series; its
  `at(t)` is one step's `HouseholdInputs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch

from agents.devices import steps_to_departure
from agents.households.composition import HouseholdInputs, Households

DESIGN_DELTA_K = 30.0  # heat pumps are sized for 30 K between indoors and outdoors


def households_from_homes(homes: pd.DataFrame, kind: object | None = None,
                          **devices: Mapping[str, object]) -> Households:
    """Households for the rows of a homes table. Devices from its columns: PV where
    `has_pv`; an EV of `ev_battery_kwh` and `ev_charger_kw` where `has_ev`; a heat pump
    where `has_heat_pump`, in a house with R = 1 / `heat_loss_kw_per_k`, rated for
    `DESIGN_DELTA_K` at its COP; a battery of `battery_kwh` (MAHTM tables: power
    `battery_p_charge_max` x capacity per hour, `battery_efficiency` each way, its SoC
    limits). Keyword arguments (`battery`, `ev`, `heat_pump`, `pv`, `generator`,
    `flexible_load`: dicts for each device's `create`) add to or override these."""
    ids = homes["home"].tolist()
    n = len(ids)

    def col(name: str, default: float = 0.0) -> np.ndarray:
        return homes[name].to_numpy(float) if name in homes else np.full(n, default)

    base: dict[str, dict[str, object]] = {}
    if "has_pv" in homes:
        base["pv"] = {"inverter_kw": np.where(col("has_pv") > 0, np.inf, 0.0)}
    if "has_ev" in homes:
        has = col("has_ev") > 0
        base["ev"] = {"capacity_kwh": np.where(has, col("ev_battery_kwh"), 0.0),
                      "charge_kw": np.where(has, col("ev_charger_kw"), 0.0)}
    if "has_heat_pump" in homes:
        loss = np.maximum(col("heat_loss_kw_per_k"), 1e-3)
        cop = float(devices.get("heat_pump", {}).get("cop", 3.0))
        base["heat_pump"] = {"power_kw": np.where(col("has_heat_pump") > 0,
                                                  loss * DESIGN_DELTA_K / cop, 0.0),
                             "resistance_k_per_kw": 1.0 / loss}
    if "battery_kwh" in homes:
        capacity = col("battery_kwh")
        eta = col("battery_efficiency", 0.95)
        base["battery"] = {"capacity_kwh": capacity,
                           "power_kw": col("battery_p_charge_max", 0.5) * capacity,
                           "eta_charge": eta, "eta_discharge": eta,
                           "soc_min": col("battery_soc_min", 0.1),
                           "soc_max": col("battery_soc_max", 0.9)}
    merged = {name: {**base.get(name, {}), **devices.get(name, {})}
              for name in ("battery", "ev", "heat_pump", "pv", "generator", "flexible_load")
              if name in base or name in devices}
    return Households.create(ids, kind, **merged)


@dataclass(frozen=True)
class HouseholdSeries:
    """Input series: per household `[households, steps]`, shared `[steps]`."""

    load_kw: torch.Tensor
    pv_kw: torch.Tensor
    ev_at_home: torch.Tensor
    ev_trip_kwh: torch.Tensor
    ev_steps_left: torch.Tensor
    outdoor_c: torch.Tensor
    hour: torch.Tensor  # local clock hour at each step's start
    weekend: torch.Tensor
    wholesale_price: torch.Tensor  # currency/kWh
    carbon_kg_per_kwh: torch.Tensor
    gains_kw: torch.Tensor  # internal and solar heat gains, kW ([steps] or per household)
    dt_h: float

    @property
    def steps(self) -> int:
        return int(self.hour.shape[0])

    @classmethod
    def from_dataset(cls, tables: Mapping[str, object],
                     homes: Sequence[int] | None = None) -> HouseholdSeries:
        """From `read_dataset`'s tables; `homes` picks and orders homes (default all)."""
        manifest = tables["manifest"]
        per_home = tables["households"]
        exo = tables["exogenous"]
        ids = np.sort(per_home["home"].unique()) if homes is None else np.asarray(homes)
        steps = len(exo)

        def grid(column: str) -> torch.Tensor:
            table = per_home.pivot(index="home", columns="time", values=column)
            return torch.tensor(table.loc[ids, exo["time"]].to_numpy(float))

        local = pd.DatetimeIndex(exo["time"]).tz_convert(manifest.get("timezone", "UTC"))
        at_home = grid("ev_at_home")
        return cls(
            load_kw=grid("load_kw"), pv_kw=grid("pv_kw"), ev_at_home=at_home,
            ev_trip_kwh=grid("ev_trip_kwh"), ev_steps_left=steps_to_departure(at_home),
            outdoor_c=torch.tensor(exo["outdoor_temp_c"].to_numpy(float)),
            hour=torch.tensor((local.hour + local.minute / 60).to_numpy(float)),
            weekend=torch.tensor(np.asarray(local.day_of_week >= 5, float)),
            wholesale_price=torch.tensor(exo["wholesale_price_per_kwh"].to_numpy(float)),
            carbon_kg_per_kwh=torch.tensor(exo["carbon_kg_per_kwh"].to_numpy(float)),
            gains_kw=torch.zeros(steps, dtype=torch.float64),
            dt_h=float(manifest["dt_s"]) / 3600.0)

    @classmethod
    def build(cls, load_kw: object, dt_h: float, pv_kw: object = 0.0,
              ev_at_home: object = 0.0, ev_trip_kwh: object = 0.0, outdoor_c: object = 10.0,
              start_hour: float = 0.0, wholesale_price: object = 0.0,
              carbon_kg_per_kwh: object = 0.0, gains_kw: object = 0.0) -> HouseholdSeries:
        """Series from arrays: `load_kw` `[households, steps]` sets the shape, the other
        per-household inputs broadcast to it, weather and prices to `[steps]`; the clock
        starts at `start_hour` on a weekday; departures are counted from `ev_at_home`."""
        load = torch.as_tensor(load_kw, dtype=torch.float64)
        n, steps = load.shape

        def per_home(x: object) -> torch.Tensor:
            return torch.broadcast_to(torch.as_tensor(x, dtype=torch.float64), (n, steps)).clone()

        def shared(x: object) -> torch.Tensor:
            return torch.broadcast_to(torch.as_tensor(x, dtype=torch.float64), (steps,)).clone()

        at_home = per_home(ev_at_home)
        return cls(load_kw=load.clone(), pv_kw=per_home(pv_kw), ev_at_home=at_home,
                   ev_trip_kwh=per_home(ev_trip_kwh), ev_steps_left=steps_to_departure(at_home),
                   outdoor_c=shared(outdoor_c),
                   hour=(start_hour + torch.arange(steps, dtype=torch.float64) * dt_h) % 24,
                   weekend=torch.zeros(steps, dtype=torch.float64),
                   wholesale_price=shared(wholesale_price),
                   carbon_kg_per_kwh=shared(carbon_kg_per_kwh), gains_kw=shared(gains_kw),
                   dt_h=dt_h)

    def at(self, t: int) -> HouseholdInputs:
        """The inputs of step `t`."""
        return HouseholdInputs(
            load_kw=self.load_kw[:, t], pv_kw=self.pv_kw[:, t], ev_at_home=self.ev_at_home[:, t],
            ev_trip_kwh=self.ev_trip_kwh[:, t], ev_steps_left=self.ev_steps_left[:, t],
            outdoor_c=self.outdoor_c[..., t], hour=self.hour[t], gains_kw=self.gains_kw[..., t],
            weekend=self.weekend[t])

    def select(self, rows: Sequence[int] | np.ndarray) -> HouseholdSeries:
        """The series of the households at positions `rows` (shared series as they are)."""
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        return HouseholdSeries(**{f.name: (getattr(self, f.name)[index]
                                          if f.name != "dt_h" and getattr(self, f.name).ndim == 2
                                          else getattr(self, f.name)) for f in fields(self)})

    def window(self, start: int, steps: int) -> HouseholdSeries:
        """Steps `start` to `start + steps` (fewer at the end of the series)."""
        cut = slice(start, start + steps)
        return HouseholdSeries(**{f.name: (getattr(self, f.name) if f.name == "dt_h"
                                          else getattr(self, f.name)[..., cut])
                                  for f in fields(self)})
