"""A household's order at its own marginal value, and its reserve covering what the market
did not fill: hand-solved cases, the rule without a market, and properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.households import Households, HouseholdSeries, Setpoints
from agents.households.orders import Reserve, cover, marginal_values, order
from agents.policies.rule_based import self_consumption_reserve, self_consumption_setpoints

BUY, SELL, DT = 0.30, 0.08, 1.0


def _homes(soc: float = 0.5):
    """Two homes with a 10 kWh, 5 kW battery (usable 0 to 10 kWh, lossless): "sunny" with
    6 kW of PV on a 1 kW load, "dark" with no PV on a 3 kW load."""
    hh = Households.create(
        ["sunny", "dark"], battery=dict(capacity_kwh=10.0, power_kw=5.0, eta_charge=1.0,
                                        eta_discharge=1.0, soc_min=0.0, soc_max=1.0),
        pv=dict(inverter_kw=[np.inf, 0.0]))
    series = HouseholdSeries.build([[1.0], [3.0]], DT, pv_kw=[[6.0], [0.0]], start_hour=12.0)
    return hh, hh.initial_state(DT, battery_soc=soc), series.at(0)


def _rule(hh, state, inputs):
    buy, sell = torch.full((2,), BUY, dtype=torch.float64), torch.full((2,), SELL,
                                                                        dtype=torch.float64)
    committed, reserve = self_consumption_reserve(hh, state, inputs, DT, buy, sell)
    return committed, reserve, buy, sell


def test_hand_solved_orders_of_a_seller_and_a_buyer_with_half_full_batteries():
    hh, state, inputs = _homes(soc=0.5)
    committed, reserve, buy, sell = _rule(hh, state, inputs)
    q, limit = order(hh, state, inputs, committed, reserve, buy, sell, DT)
    # the rule commits the battery idle: sunny offers its 5 kWh surplus, dark bids for 3
    assert q.tolist() == pytest.approx([-5.0, 3.0])
    # a half-full battery values a kWh midway between export and import price; sunny's
    # battery could take all 5 kWh (5 kW for an hour), dark's could give all 3
    mid = SELL + (BUY - SELL) * 0.5
    assert limit.tolist() == pytest.approx([mid, mid])


def test_a_store_that_cannot_take_it_all_prices_the_rest_at_the_tariff():
    hh, state, inputs = _homes(soc=0.9)  # 1 kWh of room, 9 kWh to give
    committed, reserve, buy, sell = _rule(hh, state, inputs)
    _, limit = order(hh, state, inputs, committed, reserve, buy, sell, DT)
    value = SELL + (BUY - SELL) * (1 - 0.9)
    # sunny: 1 kWh into the battery at its value, 4 kWh only exportable at SELL
    assert limit[0].item() == pytest.approx((1 * value + 4 * SELL) / 5)
    # dark: its battery covers the 3 kWh, valued near the export price when nearly full
    assert limit[1].item() == pytest.approx(value)


def test_without_a_reserve_an_order_is_firm_at_the_tariff():
    hh, state, inputs = _homes(soc=0.5)
    committed, _, buy, sell = _rule(hh, state, inputs)
    q, limit = order(hh, state, inputs, committed, Reserve.none(committed), buy, sell, DT)
    assert limit.tolist() == pytest.approx([SELL, BUY])
    # and nothing covers an unfilled firm order: the grid takes it all
    after = cover(committed, Reserve.none(committed), q, DT)
    assert all(torch.equal(a, b) for a, b in zip(after, committed))


def test_the_reserve_covers_exactly_what_was_not_filled():
    hh, state, inputs = _homes(soc=0.5)
    committed, reserve, *_ = _rule(hh, state, inputs)
    q = hh.net_kw(committed, inputs) * DT
    filled = torch.tensor([-2.0, 1.0], dtype=torch.float64)  # 2 of 5 sold, 1 of 3 bought
    after = cover(committed, reserve, q - filled, DT)
    # sunny charges the 3 kWh it did not sell, dark discharges the 2 it did not buy
    assert after.battery_kw.tolist() == pytest.approx([3.0, -2.0])
    # so neither draws anything from the grid beyond its trade
    np.testing.assert_allclose((hh.net_kw(after, inputs) * DT - filled).numpy(), 0.0,
                               atol=1e-12)
    # a fully filled order leaves the battery idle
    full = cover(committed, reserve, q - q, DT)
    assert full.battery_kw.tolist() == [0.0, 0.0]


def test_values_follow_the_state_of_each_store():
    hh, _, inputs = _homes()
    sp = Setpoints(*(torch.zeros(2, dtype=torch.float64) for _ in range(6)))
    buy, sell = torch.tensor([BUY, BUY]), torch.tensor([SELL, SELL])
    fuller = [marginal_values(hh, hh.initial_state(DT, battery_soc=soc), inputs, sp, buy, sell,
                              DT).battery_kw[0].item() for soc in (0.0, 0.3, 0.7, 1.0)]
    assert fuller == pytest.approx([BUY, SELL + 0.7 * (BUY - SELL), SELL + 0.3 * (BUY - SELL),
                                    SELL])


def _rule_step_by_step(hh, state, x, dt, buy, sell) -> Setpoints:
    """The self-consumption rule written out as its docstring reads, one device after the
    other with a running surplus: the reference for the reserve."""
    lo, hi = hh.limits(state, x, dt)
    ev = torch.clamp(lo.ev_kw, min=0.0)
    heat, flex, gen, pv = lo.heat_pump_kw, lo.flexible_kw, lo.generator_kw, hi.pv_kw
    surplus = pv + gen - hh.flexible_load.inflexible_kw(x.load_kw) - heat - flex - ev
    take = torch.minimum(torch.relu(surplus), hi.flexible_kw - flex)
    flex, surplus = flex + take, surplus - take
    take = torch.minimum(torch.relu(surplus), hi.heat_pump_kw - heat)
    heat, surplus = heat + take, surplus - take
    take = torch.minimum(torch.relu(surplus), hi.ev_kw - ev)
    ev, surplus = ev + take, surplus - take
    battery = torch.clamp(surplus, lo.battery_kw, hi.battery_kw)
    surplus = surplus - battery
    g = hh.generator
    economic = torch.where(g.cost_linear < buy, g.max_kw, 0.0).clamp(lo.generator_kw,
                                                                      hi.generator_kw)
    more = torch.minimum(torch.relu(-surplus), economic - gen)
    gen, surplus = gen + more, surplus + more
    cut = torch.minimum(torch.relu(surplus), pv - lo.pv_kw) * (sell < 0)
    return Setpoints(battery, ev, heat, flex, pv - cut, gen)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_with_nothing_filled_the_reserve_is_the_self_consumption_rule(seed):
    """Order then cover with no trade gives the rule written out step by step, for homes
    with every device; orders lie within each household's own prices; the reserve stays
    within the devices' limits."""
    rng = np.random.default_rng(seed)
    n = 12
    hh = Households.create(
        range(n),
        battery=dict(capacity_kwh=rng.uniform(0, 10, n) * (rng.random(n) < 0.7),
                     power_kw=rng.uniform(1, 5, n)),
        pv=dict(inverter_kw=np.where(rng.random(n) < 0.6, np.inf, 0.0)),
        ev=dict(capacity_kwh=np.where(rng.random(n) < 0.5, 50.0, 0.0), charge_kw=7.0,
                v2g=rng.random(n) < 0.5, target_soc=0.8),
        heat_pump=dict(power_kw=np.where(rng.random(n) < 0.5, 3.0, 0.0)),
        flexible_load=dict(share=np.where(rng.random(n) < 0.5, 0.3, 0.0), window_h=2.0),
        generator=dict(max_kw=np.where(rng.random(n) < 0.3, 3.0, 0.0),
                       cost_linear=rng.uniform(0.1, 0.5, n)))
    dt = 0.25
    series = HouseholdSeries.build(
        rng.gamma(2, 0.6, (n, 8)), dt, pv_kw=rng.uniform(0, 6, (n, 8)),
        ev_at_home=(rng.random((n, 8)) < 0.7).astype(float), outdoor_c=rng.uniform(-5, 15),
        start_hour=rng.uniform(0, 24))
    state = hh.initial_state(dt, battery_soc=rng.uniform(0.1, 0.9), ev_soc=0.5,
                             indoor_c=rng.uniform(16, 22))
    for t in range(8):
        x = series.at(t)
        buy = torch.as_tensor(rng.uniform(0.1, 0.5, n))
        sell = torch.as_tensor(rng.uniform(-0.05, 0.1, n))
        committed, reserve = self_consumption_reserve(hh, state, x, dt, buy, sell)
        q, limit = order(hh, state, x, committed, reserve, buy, sell, dt)
        assert (limit >= sell - 1e-12).all() and (limit <= buy + 1e-12).all()
        rule = _rule_step_by_step(hh, state, x, dt, buy, sell)
        after = cover(committed, reserve, q, dt)
        for a, b in zip(after, rule):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        for a, b in zip(self_consumption_setpoints(hh, state, x, dt, buy, sell), rule):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        lo, hi = hh.limits(state, x, dt)
        for k in range(6):  # a reserve never leaves the device's limits
            assert (reserve.lo[k] >= lo[k] - 1e-12).all()
            assert (reserve.hi[k] <= hi[k] + 1e-12).all()
        state = hh.step(state, rule, x, dt)
