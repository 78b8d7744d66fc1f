"""Rooftop PV of many households: uncontrolled, or curtailable by the household.

Stateless. The input is the AC power the array could deliver this step (the profile data
set's `pv_kw`), clipped to the inverter rating; a curtailable system may deliver anything
from zero up to that, an uncontrolled one delivers all of it. The setpoint is the output,
kW, positive (generation). A household without PV has `inverter_kw` zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from agents.devices.ledger import EnergyFlows
from agents.devices.parameters import OnDevice, Parameters, to_interval


@dataclass(frozen=True)
class PV(OnDevice):
    inverter_kw: torch.Tensor  # AC rating; inf for "no clipping", zero for no PV
    curtailable: torch.Tensor  # 1 where the household may curtail, else 0

    @classmethod
    def create(cls, households: Sequence[object], inverter_kw: object = float("inf"),
               curtailable: object = True) -> PV:
        p = Parameters("pv", households, inverter_kw=inverter_kw, curtailable=curtailable)
        p.finite("inverter_kw").non_negative("inverter_kw")
        return cls(p["inverter_kw"], (p["curtailable"] != 0).to(torch.float64))

    def available(self, available_kw: torch.Tensor) -> torch.Tensor:
        """What the system can deliver: the input, within [0, inverter rating]."""
        return torch.minimum(torch.clamp(available_kw, min=0.0), self.inverter_kw)

    def limits(self, available_kw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output interval, kW: [0, available] if curtailable, else [available, available]."""
        hi = self.available(available_kw)
        return hi * (1 - self.curtailable), hi

    def from_action(self, action: torch.Tensor, available_kw: torch.Tensor) -> torch.Tensor:
        """Raw action in [0, 1]: the share of the curtailable range delivered."""
        lo, hi = self.limits(available_kw)
        return to_interval(action, lo, hi, signed=False)

    def flows(self, available_kw: torch.Tensor, output_kw: torch.Tensor,
              dt_h: float) -> EnergyFlows:
        """Bookkeeping: input power = output + curtailed and clipped (losses)."""
        source = torch.clamp(available_kw, min=0.0) * dt_h
        source, out = torch.broadcast_tensors(source, output_kw * dt_h)
        zero = torch.zeros_like(out)
        return EnergyFlows(source, -out, zero, zero, source - out)
