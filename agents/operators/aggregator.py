"""Aggregators: a portfolio of households, its flexibility, wholesale position and prices.

- `flexibility`: how far the portfolio's total draw can move this step, up and down, from
  a baseline dispatch, summed from each device's exact limits (batteries and EVs both ways,
  heat pumps and flexible loads within their bands and deadlines, PV curtailment and
  generators).
- `wholesale_position`: the portfolio's net energy per step, what the aggregator buys (or
  sells) on the wholesale market; members net out inside the portfolio.
- `lead`: the aggregator as Stackelberg leader. For each candidate retail tariff (buy and
  sell price series) it simulates the followers' best responses (`Follower`: an MPC, or the
  rule-based policy), lets each household stay only if the tariff serves it no worse than
  its outside option (its own cost under the default tariff), and books its profit:
  members' payments, minus the wholesale cost of the members' net position, minus a
  `peak_price` per kW of the portfolio's highest import. It picks the best candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from agents.households.bill import energy_bill
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
    household's cost over the horizon (currency)."""

    net_kw: np.ndarray
    cost: np.ndarray


Follower = Callable[[np.ndarray, np.ndarray], Response]


class Candidate(NamedTuple):
    buy: np.ndarray  # [H] retail price members pay, currency/kWh
    sell: np.ndarray  # [H] retail price members earn


class Leadership(NamedTuple):
    """The chosen candidate, and per candidate: profit, members, and the response."""

    best: int
    profit: np.ndarray
    members: np.ndarray  # [candidates, households] bool
    responses: list[Response]


def mpc_follower(mpc: MPC, state: HouseholdState, forecast: HouseholdSeries) -> Follower:
    """Followers who plan optimally with `mpc` from `state` over `forecast`."""
    def respond(buy: np.ndarray, sell: np.ndarray) -> Response:
        plan = mpc.plan(state, forecast, buy, sell)
        return Response(plan.net_kw, plan.cost)
    return respond


def rule_follower(households: Households, state: HouseholdState, forecast: HouseholdSeries,
                  steps: int | None = None) -> Follower:
    """Followers running the self-consumption rule (price-aware only in their generator
    and curtailment), simulated over `forecast`."""
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


def markup_candidates(wholesale: np.ndarray, markups: Sequence[float],
                      sell_discount: float, peak_adders: Sequence[float] = (0.0,),
                      peak_hours: np.ndarray | None = None) -> list[Candidate]:
    """Tariffs wholesale + markup (+ a peak adder in `peak_hours`, a [H] bool mask) to buy,
    wholesale - `sell_discount` to sell, for every markup and adder."""
    w = np.asarray(wholesale, float)
    peak = np.zeros_like(w, bool) if peak_hours is None else np.asarray(peak_hours, bool)
    return [Candidate(w + m + a * peak, w - sell_discount)
            for m in markups for a in peak_adders]


@dataclass
class Aggregator:
    members: np.ndarray  # household indices in its portfolio
    peak_price: float = 0.0  # currency per kW of the portfolio's peak import (capacity)

    def flexibility(self, households: Households, state: HouseholdState,
                    inputs: HouseholdInputs, dt_h: float, baseline: Setpoints) -> Flexibility:
        """The portfolio's room to move from `baseline` this step (see module docstring)."""
        lo, hi = households.limits(state, inputs, dt_h)
        idx = torch.as_tensor(self.members, dtype=torch.long)
        draw = (0, 1, 2, 3)  # battery, EV, heat pump, flexible load: more is more draw
        up = sum((hi[k] - baseline[k])[idx].sum() for k in draw)
        down = sum((baseline[k] - lo[k])[idx].sum() for k in draw)
        for k in (4, 5):  # PV and generator: less output is more draw
            up = up + (baseline[k] - lo[k])[idx].sum()
            down = down + (hi[k] - baseline[k])[idx].sum()
        net = households.net_kw(baseline, inputs)[idx].sum()
        return Flexibility(float(net), float(up), float(down))

    def wholesale_position(self, net_kw: np.ndarray, dt_h: float) -> np.ndarray:
        """Energy to buy (+) or sell (-) per step, kWh: members' net draw `[households, H]`
        summed over the portfolio."""
        return np.asarray(net_kw, float)[self.members].sum(0) * dt_h

    def profit(self, candidate: Candidate, response: Response, members: np.ndarray,
               wholesale: np.ndarray, dt_h: float) -> float:
        """Members' payments - wholesale cost of their net position - peak charge."""
        net = response.net_kw[members]
        pay = energy_bill(net, candidate.buy, candidate.sell).sum()
        position = net.sum(0)
        peak = max(float(position.max(initial=0.0)), 0.0)
        return float(pay * dt_h - (position * wholesale).sum() * dt_h - self.peak_price * peak)

    def lead(self, candidates: Sequence[Candidate], follower: Follower, outside: Response,
             wholesale: np.ndarray, dt_h: float, tolerance: float = 1e-9) -> Leadership:
        """Pick the candidate tariff with the highest profit given the followers' best
        responses and their outside option `outside` (costs under the default tariff)."""
        if not candidates:
            raise ValueError("aggregator: no candidate tariffs to choose from")
        mine = np.zeros(len(outside.cost), bool)
        mine[self.members] = True
        profits, joined, responses = [], [], []
        for c in candidates:
            r = follower(c.buy, c.sell)
            stay = mine & (r.cost <= outside.cost + tolerance)
            profits.append(self.profit(c, r, stay, np.asarray(wholesale, float), dt_h))
            joined.append(stay)
            responses.append(r)
        profit = np.array(profits)
        return Leadership(int(np.argmax(profit)), profit, np.array(joined), responses)
