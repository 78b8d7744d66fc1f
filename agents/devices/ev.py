"""Electric vehicles of many households: availability, trips, optional V2G, departure target.

State: the energy in the car's battery, kWh. Setpoint: power at the home charger, kW,
positive when charging, negative when discharging to the home (vehicle-to-grid, only for
cars with `discharge_kw` > 0). While the car is away the setpoint is zero and the trip
energy leaves the battery; a trip needing more than the car holds is topped up away from
home (the `source_kwh` of its `flows`: reported, never negative energy).

Departure target: before each departure the car must hold `target_soc` of its capacity.
The feasible interval at home keeps that target reachable: with `steps_left` at-home steps
before departure (this one included), the charge after this step plus what the charger can
add in the remaining steps must reach the target. When the target is out of reach the car
charges at full power (`departure_shortfall_kwh` reports what is missing).

Inputs come from the profile data set: `ev_at_home` and `ev_trip_kwh` per home and step;
`steps_to_departure(ev_at_home)` gives `steps_left`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from agents.devices.battery import conversion_losses_kwh, storage_interval, stored_kwh
from agents.devices.ledger import EnergyFlows
from agents.devices.parameters import OnDevice, Parameters, to_interval


class EVInputs(NamedTuple):
    """Exogenous inputs of one step, elementwise over households."""

    at_home: torch.Tensor  # 1 (or True) when the car is plugged in for the whole step
    trip_kwh: torch.Tensor  # energy driven during the step, kWh
    steps_left: torch.Tensor  # at-home steps before departure, this one included; inf if none


def steps_to_departure(at_home: torch.Tensor, end_is_departure: bool = True) -> torch.Tensor:
    """For each step (last dimension) at home, the at-home steps left before the car next
    leaves, this step included; inf when away. If the series ends with the car at home,
    the end counts as a departure (`end_is_departure`) or the count is inf."""
    home = torch.as_tensor(at_home).to(torch.bool)
    steps = home.shape[-1]
    index = torch.arange(steps, dtype=torch.float64, device=home.device).expand(home.shape)
    end = float(steps) if end_is_departure else math.inf
    away_at = torch.where(home, end, index)
    # next away step at or after t: a reverse cumulative minimum
    next_away = torch.flip(torch.cummin(torch.flip(away_at, [-1]), dim=-1).values, [-1])
    return torch.where(home, next_away - index, math.inf)


@dataclass(frozen=True)
class EV(OnDevice):
    """One car per household; a household without one has zero capacity and power."""

    capacity_kwh: torch.Tensor
    charge_kw: torch.Tensor  # home charger rating
    discharge_kw: torch.Tensor  # V2G rating; zero without V2G
    eta_charge: torch.Tensor
    eta_discharge: torch.Tensor
    soc_min: torch.Tensor  # V2G never discharges below this fraction (driving may)
    soc_max: torch.Tensor  # charging stops here
    target_soc: torch.Tensor  # required at each departure
    degradation_cost: torch.Tensor  # currency per kWh of throughput at the charger

    @classmethod
    def create(
        cls,
        households: Sequence[object],
        capacity_kwh: object,
        charge_kw: object,
        v2g: object = False,
        discharge_kw: object | None = None,
        eta_charge: object = 0.93,
        eta_discharge: object = 0.93,
        soc_min: object = 0.1,
        soc_max: object = 1.0,
        target_soc: object = 0.8,
        degradation_cost: object = 0.0,
    ) -> EV:
        """Validated fleet. `v2g` (bool, per household or for all) enables discharging, at
        `discharge_kw` (default: the charger rating)."""
        p = Parameters("ev", households, capacity_kwh=capacity_kwh, charge_kw=charge_kw,
                       v2g=v2g, discharge_kw=charge_kw if discharge_kw is None else discharge_kw,
                       eta_charge=eta_charge, eta_discharge=eta_discharge, soc_min=soc_min,
                       soc_max=soc_max, target_soc=target_soc, degradation_cost=degradation_cost)
        p.finite().non_negative("capacity_kwh", "charge_kw", "discharge_kw", "degradation_cost")
        p.fraction("eta_charge", "eta_discharge", open_low=True)
        p.fraction("soc_min", "soc_max", "target_soc").ordered("soc_min", "soc_max")
        p.ordered("target_soc", "soc_max")
        values = dict(p.values)
        values["discharge_kw"] = values["discharge_kw"] * (values.pop("v2g") != 0)
        return cls(**values)

    def energy_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(V2G floor, charging ceiling) of stored energy, kWh."""
        return self.soc_min * self.capacity_kwh, self.soc_max * self.capacity_kwh

    def target_kwh(self) -> torch.Tensor:
        return self.target_soc * self.capacity_kwh

    def limits(self, energy_kwh: torch.Tensor, dt_h: float,
               inputs: EVInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Feasible charger power (kW): zero while away; at home within the ratings, the
        energy bounds and the departure target (as far as it can still be met)."""
        home = torch.as_tensor(inputs.at_home, dtype=torch.float64)
        lo, hi = storage_interval(energy_kwh, *self.energy_bounds(), self.discharge_kw,
                                  self.charge_kw, self.eta_charge, self.eta_discharge, dt_h)
        # The later at-home steps can add at most this much; a huge count stands for "no
        # departure ahead" without inf * 0 for cars with no charger.
        later = (torch.as_tensor(inputs.steps_left, dtype=torch.float64).clamp(max=1e9) - 1.0)
        need = self.target_kwh() - energy_kwh - later * self.eta_charge * self.charge_kw * dt_h
        lo_target = torch.where(need > 0, need / (self.eta_charge * dt_h),
                                need * self.eta_discharge / dt_h)
        lo = torch.minimum(torch.maximum(lo, lo_target), hi)
        return lo * home, hi * home

    def from_action(self, action: torch.Tensor, energy_kwh: torch.Tensor, dt_h: float,
                    inputs: EVInputs) -> torch.Tensor:
        """Raw action in [-1, 1] mapped affinely onto the feasible interval."""
        lo, hi = self.limits(energy_kwh, dt_h, inputs)
        return to_interval(action, lo, hi, signed=True)

    def _charged(self, energy_kwh: torch.Tensor, power_kw: torch.Tensor, dt_h: float,
                 inputs: EVInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(energy after the step before any top-up, top-up needed away from home)."""
        after = (energy_kwh + stored_kwh(power_kw, self.eta_charge, self.eta_discharge, dt_h)
                 - inputs.trip_kwh)
        return after, torch.clamp(-after, min=0.0)

    def step(self, energy_kwh: torch.Tensor, power_kw: torch.Tensor, dt_h: float,
             inputs: EVInputs) -> torch.Tensor:
        """Energy after charging at `power_kw` and driving `trip_kwh` (never below zero)."""
        after, topped_up = self._charged(energy_kwh, power_kw, dt_h, inputs)
        return after + topped_up

    def departure_shortfall_kwh(self, energy_next: torch.Tensor,
                                inputs: EVInputs) -> torch.Tensor:
        """Energy missing from the target when the car leaves after this step, kWh."""
        last = (torch.as_tensor(inputs.steps_left) == 1) & (torch.as_tensor(inputs.at_home) != 0)
        return torch.clamp(self.target_kwh() - energy_next, min=0.0) * last

    def degradation(self, power_kw: torch.Tensor, dt_h: float) -> torch.Tensor:
        """Wear cost of the step, currency: `degradation_cost` times |power| dt."""
        return self.degradation_cost * power_kw.abs() * dt_h

    def flows(self, energy_kwh: torch.Tensor, power_kw: torch.Tensor, dt_h: float,
              inputs: EVInputs) -> EnergyFlows:
        """Bookkeeping: charger energy + top-up = stored + driven + losses."""
        _, topped_up = self._charged(energy_kwh, power_kw, dt_h, inputs)
        stored = self.step(energy_kwh, power_kw, dt_h, inputs) - energy_kwh
        losses = conversion_losses_kwh(power_kw, self.eta_charge, self.eta_discharge, dt_h)
        return EnergyFlows(topped_up, power_kw * dt_h, stored,
                           torch.as_tensor(inputs.trip_kwh, dtype=torch.float64).expand_as(stored),
                           losses)
