"""How households respond to a retail tariff: follower models and portfolio flexibility.

- `mpc_follower`, `rule_follower`: the households' best response to a tariff (buy and sell
  price series, currency/kWh), as a `Follower`: a callable `(buy [H], sell [H]) -> Response`
  with the net draw `[households, H]` kW and each household's cost over the horizon. A leader
  (markets.stackelberg) takes any such callable; it never needs to know which model is behind.
- `flexibility`: how far a portfolio's total draw can move this step, up and down, from a
  baseline dispatch, summed from each device's exact limits (batteries and EVs both ways,
  heat pumps and flexible loads within their bands and deadlines, PV curtailment and
  generators).
- `wholesale_position`: a portfolio's net energy per step, what its retailer buys (or sells)
  on the wholesale market; members net out inside the portfolio.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from agents.households.composition import (
    HouseholdInputs,
    Households,
    HouseholdState,
    Setpoints,
)
from agents.households.dataset import HouseholdSeries
from agents.policies.rule_based import self_consumption_setpoints

if TYPE_CHECKING:  # the MPC pulls in cvxpy; only its users need it loaded
    from agents.policies.mpc import MPC


class Flexibility(NamedTuple):
    """Portfolio totals for one step, kW: the baseline draw and how far it can go up
    (more consumption or less generation) and down."""

    baseline_kw: float
    up_kw: float
    down_kw: float


class Response(NamedTuple):
    """Followers' best response to a tariff: net draw `[households, H]` kW, and each
    household's cost over the horizon (currency: bill plus wear, fuel and discomfort)."""

    net_kw: np.ndarray
    cost: np.ndarray


Follower = Callable[[np.ndarray, np.ndarray], Response]


def mpc_follower(mpc: MPC, state: HouseholdState, forecast: HouseholdSeries) -> Follower:
    """Followers who plan optimally with `mpc` from `state` over `forecast`; prices in
    currency/kWh, `[H]` or `[households, H]`."""
    def respond(buy: np.ndarray, sell: np.ndarray) -> Response:
        plan = mpc.plan(state, forecast, buy, sell)
        return Response(plan.net_kw, plan.cost)
    return respond


def rule_follower(households: Households, state: HouseholdState, forecast: HouseholdSeries,
                  steps: int | None = None) -> Follower:
    """Followers running the self-consumption rule (price-aware only in their generator
    and curtailment), simulated over the first `steps` (default: all) of `forecast`."""
    dt = forecast.dt_h
    horizon = forecast.steps if steps is None else steps

    def respond(buy: np.ndarray, sell: np.ndarray) -> Response:
        s, cost, net = state, torch.zeros(households.size, dtype=torch.float64), []
        for t in range(horizon):
            inputs = forecast.at(t)
            b, p = torch.as_tensor(buy[..., t]), torch.as_tensor(sell[..., t])
            sp = self_consumption_setpoints(households, s, inputs, dt, b, p)
            cost = cost + households.cost(sp, inputs, b, p, dt)
            net.append(households.net_kw(sp, inputs))
            s = households.step(s, sp, inputs, dt)
        return Response(torch.stack(net, 1).numpy(), cost.numpy())
    return respond


def flexibility(households: Households, members: np.ndarray, state: HouseholdState,
                inputs: HouseholdInputs, dt_h: float, baseline: Setpoints) -> Flexibility:
    """The room (kW) that the portfolio `members` (household indices) has to move its total
    draw from `baseline` this step of `dt_h` hours."""
    lo, hi = households.limits(state, inputs, dt_h)
    idx = torch.as_tensor(np.asarray(members), dtype=torch.long)
    draw = (0, 1, 2, 3)  # battery, EV, heat pump, flexible load: more is more draw
    up = sum((hi[k] - baseline[k])[idx].sum() for k in draw)
    down = sum((baseline[k] - lo[k])[idx].sum() for k in draw)
    for k in (4, 5):  # PV and generator: less output is more draw
        up = up + (baseline[k] - lo[k])[idx].sum()
        down = down + (hi[k] - baseline[k])[idx].sum()
    net = households.net_kw(baseline, inputs)[idx].sum()
    return Flexibility(float(net), float(up), float(down))


def wholesale_position(net_kw: np.ndarray, members: np.ndarray, dt_h: float) -> np.ndarray:
    """Energy to buy (+) or sell (-) per step, kWh `[H]`: the net draw `[households, H]` kW
    of the portfolio `members` (household indices), summed over the portfolio."""
    return np.asarray(net_kw, float)[np.asarray(members)].sum(0) * dt_h
