"""Each household's local observation: what its own HEMS can measure or is told.

One vector per household, the same layout for all (absent devices read zero), scaled to
order one so a policy can take it as is. Fields (`FIELDS`, in order):

| field | meaning |
|---|---|
| hour_sin, hour_cos | local clock time of the step start on the unit circle |
| weekend | 1 on Saturdays and Sundays |
| battery_soc | stored energy / capacity (0 without a battery) |
| ev_soc | car energy / capacity (0 without a car) |
| ev_at_home | 1 while the car is plugged in |
| ev_hours_left | hours at home before departure / 24, capped at 1 (0 while away) |
| indoor_gap | (indoor temperature - comfort low limit at the step end) / 5 K |
| band_width | (comfort high - low limit at the step end) / 5 K |
| outdoor | (outdoor temperature - 10 C) / 10 K |
| backlog | flexible energy waiting, kWh / 5 |
| load | own appliance load, kW / 5 |
| pv | own PV available, kW / 5 |
| buy_price, sell_price | own import and export price, currency/kWh / 0.3 |
| voltage | (own bus voltage at the previous step - 1 p.u.) / 0.05 p.u. |

The voltage is the previous step's: the current one depends on everyone's actions now
(before the first power flow, pass 1.0).
"""

from __future__ import annotations

import math

import torch

from agents.households.composition import HouseholdInputs, Households, HouseholdState

VOLTAGE_SCALE_PU = 0.05  # the voltage field is (v - 1 p.u.) / this

FIELDS = ("hour_sin", "hour_cos", "weekend", "battery_soc", "ev_soc", "ev_at_home",
          "ev_hours_left", "indoor_gap", "band_width", "outdoor", "backlog", "load", "pv",
          "buy_price", "sell_price", "voltage")


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)


def observe(households: Households, state: HouseholdState, inputs: HouseholdInputs,
            buy_price: torch.Tensor | float, sell_price: torch.Tensor | float,
            voltage_pu: torch.Tensor | float, dt_h: float) -> torch.Tensor:
    """Observations `[..., households, len(FIELDS)]`."""
    shape = state.indoor_c.shape
    f64 = dict(dtype=torch.float64, device=state.indoor_c.device)
    angle = torch.as_tensor(inputs.hour, **f64) * (2 * math.pi / 24)
    low, high = households.heat_pump.band(inputs.hour + dt_h)
    at_home = torch.as_tensor(inputs.ev_at_home, **f64)
    hours_left = torch.as_tensor(inputs.ev_steps_left, **f64).clamp(max=1e9) * dt_h
    columns = (
        torch.sin(angle), torch.cos(angle), torch.as_tensor(inputs.weekend, **f64),
        _ratio(state.battery_kwh, households.battery.capacity_kwh),
        _ratio(state.ev_kwh, households.ev.capacity_kwh),
        at_home, torch.clamp(hours_left / 24, max=1.0) * at_home,
        (state.indoor_c - low) / 5, (high - low) / 5,
        (torch.as_tensor(inputs.outdoor_c, **f64) - 10) / 10,
        state.backlog_kwh.sum(-1) / 5, torch.as_tensor(inputs.load_kw, **f64) / 5,
        torch.as_tensor(inputs.pv_kw, **f64) / 5,
        torch.as_tensor(buy_price, **f64) / 0.3, torch.as_tensor(sell_price, **f64) / 0.3,
        (torch.as_tensor(voltage_pu, **f64) - 1) / VOLTAGE_SCALE_PU,
    )
    return torch.stack([torch.broadcast_to(c, shape) for c in columns], dim=-1)
