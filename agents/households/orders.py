"""A household's order in its local market, and what it does with the part not filled.

A policy commits setpoints for every device and may leave some devices a *reserve*: a range
around the committed setpoint that the household uses, after the market has cleared, to
absorb or cover whatever its order did not fill (the self-consumption rule reserves its
battery, the headroom of its appliances, heat pump and car, and its generator; an MPC plan,
a policy bank and external actions commit everything). The household's order is its net
draw at the committed setpoints, and its limit price is its own marginal value of that
energy: what the reserve it would otherwise use is worth, and its retail price for the
part no reserve can take.

Marginal values (currency/kWh) lie between the household's export price s and import
price b, by how much the household needs energy now:

| device | value | meaning |
|---|---|---|
| battery | s + (b - s) (1 - fill) | a full store is worth what exporting earns, an empty one what importing costs (fill: usable energy over usable capacity) |
| EV | s + (b - s) urgency | urgency: energy missing for the departure target over what the charger can still add before it |
| heat pump | s + (b - s) (1 - slack) | slack: indoor temperature within the comfort band at the step's end, 0 at the low edge, 1 at the high |
| flexible load | s + (b - s) age | age: mean age of the waiting energy as a share of its window (due energy is worth b) |
| generator | its marginal cost | fuel for the next kWh |
| PV | 0 | curtailed energy is lost |

A buyer (net draw q > 0) would cover its order with its reserve in the order of
`COVER_ORDER` (battery first, then the generator); the part its reserve can cover is priced
at those devices' values, the rest at b, and the limit is the quantity-weighted mean. A
seller would absorb its surplus in the order of `ABSORB_ORDER` (waiting appliances, heat,
car, battery, then curtailment), the rest priced at s. So a household with a nearly full
battery offers its PV cheaply, one with an empty battery or a cold house asks nearly the
import price, and a buyer without any reserve bids its import price.

After clearing, `cover` moves the reserved devices, in the same orders, by what was not
filled; the grid takes what is left. With nothing filled, the rule's reserve reproduces
self-consumption exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from agents.households.composition import HouseholdInputs, Households, HouseholdState, Setpoints

# Setpoints fields in ACTIONS order: battery, ev, heat_pump, flexible_load, pv, generator.
# +1: a higher setpoint draws more from the grid; -1: a higher setpoint (output) draws less.
DRAW = (1.0, 1.0, 1.0, 1.0, -1.0, -1.0)
COVER_ORDER = (0, 5, 1, 2, 3, 4)  # a deficit: battery, generator, then anything reserved
ABSORB_ORDER = (3, 2, 1, 0, 5, 4)  # a surplus: appliances, heat, car, battery, generator, PV


class Reserve(NamedTuple):
    """The range each device may still move in after the market, kW ([lo, hi] around the
    committed setpoints; lo = hi = setpoint where the policy committed the device)."""

    lo: Setpoints
    hi: Setpoints

    @classmethod
    def none(cls, setpoints: Setpoints) -> Reserve:
        return cls(setpoints, setpoints)


def _fraction(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    ok = den > 1e-12
    return torch.where(ok, (num / torch.where(ok, den, 1.0)).clamp(0.0, 1.0), 0.0)


def marginal_values(households: Households, state: HouseholdState, inputs: HouseholdInputs,
                    setpoints: Setpoints, buy_price: torch.Tensor, sell_price: torch.Tensor,
                    dt_h: float) -> Setpoints:
    """Each device's value of a kWh now (currency/kWh, module docstring), `[households]`
    per device, in Setpoints order."""
    b, s = buy_price, sell_price
    spread = b - s
    battery = households.battery
    e_min, e_max = battery.energy_bounds()
    fill = _fraction(state.battery_kwh - e_min, e_max - e_min)
    ev = households.ev
    steps_left = torch.as_tensor(inputs.ev_steps_left, dtype=torch.float64).clamp(max=1e9)
    can_add = ev.charge_kw * ev.eta_charge * dt_h * steps_left
    urgency = _fraction(ev.target_kwh() - state.ev_kwh, can_add)
    urgency = torch.where(ev.target_kwh() - state.ev_kwh > 0,
                          torch.where(can_add > 0, urgency, 1.0), 0.0)
    low, high = households.heat_pump.band(inputs.hour + dt_h)
    slack = _fraction(state.indoor_c - low, high - low)
    flex = households.flexible_load
    backlog = state.backlog_kwh
    window = flex.window_steps(dt_h).to(torch.float64).unsqueeze(-1)
    ages = torch.arange(1, backlog.shape[-1] + 1, dtype=torch.float64, device=backlog.device)
    age = _fraction((backlog * _fraction(ages, window)).sum(-1), backlog.sum(-1))
    generator = households.generator.marginal_cost(setpoints.generator_kw)
    return Setpoints(s + spread * (1 - fill), s + spread * urgency, s + spread * (1 - slack),
                     s + spread * age, torch.zeros_like(fill),
                     torch.broadcast_to(generator, fill.shape))


def _headroom(setpoints: Setpoints, reserve: Reserve, direction: float) -> list[torch.Tensor]:
    """kW each device can move to change the draw in `direction` (+1 more, -1 less)."""
    out = []
    for k, sign in enumerate(DRAW):
        up = sign * direction > 0
        room = reserve.hi[k] - setpoints[k] if up else setpoints[k] - reserve.lo[k]
        out.append(torch.clamp(room, min=0.0))
    return out


def order(households: Households, state: HouseholdState, inputs: HouseholdInputs,
          setpoints: Setpoints, reserve: Reserve, buy_price: torch.Tensor,
          sell_price: torch.Tensor, dt_h: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(quantity kWh, + to buy, - to sell; limit price currency/kWh) of each household's
    order: its net draw at the committed setpoints, at its marginal value (module
    docstring)."""
    q = households.net_kw(setpoints, inputs) * dt_h
    values = marginal_values(households, state, inputs, setpoints, buy_price, sell_price,
                             dt_h)
    buyer = q > 0
    need = q.abs()
    cover = _headroom(setpoints, reserve, -1.0)
    absorb = _headroom(setpoints, reserve, +1.0)
    left, priced = need, torch.zeros_like(need)
    for k_cover, k_absorb in zip(COVER_ORDER, ABSORB_ORDER):
        room = torch.where(buyer, cover[k_cover], absorb[k_absorb]) * dt_h
        part = torch.minimum(left, room)
        priced = priced + part * torch.where(buyer, values[k_cover], values[k_absorb])
        left = left - part
    priced = priced + left * torch.where(buyer, buy_price, sell_price)
    limit = torch.where(need > 0, priced / torch.where(need > 0, need, 1.0),
                        torch.where(buyer, buy_price, sell_price))
    low, high = torch.minimum(sell_price, buy_price), torch.maximum(sell_price, buy_price)
    return q, torch.minimum(torch.maximum(limit, low), high)


def cover(setpoints: Setpoints, reserve: Reserve, unfilled_kwh: torch.Tensor,
          dt_h: float) -> Setpoints:
    """The setpoints after the reserve takes what the market did not fill: a buyer short
    by `unfilled_kwh` > 0 draws less (`COVER_ORDER`), a seller with `unfilled_kwh` < 0 left
    absorbs more (`ABSORB_ORDER`), each device within its reserve."""
    values = list(setpoints)
    left = unfilled_kwh.abs() / dt_h
    short = unfilled_kwh > 0
    for k_cover, k_absorb in zip(COVER_ORDER, ABSORB_ORDER):
        for k, mine, direction in ((k_cover, short, -1.0), (k_absorb, ~short, 1.0)):
            sign = DRAW[k] * direction  # setpoint change per kW of draw change
            room = (reserve.hi[k] - values[k]) if sign > 0 else (values[k] - reserve.lo[k])
            move = torch.where(mine, torch.minimum(left, torch.clamp(room, min=0.0)), 0.0)
            values[k] = values[k] + sign * move
            left = left - move
    return Setpoints(*values)
