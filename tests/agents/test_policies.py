"""Policies: the self-consumption rule, the MPC against brute-force and analytic optima,
and the bank of independent per-agent policies."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from agents.households import (
    ACTIONS,
    FIELDS,
    SIGNED_ACTIONS,
    Households,
    HouseholdSeries,
    HouseholdType,
    draw_types,
)
from agents.policies import MPC, MPCConfig, MPCError, PolicyBank, self_consumption_setpoints

PASSIVE_CONSUMER = HouseholdType.PASSIVE_CONSUMER


# -- MPC against brute force and analytic optima ---------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mpc_battery_plan_is_the_brute_force_optimum(seed):
    """Lossless battery, energies and loads on a 2 kWh grid: the LP optimum sits on the
    grid, so enumerating every grid schedule finds exactly the same cost."""
    rng = np.random.default_rng(seed)
    hh = Households.create(["a"], [HouseholdType.ACTIVE_PROSUMER], battery=dict(
        capacity_kwh=10, power_kw=4, eta_charge=1, eta_discharge=1, soc_min=0.1, soc_max=0.9))
    load = rng.choice([0.0, 2.0, 4.0], size=(1, 4))
    pv = rng.choice([0.0, 2.0], size=(1, 4))
    buy = rng.uniform(0.1, 0.5, 4)
    sell = buy * rng.uniform(0, 0.8, 4)
    plan = MPC(hh, 1.0, MPCConfig(horizon=4)).plan(
        hh.initial_state(1.0, battery_soc=0.5), HouseholdSeries.build(load, 1.0, pv_kw=pv),
        buy, sell)
    best = math.inf
    for powers in itertools.product([-4, -2, 0, 2, 4], repeat=4):
        energy = 5 + np.cumsum(powers)
        if energy.min() < 1 or energy.max() > 9:
            continue
        net = load[0] - pv[0] + np.array(powers)
        best = min(best, float((np.maximum(net, 0) * buy - np.maximum(-net, 0) * sell).sum()))
    assert plan.cost[0] == pytest.approx(best, abs=1e-7)


def test_mpc_heat_pump_plan_beats_every_schedule_on_a_fine_grid():
    hh = Households.create(["a"], [PASSIVE_CONSUMER], heat_pump=dict(
        power_kw=3.0, resistance_k_per_kw=4.0, capacitance_kwh_per_k=2.0, cop=3.0))
    dt, steps = 0.5, 3
    buy = np.array([0.1, 0.4, 0.2])
    series = HouseholdSeries.build(np.zeros((1, steps)), dt, outdoor_c=[2.0, 0.0, -1.0],
                                   start_hour=6.0)  # the comfort band starts at 07:00
    cfg = MPCConfig(horizon=steps, discomfort_cost=2.0)
    plan = MPC(hh, dt, cfg).plan(hh.initial_state(dt, indoor_c=17.0), series, buy, 0.0)
    hp = hh.heat_pump
    levels = np.linspace(0, 3.0, 61)
    grid = np.array(list(itertools.product(levels, repeat=steps)))  # [schedules, steps]
    temp = np.full(len(grid), 17.0)
    cost = np.zeros(len(grid))
    a = math.exp(-dt / 8.0)
    for t in range(steps):
        temp = a * temp + (1 - a) * (float(series.outdoor_c[t]) + 4.0 * 3.0 * grid[:, t])
        low, high = (float(x) for x in hp.band(series.hour[t] + dt))
        cost += dt * (buy[t] * grid[:, t] + 2.0 * (np.maximum(low - temp, 0)
                                                  + np.maximum(temp - high, 0)))
    brute = cost.min()
    # each grid point is within half a level of any schedule; the cost is Lipschitz in p
    lipschitz = dt * (buy.max() + 2.0 * (1 - a) * 4.0 * 3.0 * steps)
    assert plan.cost[0] <= brute + 1e-7
    assert brute - plan.cost[0] <= steps * lipschitz * (levels[1] / 2)
    # and the plan replayed through the device gives the temperatures the LP planned
    state, t_replay = hh.initial_state(dt, indoor_c=17.0), []
    for t in range(steps):
        sp = plan.setpoints(t)
        state = hh.step(state, sp, series.at(t), dt)
        t_replay.append(float(state.indoor_c[0]))
    assert np.allclose(t_replay, plan.indoor_c[0], atol=1e-6)


def test_mpc_charges_the_ev_in_the_cheapest_hours_before_departure():
    hh = Households.create(["a"], [PASSIVE_CONSUMER], ev=dict(
        capacity_kwh=40, charge_kw=7, eta_charge=0.9, target_soc=0.8))
    dt, steps = 1.0, 8
    home = np.array([[1, 1, 1, 1, 1, 1, 0, 0]])
    buy = np.array([0.30, 0.10, 0.25, 0.05, 0.20, 0.15, 0.3, 0.3])
    series = HouseholdSeries.build(np.zeros((1, steps)), dt, ev_at_home=home)
    plan = MPC(hh, dt, MPCConfig(horizon=steps)).plan(
        hh.initial_state(dt, ev_soc=0.3), series, buy, 0.0)
    # need 20 kWh stored = 22.2 kWh at the charger, 7 kWh per hour: fill the cheapest hours
    need = (32 - 12) / 0.9
    expected, left = 0.0, need
    for t in np.argsort(buy[:6]):
        take = min(7.0, left)
        expected, left = expected + take * buy[t], left - take
    assert plan.cost[0] == pytest.approx(expected, rel=1e-7)
    assert plan.ev_kw[0, 6:].tolist() == [0, 0]


def test_mpc_serves_flexible_demand_at_the_cheapest_step_in_its_window():
    hh = Households.create(["a"], [PASSIVE_CONSUMER],
                           flexible_load=dict(share=0.5, window_h=2.0))
    dt, steps = 1.0, 6
    load = np.array([[2.0, 1.0, 0.0, 3.0, 0.0, 0.0]])
    buy = np.array([0.3, 0.2, 0.4, 0.5, 0.1, 0.6])
    plan = MPC(hh, dt, MPCConfig(horizon=steps)).plan(
        hh.initial_state(dt), HouseholdSeries.build(load, dt), buy, 0.0)
    expected = sum(0.5 * load[0, t] * buy[t] + 0.5 * load[0, t] * buy[t: t + 3].min()
                   for t in range(steps))
    assert plan.cost[0] == pytest.approx(expected, rel=1e-7)


def test_mpc_generator_runs_where_marginal_cost_meets_the_price_and_pv_is_curtailed():
    hh = Households.create(["a", "b"], [PASSIVE_CONSUMER, HouseholdType.PASSIVE_PROSUMER],
                           generator=dict(max_kw=[3.0, 0.0], cost_linear=0.1,
                                          cost_quadratic=0.05))
    dt = 1.0
    load = np.array([[5.0, 5.0], [1.0, 1.0]])
    pv = np.array([[0.0, 0.0], [4.0, 4.0]])
    buy, sell = np.array([0.3, 0.2]), np.array([0.05, -0.1])
    plan = MPC(hh, dt, MPCConfig(horizon=2)).plan(
        hh.initial_state(dt), HouseholdSeries.build(load, dt, pv_kw=pv), buy, sell)
    # marginal cost 0.1 + 0.1 g equals the import price: g = 2 at 0.3, 1 at 0.2
    assert plan.generator_kw[0].tolist() == pytest.approx([2.0, 1.0], abs=1e-5)
    # exports pay at first and cost money later: curtail only then
    assert plan.pv_kw[1].tolist() == pytest.approx([4.0, 1.0], abs=1e-6)


def fleet(n: int, seed: int = 0) -> tuple[Households, HouseholdSeries, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    dt, steps = 0.5, 24
    hh = Households.create(
        range(n), draw_types(n, [1, 1, 1, 1], seed),
        battery=dict(capacity_kwh=8.0, power_kw=3.0, degradation_cost=0.01),
        ev=dict(capacity_kwh=rng.uniform(0, 50, n) * (rng.random(n) < 0.6), charge_kw=7.0,
                v2g=True),
        heat_pump=dict(power_kw=rng.uniform(0, 3, n) * (rng.random(n) < 0.5)),
        generator=dict(max_kw=rng.uniform(0, 2, n) * (rng.random(n) < 0.3)),
        flexible_load=dict(share=0.1, window_h=3.0))
    hours = np.arange(steps) * dt
    home = (rng.random((n, steps)) < 0.8).astype(float)
    series = HouseholdSeries.build(
        rng.uniform(0.2, 2, (n, steps)), dt,
        pv_kw=np.maximum(np.sin((hours - 6) / 12 * np.pi), 0) * 3, ev_at_home=home,
        ev_trip_kwh=(1 - home) * rng.uniform(0, 3, (n, steps)),
        outdoor_c=5 + 3 * np.sin(hours / 24 * 2 * np.pi))
    buy = 0.2 + 0.1 * np.sin(hours / 24 * 2 * np.pi + 1)
    return hh, series, buy, buy * 0.4


def test_mpc_blocks_and_solvers_agree_and_act_is_feasible():
    hh, series, buy, sell = fleet(10)
    state = hh.initial_state(series.dt_h)
    one = MPC(hh, series.dt_h, MPCConfig(horizon=12, households_per_problem=1))
    many = MPC(hh, series.dt_h, MPCConfig(horizon=12, households_per_problem=0))
    clarabel = MPC(hh, series.dt_h, MPCConfig(horizon=12, solver="CLARABEL"))
    a, b = one.plan(state, series, buy, sell), many.plan(state, series, buy, sell)
    c = clarabel.plan(state, series, buy, sell)
    assert len(one.blocks()) == 10 and len(many.blocks()) < 10
    assert np.allclose(a.cost, b.cost, atol=1e-6) and np.allclose(a.cost, c.cost, atol=1e-4)
    act = many.act(state, series, buy, sell)
    lo, hi = hh.limits(state, series.at(0), series.dt_h)
    for k in range(len(ACTIONS)):
        assert (act[k] >= lo[k] - 1e-9).all() and (act[k] <= hi[k] + 1e-9).all()
    # the plan is cheaper than the rule over the same horizon (it sees prices, the rule not)
    rule_cost, s = 0.0, state
    for t in range(12):
        inputs = series.at(t)
        sp = self_consumption_setpoints(hh, s, inputs, series.dt_h, buy[t], sell[t])
        rule_cost += float(hh.cost(sp, inputs, buy[t], sell[t], series.dt_h).sum())
        s = hh.step(s, sp, inputs, series.dt_h)
    assert b.cost.sum() <= rule_cost + 1e-6


def test_mpc_refuses_prices_that_pay_for_buying_to_sell():
    hh, series, buy, _ = fleet(2)
    with pytest.raises(MPCError, match="buy price .* below sell price"):
        MPC(hh, series.dt_h).plan(hh.initial_state(series.dt_h), series, buy, buy + 0.01)


# -- the self-consumption rule -----------------------------------------------------------

def test_self_consumption_fills_loads_then_battery_then_exports():
    hh = Households.create(
        "ab", [HouseholdType.ACTIVE_PROSUMER] * 2,
        battery=dict(capacity_kwh=10, power_kw=3, soc_min=0, soc_max=1),
        heat_pump=dict(power_kw=2.0), generator=dict(max_kw=[2.0, 2.0], cost_linear=[0.5, 0.1]))
    dt = 1.0
    series = HouseholdSeries.build([[1.0], [4.0]], dt, pv_kw=[[6.0], [0.0]], start_hour=12.0)
    inputs = series.at(0)
    state = hh.initial_state(dt, battery_soc=0.5, indoor_c=20.0)
    lo, hi = hh.limits(state, inputs, dt)
    sp = self_consumption_setpoints(hh, state, inputs, dt, buy_price=0.3, sell_price=0.05)
    # a: 5 kW surplus heats to the top of the band first, then the battery takes the rest
    assert sp.heat_pump_kw[0].item() == pytest.approx(min(hi.heat_pump_kw[0].item(), 5.0))
    assert sp.battery_kw[0].item() == pytest.approx(
        min(5.0 - sp.heat_pump_kw[0].item(), 3.0))
    assert sp.generator_kw[0].item() == 0.0 and sp.pv_kw[0].item() == 6.0
    # b: 4 kW deficit plus the heat it must have: battery 3 kW, then its cheap generator
    assert sp.battery_kw[1].item() == pytest.approx(-3.0)
    assert sp.heat_pump_kw[1].item() == pytest.approx(lo.heat_pump_kw[1].item())
    deficit = 4.0 + lo.heat_pump_kw[1].item() - 3.0
    assert sp.generator_kw[1].item() == pytest.approx(min(deficit, 2.0))
    # both generators cost more than importing at 0.05: neither runs
    cheap_grid = self_consumption_setpoints(hh, state, inputs, dt, buy_price=0.05)
    assert cheap_grid.generator_kw.abs().sum() == 0.0
    # negative export price: curtail what cannot be used
    cut = self_consumption_setpoints(hh, state, inputs, dt, sell_price=-0.1)
    assert hh.net_kw(cut, inputs)[0].item() == pytest.approx(0.0, abs=1e-9)


# -- the policy bank ---------------------------------------------------------------------------

def test_agent_k_depends_only_on_its_own_weights_and_observation():
    torch.manual_seed(0)
    bank = PolicyBank(5, len(FIELDS), len(ACTIONS), hidden=(16, 16), squash=SIGNED_ACTIONS)
    obs = torch.randn(3, 5, len(FIELDS), dtype=torch.float64)
    out = bank(obs)
    assert out.shape == (3, 5, len(ACTIONS))
    signed = torch.tensor(SIGNED_ACTIONS)
    assert (out[..., signed].abs() <= 1).all() and (out[..., ~signed] >= 0).all()
    assert (out[..., ~signed] <= 1).all()
    # perturb every other agent's observation and weights: agent 2 does not notice
    k = 2
    other = torch.arange(5) != k
    obs2 = obs.clone()
    obs2[:, other] += 5.0
    with torch.no_grad():
        for w in bank.weights:
            w[other] += 1.0
    out2 = bank(obs2)
    assert torch.equal(out2[:, k], out[:, k]) and not torch.allclose(out2[:, other], out[:, other])
    # gradients of agent k's output reach only agent k's parameters
    bank.zero_grad()
    bank(obs)[:, k].sum().backward()
    for p in [*bank.weights, *bank.biases]:
        assert p.grad[other].abs().sum() == 0 and p.grad[k].abs().sum() > 0


def test_agents_are_seeded_alone_and_their_slices_can_be_moved():
    small = PolicyBank(3, 4, 2, hidden=(8,), seed=7)
    large = PolicyBank(10, 4, 2, hidden=(8,), seed=7)
    for k in range(3):
        for name, value in small.agent_state(k).items():
            assert torch.equal(value, large.agent_state(k)[name])
    assert not torch.equal(large.agent_state(0)["weight.0"], large.agent_state(1)["weight.0"])
    other_seed = PolicyBank(3, 4, 2, hidden=(8,), seed=8)
    assert not torch.equal(other_seed.agent_state(0)["weight.0"], small.agent_state(0)["weight.0"])
    large.load_agent_state(9, small.agent_state(1))
    x = torch.randn(10, 4, dtype=torch.float64)
    assert torch.allclose(large(x)[9], small(x[[0, 9, 2]])[1])  # same policy, same input
    shard = large.select([9, 4])
    assert torch.equal(shard(x[[9, 4]]), large(x)[[9, 4]])


def test_independent_agents_learn_different_targets():
    """One Adam over the stacked bank trains each agent toward its own target."""
    torch.manual_seed(1)
    n = 6
    bank = PolicyBank(n, 3, 1, hidden=(16,), squash=True)
    target = torch.linspace(-0.8, 0.8, n, dtype=torch.float64)[None, :, None]
    obs = torch.randn(32, n, 3, dtype=torch.float64)
    opt = torch.optim.Adam(bank.parameters(), lr=0.02)
    for _ in range(300):
        opt.zero_grad()
        loss = (bank(obs) - target).square().mean()
        loss.backward()
        opt.step()
    assert torch.allclose(bank(obs).mean(0), target[0], atol=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_bank_runs_on_cuda():
    bank = PolicyBank(100, len(FIELDS), len(ACTIONS), squash=SIGNED_ACTIONS)
    x = torch.randn(100, len(FIELDS), dtype=torch.float64)
    expected = bank(x)
    bank.to("cuda")
    assert torch.allclose(bank(x.cuda()).cpu(), expected)


def test_rows_of_any_agents_in_any_order_give_what_forward_gives():
    """An RL learner's batch mixes agents: each row through its own agent's policy, exactly
    as the full layout computes it, and its gradient reaches only that agent."""
    bank = PolicyBank(7, 5, 3, hidden=(8, 8), squash=[True, False, True], seed=3)
    obs = torch.randn(4, 7, 5, dtype=torch.float64)  # [time, agents, obs]
    full = bank(obs)
    t = torch.tensor([0, 3, 1, 2, 0, 3])
    agent = torch.tensor([6, 0, 2, 2, 5, 6])
    np.testing.assert_allclose(bank.rows(obs[t, agent], agent).detach(),
                               full[t, agent].detach(), rtol=0, atol=1e-14)
    bank.rows(obs[t, agent], agent).sum().backward()
    touched = bank.weights[0].grad.abs().sum((1, 2)) > 0
    assert touched.tolist() == [k in {0, 2, 5, 6} for k in range(7)]
