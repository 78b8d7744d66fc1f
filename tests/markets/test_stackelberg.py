"""Stackelberg leader: candidate tariffs against a hand count, best-response iteration against
closed forms (and its non-convergence), and the bilevel MILP against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from agents.households import Households, HouseholdSeries, HouseholdType
from agents.households.bill import energy_bill
from agents.households.response import mpc_follower
from agents.policies import MPC, MPCConfig
from markets.stackelberg import (
    BatteryFollowers,
    Leader,
    StackelbergConfig,
    Tariff,
    TariffFamily,
    bilevel,
    iterate,
    lead,
)

# -- candidate tariffs ------------------------------------------------------------------------


def test_leader_against_price_takers_finds_the_participation_limit():
    """Passive followers draw the same whatever the tariff; each stays only while the
    leader's tariff costs it no more than the default flat tariff. The best markup is the
    largest any household still accepts, counted by hand."""
    n, steps, dt = 4, 6, 1.0
    rng = np.random.default_rng(3)
    load = rng.uniform(0.5, 3, (n, steps))
    wholesale = rng.uniform(0.05, 0.25, steps)
    flat = 0.30

    def follower(buy: np.ndarray, sell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return load, (load * buy).sum(1) * dt

    _, outside = follower(np.full(steps, flat), np.zeros(steps))
    markups = np.linspace(0, 0.3, 31)
    candidates = TariffFamily.markup(wholesale, markups, sell_discount=0.02).candidates()
    result = lead(Leader(np.arange(n), wholesale, dt, outside_cost=outside), candidates,
                  follower)
    # by hand: household h accepts markup m iff sum(load (w + m)) <= flat sum(load)
    best_profit, best = -np.inf, None
    for k, m in enumerate(markups):
        stay = (load * (wholesale + m)).sum(1) <= flat * load.sum(1) + 1e-9
        profit = m * load[stay].sum() * dt
        if profit > best_profit + 1e-12:
            best_profit, best = profit, k
    assert result.best == best and result.tariff is candidates[best]
    assert result.profit[best] == pytest.approx(best_profit)
    assert result.members[-1].sum() < n  # the steepest markup drives some away


def test_leader_with_optimising_followers():
    """MPC followers with batteries: the leader's pick is the best candidate given their true
    best responses to each tariff, its books kept with the platform's one bill formula."""
    n, steps, dt = 3, 12, 1.0
    hh = Households.create(range(n), [HouseholdType.ACTIVE_CONSUMER] * n,
                           battery=dict(capacity_kwh=8.0, power_kw=3.0))
    peak = (np.arange(steps) >= 6) & (np.arange(steps) < 9)
    series = HouseholdSeries.build(np.where(peak, 3.0, 1.0)[None].repeat(n, 0), dt)
    wholesale = np.full(steps, 0.10)
    state = hh.initial_state(dt, battery_soc=0.1)
    follow = mpc_follower(MPC(hh, dt, MPCConfig(horizon=steps, households_per_problem=0)),
                          state, series)
    outside = follow(np.full(steps, 0.35), np.full(steps, 0.0)).cost
    candidates = TariffFamily.markup(wholesale, [0.1, 0.2], sell_discount=0.1,
                                     peak_adders=[0.0, 0.15], peak_hours=peak).candidates()
    leader = Leader(np.arange(n), wholesale, dt, peak_price=1.0, outside_cost=outside)
    result = lead(leader, candidates, follow)

    def by_hand(c: Tariff, stay: np.ndarray) -> float:
        net = follow(c.buy, c.sell).net_kw[stay]
        position = net.sum(0)
        return (energy_bill(net * dt, c.buy, c.sell).sum() - (position * wholesale).sum() * dt
                - 1.0 * max(position.max(), 0.0))

    hand = [by_hand(c, result.members[k]) for k, c in enumerate(candidates)]
    assert result.profit.tolist() == pytest.approx(hand)
    assert result.best == int(np.argmax(hand))
    assert result.members.all()  # everyone is better off than at the flat 0.35
    # the peak adder moves the batteries' discharge into the peak
    assert result.responses[1].net_kw[:, peak].sum() < result.responses[0].net_kw[:, peak].sum()


# -- best-response iteration ------------------------------------------------------------------
# Linear-demand followers: household i draws q = beta_i (alpha_i - p) kW at price p and costs
# dt sum_t (p q - alpha_i q + q^2 / (2 beta_i)) (bill less utility). A monopolist's markup on
# wholesale w_t, profit dt sum_it m beta_i (alpha_i - w_t - m), peaks at
#     m* = sum_it beta_i (alpha_i - w_t) / (2 H sum_i beta_i),
# and falls short of it by dt H sum_i beta_i (m - m*)^2; a follower re-optimising after the
# price moved by dp saves dt sum_t beta_i dp^2 / 2.

