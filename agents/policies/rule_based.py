"""Rule-based home energy management: self-consumption first.

Surplus PV charges the battery, a deficit discharges it, both within the battery's limits;
whatever is left is bought or sold. In a co-simulation with a local market the rule keeps
that order but lets the market go first: it commits only what cannot wait and reserves the
rest (`agents.households.orders`), so its order offers its surplus, or bids for its
deficit, at what its battery, appliances, heat and car would make of the energy, and what
the market does not fill the reserve then absorbs or covers exactly as below.

`self_consumption_setpoints` applies the rule to a household with every device:
1. what cannot wait runs: the heat pump's minimum to stay in its comfort band, the EV's
   minimum to reach its departure target, flexible demand that falls due, the generator's
   minimum output;
2. PV surplus then goes, in order, to waiting flexible demand, to heat (up to the top of the
   band), to the EV, and to the battery;
3. a remaining deficit discharges the battery, then runs the generator where its marginal
   cost is below the import price;
4. a surplus that is still left is curtailed if exporting would cost money (negative
   export price).
"""

from __future__ import annotations

import torch

from agents.households.composition import HouseholdInputs, Households, HouseholdState, Setpoints
from agents.households.orders import Reserve, cover


def self_consumption_reserve(
    households: Households, state: HouseholdState, inputs: HouseholdInputs, dt_h: float,
    buy_price: torch.Tensor | float | None = None,
    sell_price: torch.Tensor | float | None = None,
) -> tuple[Setpoints, Reserve]:
    """What the rule commits (step 1 of the module docstring; the battery idle) and the
    reserve it covers or absorbs the rest with (steps 2 to 4). Without `buy_price` the
    generator stays at its minimum; without `sell_price` PV is never curtailed."""
    lo, hi = households.limits(state, inputs, dt_h)
    zero = torch.zeros_like(lo.battery_kw)
    ev = torch.maximum(lo.ev_kw, zero)  # the rule never discharges the car
    committed = Setpoints(zero, ev, lo.heat_pump_kw, lo.flexible_kw, hi.pv_kw, lo.generator_kw)
    generator = lo.generator_kw
    if buy_price is not None:
        g = households.generator
        buy = torch.as_tensor(buy_price, dtype=torch.float64)
        # output where the marginal cost meets the import price
        quadratic = g.cost_quadratic > 0
        economic = torch.where(quadratic, (buy - g.cost_linear) / (2 * torch.where(
            quadratic, g.cost_quadratic, 1.0)), torch.where(g.cost_linear < buy, g.max_kw, 0.0))
        generator = torch.minimum(torch.maximum(economic, lo.generator_kw), hi.generator_kw)
    pv = hi.pv_kw
    if sell_price is not None:
        paid_to_export = torch.as_tensor(sell_price, dtype=torch.float64) < 0
        pv = torch.where(paid_to_export, lo.pv_kw, hi.pv_kw)
    reserve = Reserve(
        Setpoints(lo.battery_kw, ev, lo.heat_pump_kw, lo.flexible_kw, pv, lo.generator_kw),
        Setpoints(hi.battery_kw, hi.ev_kw, hi.heat_pump_kw, hi.flexible_kw, hi.pv_kw, generator))
    return committed, reserve


def self_consumption_setpoints(
    households: Households, state: HouseholdState, inputs: HouseholdInputs, dt_h: float,
    buy_price: torch.Tensor | float | None = None,
    sell_price: torch.Tensor | float | None = None,
) -> Setpoints:
    """Feasible setpoints of every device by the self-consumption rule, with no market
    (module docstring): the reserve covers or absorbs the whole committed draw."""
    committed, reserve = self_consumption_reserve(households, state, inputs, dt_h, buy_price,
                                                  sell_price)
    return cover(committed, reserve, households.net_kw(committed, inputs) * dt_h, dt_h)
