"""Follower models: households' best response to a tariff, a portfolio's flexibility and its
wholesale position."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.households import ACTIONS, Households, HouseholdSeries, HouseholdType, draw_types
from agents.households.response import (
    Response,
    flexibility,
    mpc_follower,
    rule_follower,
    wholesale_position,
)
from agents.policies import MPC, MPCConfig, self_consumption_setpoints


def portfolio(n: int = 6, seed: int = 0) -> Households:
    rng = np.random.default_rng(seed)
    return Households.create(
        range(n), draw_types(n, [0, 1, 1, 1], seed),
        battery=dict(capacity_kwh=6.0, power_kw=2.5),
        ev=dict(capacity_kwh=40.0, charge_kw=7.0, v2g=True),
        heat_pump=dict(power_kw=rng.uniform(1, 3, n)), generator=dict(max_kw=1.0),
        flexible_load=dict(share=0.2, window_h=2.0))


def test_flexibility_is_what_extreme_actions_reach():
    hh = portfolio()
    dt = 0.25
    series = HouseholdSeries.build(np.full((6, 2), 1.5), dt, pv_kw=2.0, ev_at_home=1.0,
                                   start_hour=12.0)
    state = hh.initial_state(dt, battery_soc=0.5, ev_soc=0.5)
    inputs = series.at(0)
    base = self_consumption_setpoints(hh, state, inputs, dt)
    members = np.array([0, 2, 3, 5])
    flex = flexibility(hh, members, state, inputs, dt, base)
    signed = torch.tensor([True, True, False, False, False, False])
    high = torch.where(signed, 1.0, torch.tensor([0, 0, 1, 1, 0, 0.0]))  # most draw
    low = torch.where(signed, -1.0, torch.tensor([0, 0, 0, 0, 1, 1.0]))  # least draw
    m = torch.as_tensor(members)
    most = hh.net_kw(hh.from_action(high.expand(6, len(ACTIONS)), state, inputs, dt), inputs)
    least = hh.net_kw(hh.from_action(low.expand(6, len(ACTIONS)), state, inputs, dt), inputs)
    net = hh.net_kw(base, inputs)[m].sum().item()
    assert flex.baseline_kw == pytest.approx(net)
    assert flex.up_kw == pytest.approx(most[m].sum().item() - net)
    assert flex.down_kw == pytest.approx(net - least[m].sum().item())
    assert flex.up_kw > 0 and flex.down_kw > 0
    position = wholesale_position(np.ones((6, 3)), members, dt)
    assert position.tolist() == [4 * dt] * 3


def test_followers_respond_to_a_peak_tariff():
    """MPC followers with batteries move energy out of a priced peak; the rule-based
    follower answers through the same interface and never beats them at their objective."""
    n, steps, dt = 3, 12, 1.0
    hh = Households.create(range(n), [HouseholdType.ACTIVE_CONSUMER] * n,
                           battery=dict(capacity_kwh=8.0, power_kw=3.0))
    peak = (np.arange(steps) >= 6) & (np.arange(steps) < 9)
    load = np.where(peak, 3.0, 1.0)[None].repeat(n, 0)
    series = HouseholdSeries.build(load, dt)
    state = hh.initial_state(dt, battery_soc=0.1)
    follow = mpc_follower(MPC(hh, dt, MPCConfig(horizon=steps, households_per_problem=0)),
                          state, series)
    flat_buy, sell = np.full(steps, 0.2), np.zeros(steps)
    peaky_buy = flat_buy + 0.15 * peak
    flat, peaky = follow(flat_buy, sell), follow(peaky_buy, sell)
    assert isinstance(flat, Response) and flat.net_kw.shape == (n, steps)
    assert (flat.net_kw == load).all()  # no reason to move without a price difference
    # identical followers all recharge in the same cheap hour: the rebound peak a leader
    # has to price
    assert peaky.net_kw[:, peak].sum() < flat.net_kw[:, peak].sum() - 3.0
    assert flat.cost == pytest.approx((load * flat_buy).sum(1) * dt)
    rule = rule_follower(hh, state, series)(peaky_buy, sell)
    assert rule.net_kw.shape == (n, steps)
    assert (rule.cost >= peaky.cost - 1e-6).all()
    assert rule_follower(hh, state, series, steps=4)(peaky_buy, sell).net_kw.shape == (n, 4)