ALPHA, BETA = np.array([0.6, 0.8]), np.array([2.0, 1.0])
WHOLESALE = np.array([0.10, 0.15, 0.20])
M_STAR = (BETA[:, None] * (ALPHA[:, None] - WHOLESALE)).sum() / (2 * 3 * BETA.sum())


def linear_demand(buy: np.ndarray, sell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = BETA[:, None] * (ALPHA[:, None] - buy)
    return q, (buy * q - ALPHA[:, None] * q + q**2 / (2 * BETA[:, None])).sum(1)


def monopoly() -> tuple[Leader, TariffFamily]:
    markups = np.linspace(0, 1.5 * M_STAR, 31)  # M_STAR is row 20; every price keeps q > 0
    return (Leader(np.arange(2), WHOLESALE, 1.0),
            TariffFamily.markup(WHOLESALE, markups, sell_discount=0.0))


def test_best_response_iteration_converges_to_the_monopoly_markup():
    leader, family = monopoly()
    cfg = StackelbergConfig(damping=0.5, tariff_tolerance=1e-7, net_tolerance=1e-7)
    out = iterate(leader, family, linear_demand, np.zeros(2), cfg)
    assert out.converged
    assert out.theta == pytest.approx([M_STAR, 0.0], abs=1e-6)
    assert out.gap == pytest.approx(0.0, abs=1e-12)
    previous = 0.0
    for r in out.rounds:  # halfway to m* each round, gaps as computed by hand
        m = M_STAR * (1 - 0.5**r.iteration)
        assert r.theta[0] == pytest.approx(m, rel=1e-9)
        assert r.leader_gain == pytest.approx(3 * BETA.sum() * (m - M_STAR) ** 2, abs=1e-12)
        assert r.follower_gain == pytest.approx(3 * BETA.max() * (m - previous) ** 2 / 2,
                                                abs=1e-12)
        assert r.tariff_change == pytest.approx(m - previous)
        previous = m
    assert len(out.rounds) < cfg.max_iterations
    # undamped, the leader jumps to m* at once and the second round confirms it
    assert len(iterate(leader, family, linear_demand, np.zeros(2)).rounds) == 2


def test_best_response_iteration_says_when_it_did_not_converge():
    leader, family = monopoly()
    short = iterate(leader, family, linear_demand, np.zeros(2),
                    StackelbergConfig(max_iterations=1))
    assert not short.converged and len(short.rounds) == 1
    # a leader that raises the price where the flexible load is, and a flexible load that
    # moves to the cheaper step: best responses cycle
    base, flexible, dt = 1.0, 2.0, 1.0

    def shifting(buy: np.ndarray, sell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first = buy[0] <= buy[1]
        net = np.array([[base + flexible * first, base + flexible * (not first)]])
        return net, (net * buy).sum(1) * dt

    family = TariffFamily.per_step(np.zeros(2), np.zeros(2), [0.1, 0.3])
    outside = np.array([0.25 * (2 * base + flexible) * dt])  # a flat 0.25 elsewhere
    out = iterate(Leader([0], np.zeros(2), dt, outside_cost=outside), family, shifting,
                  np.array([0.1, 0.3]), StackelbergConfig(max_iterations=6))
    assert not out.converged and len(out.rounds) == 6
    for r in out.rounds:
        expected = [0.3, 0.1] if r.iteration % 2 else [0.1, 0.3]
        assert r.theta.tolist() == pytest.approx(expected)
        # by hand: the follower saves 0.2 x 2 kWh by moving, the leader earns 0.2 x 2 more
        # by swapping the prices back
        assert r.leader_gain == pytest.approx(0.4) and r.follower_gain == pytest.approx(0.4)
        assert r.net_change == pytest.approx(flexible)
    assert out.gap == pytest.approx(0.8)


def test_price_taking_leader_climbs_to_the_participation_limit():
    """A leader holding the followers' draw fixed (no anticipation) charges the most its
    member accepts for its current draw. With one linear-demand follower whose outside
    option is the price p0, x = alpha - p follows Newton's square-root recursion towards
    alpha - p0, each step floored to the menu's grid: it climbs to within a grid step of p0
    and stops where the next step up would drive the member away."""
    alpha, beta, p0, dt, grid = 0.6, 2.0, 0.35, 1.0, 0.01
    w = np.array([0.1])

    def follower(buy: np.ndarray, sell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = beta * (alpha - buy)
        return q[None], np.array([(buy * q - alpha * q + q**2 / (2 * beta)).sum()])

    _, outside = follower(np.array([p0]), np.zeros(1))
    family = TariffFamily.markup(w, np.arange(51) * grid, sell_discount=0.0)
    out = iterate(Leader([0], w, dt, outside_cost=outside), family, follower, np.zeros(2),
                  StackelbergConfig(anticipate=False))
    hand, m = [], 0.0
    while not hand or hand[-1] != m or len(hand) < 2:
        if hand:
            m = hand[-1]
        x = alpha - w[0] - m
        hand.append(np.floor((alpha - w[0] - (x + (alpha - p0) ** 2 / x) / 2) / grid) * grid)
    assert out.converged and out.members.all()
    assert [r.theta[0] for r in out.rounds] == pytest.approx(hand)
    assert p0 - w[0] - grid < out.theta[0] <= p0 - w[0]
    assert out.gap == pytest.approx(0.0, abs=1e-12)


# -- bilevel program ----------------------------------------------------------------------------


@pytest.mark.parametrize("menu", ["markup and peak adder", "per step"])
def test_bilevel_optimum_equals_brute_force(menu):
    """The MILP's profit is the best over every tariff of the menu, each answered by the
    households' own MPC (an independent statement of the followers' LP), keeping only tariffs
    every member accepts against a flat 0.28."""
    n, steps, dt = 3, 5, 1.0
    load = np.array([[1.0, 0.8, 1.2, 2.5, 2.0], [0.6, 1.0, 0.9, 3.0, 2.2],
                     [1.5, 1.1, 0.7, 1.8, 2.8]])
    hh = Households.create(range(n), [HouseholdType.ACTIVE_CONSUMER] * n,
                           battery=dict(capacity_kwh=[4.0, 6.0, 8.0], power_kw=[1.5, 2.0, 2.5],
                                        degradation_cost=0.02))
    series = HouseholdSeries.build(load, dt)
    wholesale = np.array([0.08, 0.06, 0.07, 0.20, 0.16])
    peak = np.arange(steps) >= 3
    if menu == "per step":
        levels = np.array([0.04, 0.14, 0.24]) + np.linspace(0, 0.004, steps)[:, None]
        family = TariffFamily.per_step(wholesale, wholesale - 0.03, levels)
    else:
        family = TariffFamily.markup(wholesale, np.linspace(0, 0.3, 21), 0.03,
                                     np.linspace(0, 0.2, 11), peak_hours=peak)
    state = hh.initial_state(dt, battery_soc=0.3)
    mpc = MPC(hh, dt, MPCConfig(horizon=steps, households_per_problem=0))
    outside = mpc.plan(state, series, 0.28, wholesale - 0.03).cost
    leader = Leader(np.arange(n), wholesale, dt, peak_price=0.2, outside_cost=outside)
    e_min, e_max = (x.numpy() for x in hh.battery.energy_bounds())
    b = hh.battery
    followers = BatteryFollowers(load, state.battery_kwh.numpy(), e_min, e_max,
                                 b.power_kw.numpy(), b.eta_charge.numpy(),
                                 b.eta_discharge.numpy(), b.degradation_cost.numpy())
    exact = bilevel(leader, family, followers)

    best, refused = -np.inf, 0
    for theta in family.menu():
        t = family.tariff(theta)
        plan = mpc.plan(state, series, t.buy, t.sell)
        if (plan.cost > outside + 1e-9).any():
            refused += 1
            continue
        position = plan.net_kw.sum(0)
        profit = (energy_bill(plan.net_kw * dt, t.buy, t.sell).sum()
                  - (position * wholesale).sum() * dt - 0.2 * max(position.max(), 0.0))
        if profit > best:
            best, best_theta, best_plan = profit, theta, plan
    assert 0 < refused < len(family.menu())  # participation binds somewhere
    assert exact.profit == pytest.approx(best, abs=1e-6)
    assert exact.theta == pytest.approx(best_theta)
    assert exact.cost == pytest.approx(best_plan.cost, abs=1e-6)  # strong duality holds
    assert exact.net_kw == pytest.approx(best_plan.net_kw, abs=1e-6)
    assert leader.profit(exact.tariff, exact.net_kw, np.ones(n, bool)) == pytest.approx(
        exact.profit, abs=1e-6)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="damping"):
        StackelbergConfig(damping=0.0)
    family = TariffFamily.per_step(np.zeros(30), np.zeros(30), [0.0, 0.1])
    with pytest.raises(ValueError, match="menu has 1073741824 rows"):
        iterate(Leader([0], np.zeros(30), 1.0), family, linear_demand, np.zeros(30))
    with pytest.raises(ValueError, match="weights"):
        TariffFamily(np.zeros(3), np.zeros(2), np.zeros((1, 3)), np.zeros((1, 3)), ([0.1],))
    followers = BatteryFollowers(np.ones((1, 2)), 1.0, 0.0, 2.0, 1.0)
    above = TariffFamily.per_step(np.zeros(2), np.full(2, 0.1), [0.0, 0.2])
    with pytest.raises(ValueError, match="sell price above the buy price at step 0"):
        bilevel(Leader([0], np.zeros(2), 1.0), above, followers)
    with pytest.raises(ValueError, match="battery follower 0"):
        BatteryFollowers(np.ones((1, 2)), 3.0, 0.0, 2.0, 1.0)
