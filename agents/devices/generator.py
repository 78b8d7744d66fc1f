"""Controllable generators of many households (a CHP unit, a small diesel or fuel cell).

Stateless. The setpoint is the electric output, kW, in [`min_kw`, `max_kw`] (a household
without one has both zero); its running cost is (`cost_linear` p + `cost_quadratic` p^2) dt
in currency, convex. Fuel energy is output / `efficiency`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from agents.devices.ledger import EnergyFlows
from agents.devices.parameters import OnDevice, Parameters, to_interval


@dataclass(frozen=True)
class Generator(OnDevice):
    min_kw: torch.Tensor
    max_kw: torch.Tensor
    cost_linear: torch.Tensor  # currency per kWh
    cost_quadratic: torch.Tensor  # currency per kW^2 h
    efficiency: torch.Tensor  # electric output per unit of fuel energy

    @classmethod
    def create(cls, households: Sequence[object], max_kw: object, min_kw: object = 0.0,
               cost_linear: object = 0.25, cost_quadratic: object = 0.0,
               efficiency: object = 0.35) -> Generator:
        p = Parameters("generator", households, min_kw=min_kw, max_kw=max_kw,
                       cost_linear=cost_linear, cost_quadratic=cost_quadratic,
                       efficiency=efficiency)
        p.finite().non_negative("min_kw", "max_kw", "cost_quadratic").ordered("min_kw", "max_kw")
        p.fraction("efficiency", open_low=True)
        return cls(**p.values)

    def limits(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.min_kw, self.max_kw

    def from_action(self, action: torch.Tensor) -> torch.Tensor:
        """Raw action in [0, 1] mapped affinely onto [min_kw, max_kw]."""
        return to_interval(action, self.min_kw, self.max_kw, signed=False)

    def cost(self, output_kw: torch.Tensor, dt_h: float) -> torch.Tensor:
        """Running cost of the step, currency."""
        return (self.cost_linear * output_kw + self.cost_quadratic * output_kw ** 2) * dt_h

    def marginal_cost(self, output_kw: torch.Tensor) -> torch.Tensor:
        """Currency per kWh of the next unit of output."""
        return self.cost_linear + 2 * self.cost_quadratic * output_kw

    def flows(self, output_kw: torch.Tensor, dt_h: float) -> EnergyFlows:
        """Bookkeeping: fuel = output + losses."""
        out = output_kw * dt_h
        fuel = out / self.efficiency
        zero = torch.zeros_like(out)
        return EnergyFlows(fuel, -out, zero, zero, fuel - out)
