"""Shiftable household demand: a share of each step's load may wait up to a window.

After FACMAC's residential model (10% of each hour's load can be delayed by up to 5 h):
each step `share` of the household's appliance load arrives as flexible energy; it may be
served in the step it arrives or in any of the next `window_h / dt_h` steps, and must be
served by then. The rest of the load, `inflexible_kw`, is served as it comes.

State: the backlog, kWh, shaped `[..., households, max_steps]`; entry j holds the energy
that arrived j + 1 steps ago and is still waiting (create it with `initial_state`). Energy is
served oldest first. Setpoint: the flexible power served this step, kW, between what falls
due now (the mandatory part) and everything pending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from agents.devices.ledger import EnergyFlows
from agents.devices.parameters import OnDevice, Parameters, to_interval


@dataclass(frozen=True)
class FlexibleLoad(OnDevice):
    share: torch.Tensor  # fraction of the appliance load that may be shifted
    window_h: torch.Tensor  # how long it may wait, hours

    @classmethod
    def create(cls, households: Sequence[object], share: object = 0.1,
               window_h: object = 5.0) -> FlexibleLoad:
        p = Parameters("flexible_load", households, share=share, window_h=window_h)
        p.finite().fraction("share").non_negative("window_h")
        return cls(**p.values)

    def window_steps(self, dt_h: float) -> torch.Tensor:
        """Steps each household's flexible energy may wait, [households] int64."""
        return torch.floor(self.window_h / dt_h + 1e-9).to(torch.int64)

    def initial_state(self, dt_h: float, batch: tuple[int, ...] = ()) -> torch.Tensor:
        """An empty backlog, [*batch, households, longest window of an owner in steps]
        (households with no flexible share never have anything waiting, so their window
        takes no room)."""
        windows = self.window_steps(dt_h)[self.share > 0]
        width = int(windows.max()) if windows.numel() else 0
        return torch.zeros(*batch, self.share.shape[0], width, dtype=torch.float64,
                           device=self.share.device)

    def inflexible_kw(self, load_kw: torch.Tensor) -> torch.Tensor:
        """The part of the appliance load served as it comes."""
        return (1 - self.share) * load_kw

    def _pending(self, backlog_kwh: torch.Tensor, dt_h: float,
                 load_kw: torch.Tensor) -> torch.Tensor:
        """Everything waiting this step by age 0..max (arrivals first), kWh."""
        arriving = (self.share * load_kw * dt_h).unsqueeze(-1)
        arriving = torch.broadcast_to(arriving, (*backlog_kwh.shape[:-1], 1))
        return torch.cat([arriving, backlog_kwh], dim=-1)

    def _due(self, pending: torch.Tensor, dt_h: float) -> torch.Tensor:
        """Mask of the ages that must be served this step."""
        age = torch.arange(pending.shape[-1], device=pending.device)
        return age >= self.window_steps(dt_h).unsqueeze(-1)

    def limits(self, backlog_kwh: torch.Tensor, dt_h: float,
               load_kw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Served power interval, kW: [what falls due, everything pending] / dt."""
        pending = self._pending(backlog_kwh, dt_h, load_kw)
        due = (pending * self._due(pending, dt_h)).sum(-1)
        return due / dt_h, pending.sum(-1) / dt_h

    def from_action(self, action: torch.Tensor, backlog_kwh: torch.Tensor, dt_h: float,
                    load_kw: torch.Tensor) -> torch.Tensor:
        """Raw action in [0, 1]: the share of the deferrable part served now."""
        lo, hi = self.limits(backlog_kwh, dt_h, load_kw)
        return to_interval(action, lo, hi, signed=False)

    def step(self, backlog_kwh: torch.Tensor, served_kw: torch.Tensor, dt_h: float,
             load_kw: torch.Tensor) -> torch.Tensor:
        """Backlog after serving `served_kw` oldest first; everyone ages one step."""
        pending = self._pending(backlog_kwh, dt_h, load_kw)
        # energy older than each age: a reverse cumulative sum, exclusive
        older = torch.flip(torch.cumsum(torch.flip(pending, [-1]), -1), [-1]) - pending
        take = torch.minimum(torch.clamp(served_kw.unsqueeze(-1) * dt_h - older, min=0.0),
                             pending)
        left = pending - take
        return left[..., :-1]

    def flows(self, backlog_kwh: torch.Tensor, served_kw: torch.Tensor, dt_h: float,
              load_kw: torch.Tensor) -> EnergyFlows:
        """Bookkeeping: energy served = demand arriving + backlog worked off (stored is
        minus the backlog change: demand met ahead of its deadline counts as stored)."""
        after = self.step(backlog_kwh, served_kw, dt_h, load_kw)
        served = served_kw * dt_h
        arriving = torch.broadcast_to(self.share * load_kw * dt_h, served.shape)
        stored = -(after.sum(-1) - backlog_kwh.sum(-1))
        zero = torch.zeros_like(served)
        return EnergyFlows(zero, served, stored, arriving, zero)
