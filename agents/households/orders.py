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

- battery: s + (b - s) (1 - fill), fill = usable energy over usable capacity: a full store
  is worth what exporting earns, an empty one what importing costs;
- EV: s + (b - s) urgency, urgency = energy missing for the departure target over what the
  charger can still add before it;
- heat pump: s + (b - s) (1 - slack), slack = where the indoor temperature sits in the
  comfort band at the step's end (0 at the low edge, 1 at the high);
- flexible load: s + (b - s) age, age = mean age of the waiting energy as a share of its
  window (energy about to fall due is worth b);
- generator: its marginal cost (fuel for the next kWh);
- PV: 0 (curtailed energy is lost).

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

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from agents.households.composition import HouseholdInputs, Households, HouseholdState, Setpoints

# Setpoints fields in ACTIONS order: battery, ev, heat_pump, flexible_load, pv, generator.
# +1: a higher setpoint draws more from the grid; -1: a higher setpoint (output) draws less.
DRAW = (1.0, 1.0, 1.0, 1.0, -1.0, -1.0)
COVER_ORDER = (0, 5, 1, 2, 3, 4)  # a deficit: battery, generator, then anything reserved
ABSORB_ORDER = (3, 2, 1, 0, 5, 4)  # a surplus: appliances, heat, car, battery, generator, PV


@dataclass(frozen=True)
class Reserve:
    """The range each device may still move in after the market, kW ([lo, hi] around the
    committed setpoints; lo = hi = setpoint where the policy committed the device)."""

    lo: Setpoints
    hi: Setpoints

    @classmethod
    def none(cls, setpoints: Setpoints) -> Reserve:
        return cls(setpoints, setpoints)

    @cached_property
    def devices(self) -> frozenset[int]:
        """The devices (Setpoints indices) any household keeps a reserve of."""
        if self.hi is self.lo:  # `none`: nothing to compare
            return frozenset()
        return frozenset(k for k in range(len(DRAW))
                         if bool((self.hi[k] > self.lo[k]).any()))


def _fraction(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    ok = den > 1e-12
    return torch.where(ok, (num / torch.where(ok, den, 1.0)).clamp(0.0, 1.0), 0.0)


def marginal_values(households: Households, state: HouseholdState, inputs: HouseholdInputs,
                    setpoints: Setpoints, buy_price: torch.Tensor, sell_price: torch.Tensor,
                    dt_h: float) -> Setpoints:
    """Each device's value of a kWh now (currency/kWh, module docstring), `[households]`
    per device, in Setpoints order."""
    values = _values(households, state, inputs, setpoints, buy_price, sell_price, dt_h,
                     range(len(DRAW)))
    return Setpoints(*(values[k] for k in range(len(DRAW))))


def _values(households: Households, state: HouseholdState, inputs: HouseholdInputs,
            setpoints: Setpoints, b: torch.Tensor, s: torch.Tensor, dt_h: float,
            devices: Sequence[int]) -> dict[int, torch.Tensor]:
    """The marginal values of the `devices` (Setpoints indices) only."""
    spread = b - s
    shape = state.indoor_c.shape
    out: dict[int, torch.Tensor] = {}
    if 0 in devices:
        e_min, e_max = households.battery.energy_bounds()
        out[0] = s + spread * (1 - _fraction(state.battery_kwh - e_min, e_max - e_min))
    if 1 in devices:
        ev = households.ev
        steps_left = torch.as_tensor(inputs.ev_steps_left, dtype=torch.float64).clamp(max=1e9)
        can_add = ev.charge_kw * ev.eta_charge * dt_h * steps_left
        missing = ev.target_kwh() - state.ev_kwh
        urgency = torch.where(missing > 0, torch.where(can_add > 0, _fraction(
            missing, can_add), 1.0), 0.0)
        out[1] = s + spread * urgency
    if 2 in devices:
        low, high = households.heat_pump.band(inputs.hour + dt_h)
        out[2] = s + spread * (1 - _fraction(state.indoor_c - low, high - low))
    if 3 in devices:
        backlog = state.backlog_kwh
        window = households.flexible_load.window_steps(dt_h).to(torch.float64).unsqueeze(-1)
        ages = torch.arange(1, backlog.shape[-1] + 1, dtype=torch.float64,
                            device=backlog.device)
        out[3] = s + spread * _fraction((backlog * _fraction(ages, window)).sum(-1),
                                        backlog.sum(-1))
    if 4 in devices:
        out[4] = torch.zeros(shape, dtype=torch.float64, device=state.indoor_c.device)
    if 5 in devices:
        out[5] = torch.broadcast_to(
            households.generator.marginal_cost(setpoints.generator_kw), shape)
    return out


def _room(setpoints: Sequence[torch.Tensor], reserve: Reserve, k: int,
          direction: float) -> torch.Tensor:
    """kW device k can move to change the draw in `direction` (+1 more, -1 less)."""
    if DRAW[k] * direction > 0:
        return torch.clamp(reserve.hi[k] - setpoints[k], min=0.0)
    return torch.clamp(setpoints[k] - reserve.lo[k], min=0.0)


def order(households: Households, state: HouseholdState, inputs: HouseholdInputs,
          setpoints: Setpoints, reserve: Reserve, buy_price: torch.Tensor,
          sell_price: torch.Tensor, dt_h: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(quantity kWh, + to buy, - to sell; limit price currency/kWh) of each household's
    order: its net draw at the committed setpoints, at its marginal value (module
    docstring)."""
    q = households.net_kw(setpoints, inputs) * dt_h
    buyer = q > 0
    tariff = torch.where(buyer, buy_price, sell_price)
    reserved = reserve.devices
    if not reserved:  # every order is firm
        return q, tariff
    values = _values(households, state, inputs, setpoints, buy_price, sell_price, dt_h,
                     reserved)
    need = q.abs()
    left, priced = need, torch.zeros_like(need)
    for side, sequence, direction in ((buyer, COVER_ORDER, -1.0), (~buyer, ABSORB_ORDER, 1.0)):
        for k in (k for k in sequence if k in reserved):
            part = torch.where(side, torch.minimum(
                left, _room(setpoints, reserve, k, direction) * dt_h), 0.0)
            priced = priced + part * values[k]
            left = left - part
    priced = priced + left * tariff
    limit = torch.where(need > 0, priced / torch.where(need > 0, need, 1.0), tariff)
    low, high = torch.minimum(sell_price, buy_price), torch.maximum(sell_price, buy_price)
    return q, torch.minimum(torch.maximum(limit, low), high)


def cover(setpoints: Setpoints, reserve: Reserve, unfilled_kwh: torch.Tensor,
          dt_h: float) -> Setpoints:
    """The setpoints after the reserve takes what the market did not fill: a buyer short
    by `unfilled_kwh` > 0 draws less (`COVER_ORDER`), a seller with `unfilled_kwh` < 0 left
    absorbs more (`ABSORB_ORDER`), each device within its reserve."""
    reserved = reserve.devices
    values = list(setpoints)
    left = unfilled_kwh.abs() / dt_h
    short = unfilled_kwh > 0
    for side, sequence, direction in ((short, COVER_ORDER, -1.0), (~short, ABSORB_ORDER, 1.0)):
        for k in (k for k in sequence if k in reserved):
            move = torch.where(side, torch.minimum(
                left, _room(values, reserve, k, direction)), 0.0)
            values[k] = values[k] + DRAW[k] * direction * move
            left = left - move
    return Setpoints(*values)
