"""Batteries of many households at once: limits, SoC dynamics, action mapping, costs.

Power is positive when charging. Energy (state of charge) in kWh, power in kW, dt in hours.
Everything is torch, elementwise over households (and over any leading batch dimensions of
the state), so the same code steps the co-simulation and sits, differentiably, inside a
training rollout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from agents.devices.ledger import EnergyFlows
from agents.devices.parameters import DeviceError, OnDevice, Parameters, to_interval

__all__ = ["Battery", "DeviceError", "storage_interval", "stored_kwh", "conversion_losses_kwh"]


# -- storage physics, shared by batteries and electric cars ---------------------------------

def storage_interval(energy_kwh: torch.Tensor, e_min: torch.Tensor, e_max: torch.Tensor,
                     discharge_kw: torch.Tensor, charge_kw: torch.Tensor,
                     eta_charge: torch.Tensor, eta_discharge: torch.Tensor,
                     dt_h: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Terminal power interval (kW, charging positive) for one step from `energy_kwh`:
    within the ratings, and keeping the stored energy within [e_min, e_max] after the step.
    An energy already outside its bounds (never, in normal use) must not flip lo > hi, so
    the interval always holds zero."""
    lo = torch.maximum(-discharge_kw, -(energy_kwh - e_min) * eta_discharge / dt_h)
    hi = torch.minimum(charge_kw, (e_max - energy_kwh) / (eta_charge * dt_h))
    return torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))


def stored_kwh(power_kw: torch.Tensor, eta_charge: torch.Tensor, eta_discharge: torch.Tensor,
               dt_h: float) -> torch.Tensor:
    """Change of stored energy over a step at `power_kw` (charging losses on the way in,
    discharging losses on the way out)."""
    charge = torch.clamp(power_kw, min=0.0) * eta_charge
    discharge = torch.clamp(power_kw, max=0.0) / eta_discharge
    return (charge + discharge) * dt_h


def conversion_losses_kwh(power_kw: torch.Tensor, eta_charge: torch.Tensor,
                          eta_discharge: torch.Tensor, dt_h: float) -> torch.Tensor:
    """Energy lost in conversion during the step, kWh (for energy bookkeeping)."""
    charge = torch.clamp(power_kw, min=0.0)
    discharge = torch.clamp(power_kw, max=0.0)
    return (charge * (1 - eta_charge) - discharge * (1 / eta_discharge - 1)) * dt_h


@dataclass(frozen=True)
class Battery(OnDevice):
    """One battery per household; a household without one has zero capacity and power."""

    capacity_kwh: torch.Tensor
    power_kw: torch.Tensor
    eta_charge: torch.Tensor  # fraction of charging energy stored
    eta_discharge: torch.Tensor  # fraction of stored energy delivered
    soc_min: torch.Tensor  # fraction of capacity
    soc_max: torch.Tensor
    degradation_cost: torch.Tensor  # currency per kWh of throughput at the terminals

    @classmethod
    def create(
        cls,
        households: Sequence[object],
        capacity_kwh: object,
        power_kw: object,
        eta_charge: object = 0.95,
        eta_discharge: object = 0.95,
        soc_min: object = 0.1,
        soc_max: object = 0.9,
        degradation_cost: object = 0.0,
    ) -> Battery:
        """Validated fleet; parameters broadcast to len(households). Errors name the
        household (its entry in `households`) and the field."""
        p = Parameters("battery", households, capacity_kwh=capacity_kwh, power_kw=power_kw,
                       eta_charge=eta_charge, eta_discharge=eta_discharge, soc_min=soc_min,
                       soc_max=soc_max, degradation_cost=degradation_cost)
        p.finite().non_negative("capacity_kwh", "power_kw", "degradation_cost")
        p.fraction("eta_charge", "eta_discharge", open_low=True)
        p.fraction("soc_min", "soc_max").ordered("soc_min", "soc_max")
        return cls(**p.values)

    @property
    def size(self) -> int:
        return int(self.capacity_kwh.shape[0])

    def energy_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(minimum, maximum) stored energy, kWh."""
        return self.soc_min * self.capacity_kwh, self.soc_max * self.capacity_kwh

    def limits(self, energy_kwh: torch.Tensor, dt_h: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Feasible power interval (kW) for one step from `energy_kwh`: within the power
        rating, and keeping the stored energy within its bounds after the step."""
        return storage_interval(energy_kwh, *self.energy_bounds(), self.power_kw,
                                self.power_kw, self.eta_charge, self.eta_discharge, dt_h)

    def clip(self, power_kw: torch.Tensor, energy_kwh: torch.Tensor, dt_h: float) -> torch.Tensor:
        """The feasible power closest to the requested one."""
        lo, hi = self.limits(energy_kwh, dt_h)
        return torch.minimum(torch.maximum(power_kw, lo), hi)

    def from_action(self, action: torch.Tensor, energy_kwh: torch.Tensor,
                    dt_h: float) -> torch.Tensor:
        """Map a raw action in [-1, 1] affinely onto the feasible interval (differentiable)."""
        lo, hi = self.limits(energy_kwh, dt_h)
        return to_interval(action, lo, hi, signed=True)

    def step(self, energy_kwh: torch.Tensor, power_kw: torch.Tensor,
             dt_h: float) -> torch.Tensor:
        """Stored energy after one step at `power_kw` (charging losses on the way in,
        discharging losses on the way out)."""
        return energy_kwh + stored_kwh(power_kw, self.eta_charge, self.eta_discharge, dt_h)

    def losses_kwh(self, power_kw: torch.Tensor, dt_h: float) -> torch.Tensor:
        """Energy lost in conversion during the step, kWh (for energy bookkeeping)."""
        return conversion_losses_kwh(power_kw, self.eta_charge, self.eta_discharge, dt_h)

    def degradation(self, power_kw: torch.Tensor, dt_h: float) -> torch.Tensor:
        """Wear cost of the step, currency: `degradation_cost` times |power| dt."""
        return self.degradation_cost * power_kw.abs() * dt_h

    def flows(self, energy_kwh: torch.Tensor, power_kw: torch.Tensor,
              dt_h: float) -> EnergyFlows:
        """Energy bookkeeping of one step (see agents.devices.ledger)."""
        zero = torch.zeros_like(power_kw)
        stored = self.step(energy_kwh, power_kw, dt_h) - energy_kwh
        return EnergyFlows(zero, power_kw * dt_h, stored, zero, self.losses_kwh(power_kw, dt_h))
