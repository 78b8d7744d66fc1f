"""Energy bookkeeping of one step of a device, in kWh, elementwise over households.

Every device balances as

    source_kwh + electric_kwh = stored_kwh + delivered_kwh + losses_kwh

- electric_kwh: energy drawn from the household's bus during the step (negative when the
  device produces: PV, generator, a discharging battery);
- source_kwh: energy entering from outside the electrical system: sunlight turned into AC
  (PV, before curtailment), fuel (generator), ambient heat and internal gains (heat pump),
  energy charged away from home (EV, when a trip needs more than the car holds);
- stored_kwh: the change of stored energy (battery and EV charge, the building's heat,
  or, for a flexible load, the demand served ahead of its deadline: minus the backlog change);
- delivered_kwh: the service: energy driven (EV), heat lost through the building fabric
  (heat pump), demand arriving (flexible load);
- losses_kwh: conversion losses, curtailed PV, generator fuel not turned into electricity.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class EnergyFlows(NamedTuple):
    source_kwh: torch.Tensor
    electric_kwh: torch.Tensor
    stored_kwh: torch.Tensor
    delivered_kwh: torch.Tensor
    losses_kwh: torch.Tensor

    def residual(self) -> torch.Tensor:
        """In minus out; zero up to rounding for every device."""
        return (self.source_kwh + self.electric_kwh
                - self.stored_kwh - self.delivered_kwh - self.losses_kwh)
