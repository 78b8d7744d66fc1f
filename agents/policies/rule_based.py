"""Rule-based home energy management: self-consumption first.

Surplus PV charges the battery, a deficit discharges it, both within the battery's limits;
whatever is left is bought or sold. Limit prices follow the household's grid tariff: a
buyer never pays more than importing would cost, a seller never takes less than exporting
would earn, so trading with neighbours can only help.

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


def limit_prices(
    residual_kw: torch.Tensor, import_price: torch.Tensor, export_price: torch.Tensor
) -> torch.Tensor:
    """Limit price per order: the import tariff for buyers, the export tariff for sellers."""
    return torch.where(residual_kw > 0, import_price, export_price)


def self_consumption_setpoints(
    households: Households, state: HouseholdState, inputs: HouseholdInputs, dt_h: float,
    buy_price: torch.Tensor | float | None = None,
    sell_price: torch.Tensor | float | None = None,
) -> Setpoints:
    """Feasible setpoints of every device by the self-consumption rule (module docstring).
    Without `buy_price` the generator stays at its minimum; without `sell_price` PV is
    never curtailed."""
    lo, hi = households.limits(state, inputs, dt_h)
    zero = torch.zeros_like(lo.battery_kw)
    ev = torch.maximum(lo.ev_kw, zero)  # the rule never discharges the car
    heat, flex, gen, pv = lo.heat_pump_kw, lo.flexible_kw, lo.generator_kw, hi.pv_kw
    surplus = (pv + gen - households.flexible_load.inflexible_kw(inputs.load_kw)
               - heat - flex - ev)

    def absorb(now: torch.Tensor, top: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        extra = torch.minimum(torch.relu(surplus), top - now)
        return now + extra, surplus - extra

    flex, surplus = absorb(flex, hi.flexible_kw)
    heat, surplus = absorb(heat, hi.heat_pump_kw)
    ev, surplus = absorb(ev, hi.ev_kw)
    battery = torch.minimum(torch.maximum(surplus, lo.battery_kw), hi.battery_kw)
    surplus = surplus - battery
    if buy_price is not None:
        g = households.generator
        buy = torch.as_tensor(buy_price, dtype=torch.float64)
        # output where the marginal cost meets the import price
        quadratic = g.cost_quadratic > 0
        economic = torch.where(quadratic, (buy - g.cost_linear) / (2 * torch.where(
            quadratic, g.cost_quadratic, 1.0)), torch.where(g.cost_linear < buy, g.max_kw, 0.0))
        economic = torch.minimum(torch.maximum(economic, lo.generator_kw), hi.generator_kw)
        more = torch.minimum(torch.relu(-surplus), economic - gen)
        gen, surplus = gen + more, surplus + more
    if sell_price is not None:
        paid_to_export = torch.as_tensor(sell_price, dtype=torch.float64) < 0
        cut = torch.minimum(torch.relu(surplus), pv - lo.pv_kw) * paid_to_export
        pv = pv - cut
    return Setpoints(battery, ev, heat, flex, pv, gen)
