"""MAHTM's pool market: matching and pricing properties, and the three layers against a
3-household case solved by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosim.actors.retail import Distributor
from cosim.messages import MeterBatch
from markets.mahtm import PoolMarket, grid_prices, imbalance_price, pro_rata
from markets.mechanism import Orders, Upstream


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30).flatmap(lambda n: st.tuples(
    st.lists(st.floats(-5, 5), min_size=n, max_size=n),
    st.lists(st.integers(0, 2), min_size=n, max_size=n))))
def test_pro_rata_matching_conserves_energy(case):
    quantity, market = (np.array(x) for x in case)
    filled, matched, demand, supply = pro_rata(quantity, market, 3)
    for m in range(3):
        here = market == m
        assert np.isclose(filled[here].sum(), 0.0, atol=1e-9)  # bought = sold
        assert np.isclose(filled[here & (quantity > 0)].sum(), matched[m])
        assert np.isclose(matched[m], min(demand[m], supply[m]))
    assert (np.sign(filled) * np.sign(quantity) >= 0).all()
    assert (np.abs(filled) <= np.abs(quantity) + 1e-12).all()


def test_imbalance_price_moves_with_scarcity():
    low, high = 0.05, 0.30
    assert imbalance_price(low, high, 0.0, 0.0) == pytest.approx(0.175)  # nothing: midpoint
    assert imbalance_price(low, high, 0.0, 2.0) == pytest.approx(high)  # all demand
    assert imbalance_price(low, high, 2.0, 0.0) == pytest.approx(low)  # all supply
    assert imbalance_price(low, high, 1.0, 3.0) == pytest.approx(0.05 + 0.25 * 0.75)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=20),
       st.floats(0.1, 0.5), st.floats(0.0, 0.1))
def test_prices_stay_within_upstream_and_money_balances(net, buy, sell):
    n = len(net)
    market = np.arange(n) % 2
    pool = PoolMarket(fee=0.01)
    result = pool.clear(Orders(np.arange(n), market, net, np.zeros(n), 2),
                        Upstream.flat(buy, sell, 2))
    traded = result.filled_kwh != 0
    assert ((result.price[traded] >= sell - 1e-12) & (result.price[traded] <= buy + 1e-12)).all()
    # the operator keeps at most the fee on each matched kWh, never less than nothing
    revenue = np.bincount(market, result.payment, 2)
    assert (revenue >= -1e-12).all() and (revenue <= 0.01 * result.volume_kwh + 1e-12).all()


def test_price_rises_with_deficit_and_moves_gradually():
    up = Upstream.flat(0.30, 0.05, 2)
    orders = Orders(np.arange(4), [0, 0, 1, 1], [2.0, -1.0, 1.0, -2.0], np.zeros(4), 2)
    fast = PoolMarket(fee=0.0).clear(orders, up)
    assert fast.market_price[0] > fast.market_price[1]  # short microgrid pays more
    slow = PoolMarket(fee=0.0, gain=0.5, mid=np.full(2, 0.175))
    half = slow.clear(orders, up).market_price
    np.testing.assert_allclose(half, 0.175 + 0.5 * (fast.market_price - 0.175))
    with pytest.raises(ValueError, match="gain"):
        PoolMarket(gain=0)


def test_three_layers_against_a_case_solved_by_hand():
    """Microgrid 0: household 0 needs 2 kWh, household 1 has 1 spare, household 2 needs 1.
    Microgrid 1: household 3 has 1.5 spare. Grid: 0.20 + 0.1/kg x 0.5 kg/kWh = 0.25 to
    import, 0.05 feed-in; fees 0.01.

    Layer 2, microgrid 0: D = 3, O = 1, mid = 0.05 + 0.25 x 3/4 = 0.2375, buy 0.2425, sell
    0.2325; 1 kWh matched: household 0 gets 2/3, household 2 1/3. Residuals: 4/3 and 2/3
    kWh of imports; microgrid 1 exports 1.5 (nothing to match locally).
    Layer 3: D = 2, O = 1.5, mid = 0.05 + 0.20 x 2/3.5, buy = mid + 0.005, sell = mid -
    0.005; microgrid 0 gets 1.5 of its 2 kWh from microgrid 1, the rest (a quarter) from
    the grid: its import price is 0.75 buy + 0.25 x 0.25."""
    up = Upstream.flat(*grid_prices(0.20, 0.5, 0.1, 0.05), 2)
    assert up.buy[0] == pytest.approx(0.25) and up.sell[0] == 0.05
    orders = Orders(np.arange(4), [0, 0, 0, 1], [2.0, -1.0, 1.0, -1.5], np.zeros(4), 2)
    local = PoolMarket(fee=0.01).clear(orders, Upstream.flat(0.30, 0.05, 2))
    np.testing.assert_allclose(local.filled_kwh, [2 / 3, -1.0, 1 / 3, 0.0])
    np.testing.assert_allclose(local.payment, [2 / 3 * 0.2425, -0.2325, 1 / 3 * 0.2425, 0.0])
    assert local.operator_revenue == pytest.approx(0.01)
    np.testing.assert_allclose(local.unmatched_demand_kwh, [2.0, 0.0])
    np.testing.assert_allclose(local.unmatched_supply_kwh, [0.0, 1.5])

    # layer 3 inside the distributor actor, from the households' metered residuals
    residual = orders.quantity_kwh - local.filled_kwh
    hours = np.zeros(1)
    distributor = Distributor(
        "distributor", 0, n_markets=2, customers=np.ones(4, bool), dt_s=3600,
        import_price=0.3, export_price=0.05, peak_import_price=None, peak_hours=(17, 21),
        hours=hours, forecast_steps=1, mahtm=dict(fee=0.01, gain=1.0, carbon_price=0.1),
        market=np.array([0, 0, 0, 1]), wholesale=np.array([0.20]), carbon=np.array([0.5]))
    (signal,) = distributor.signal(0, [])
    assert signal.buy_price[0] == pytest.approx(0.25) and signal.sell_price[0] == 0.05
    (layer3,) = distributor.upstream(0, [MeterBatch(0, "shard", household=np.arange(4),
                                                    grid_kwh=residual)])
    mid = 0.05 + 0.20 * 2 / 3.5
    assert layer3.import_price[0] == pytest.approx(0.75 * (mid + 0.005) + 0.25 * 0.25)
    assert layer3.import_grid_share[0] == pytest.approx(0.25)
    assert layer3.export_price[1] == pytest.approx(mid - 0.005)  # all sold to microgrid 0
    assert layer3.export_grid_share[1] == pytest.approx(0.0)
    # money: what microgrid 0 pays upstream = microgrid 1's receipts + the distributor's
    # fee on 1.5 kWh + the grid's 0.5 kWh at 0.25
    paid = 2.0 * layer3.import_price[0] - 1.5 * layer3.export_price[1]
    assert paid == pytest.approx(0.01 * 1.5 + 0.5 * 0.25)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.06, 0.8), st.floats(0.0, 0.05)), min_size=2,
                max_size=6), st.floats(0.05, 0.9), st.integers(0, 1000))
def test_a_smoothed_price_stays_within_moving_upstream_prices(upstream, gain, seed):
    """With gain < 1 the mid price lags; when the upstream prices move it must still stay
    between them, or the operator would pay sellers more than buyers pay."""
    pool = PoolMarket(fee=0.01, gain=gain)
    rng = np.random.default_rng(seed)
    for buy, sell in upstream:
        q = rng.uniform(-3, 3, 8)
        result = pool.clear(Orders(np.arange(8), np.zeros(8, int), q, np.zeros(8), 1),
                            Upstream.flat(buy, sell, 1))
        traded = result.filled_kwh != 0
        assert (result.price[traded] <= buy + 1e-12).all()
        assert (result.price[traded] >= sell - 1e-12).all()
        assert result.operator_revenue >= -1e-12


def test_an_empty_order_into_a_market_that_does_not_exist_is_harmless():
    orders = Orders([0, 1, 2], [0, -1, 7], [1.0, 0.0, 0.0], [0.3, 0.3, 0.3], 2)
    result = PoolMarket().clear(orders, Upstream.flat(0.3, 0.05, 2))
    assert result.rejected.tolist() == [0, 0, 0] and result.volume_kwh.tolist() == [0, 0]


def test_the_distributors_lagging_pool_price_survives_a_checkpoint():
    def distributor():
        return Distributor(
            "distributor", 0, n_markets=2, customers=np.ones(4, bool), dt_s=3600,
            import_price=0.3, export_price=0.05, peak_import_price=None, peak_hours=(17, 21),
            hours=np.zeros(3), forecast_steps=1,
            mahtm=dict(fee=0.01, gain=0.3, carbon_price=0.1), market=np.array([0, 0, 1, 1]),
            wholesale=np.array([0.2, 0.5, 0.3]), carbon=np.array([0.5, 0.2, 0.4]))

    def step(d, t, grid_kwh):
        d.signal(t, [])
        (prices,) = d.upstream(t, [MeterBatch(t, "s", household=np.arange(4),
                                              grid_kwh=np.asarray(grid_kwh))])
        return prices.import_price

    books = [[1.0, 0.5, -0.4, -0.2], [0.3, 0.9, -1.0, 0.0], [1.2, 0.1, -0.3, -0.3]]
    straight = distributor()
    expected = [step(straight, t, b) for t, b in enumerate(books)]
    first = distributor()
    step(first, 0, books[0])
    resumed = distributor()
    resumed.load_state_dict(first.state_dict())
    np.testing.assert_array_equal(step(resumed, 1, books[1]), expected[1])
    np.testing.assert_array_equal(step(resumed, 2, books[2]), expected[2])
