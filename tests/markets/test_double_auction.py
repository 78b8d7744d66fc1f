"""The double auction against a brute-force reference and hand-solved books, with property
tests over hypothesis-generated books: budget balance, individual rationality for truthful
bids, monotonicity, deterministic ties, and rejection of bad orders."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from markets.double_auction import DoubleAuction, clear
from markets.mechanism import REJECTIONS, Orders, Upstream


def _reference_volume(q, p):
    """Q* = max over candidate prices c of min(demand at c, supply at c)."""
    buy, sell = q > 0, q < 0
    best = 0.0
    for c in np.unique(p):
        demand = q[buy & (p >= c)].sum()
        supply = -q[sell & (p <= c)].sum()
        best = max(best, min(demand, supply))
    return best


orders = st.integers(1, 40).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 3), min_size=n, max_size=n),
    st.lists(st.floats(-5, 5).filter(lambda x: abs(x) > 1e-3), min_size=n, max_size=n),
    st.lists(st.sampled_from([0.05, 0.1, 0.15, 0.2, 0.25, 0.3]), min_size=n, max_size=n),
))


def _book(market, quantity, limit, n_markets=4):
    return Orders(np.arange(len(market)), market, quantity, limit, n_markets)


@settings(max_examples=300, deadline=None)
@given(orders, st.sampled_from([0.0, 0.3, 0.5, 1.0]), st.sampled_from(["uniform", "pay_as_bid"]))
def test_clearing_is_efficient_rational_and_balances(case, k, pricing):
    market, quantity, limit = (np.array(x) for x in case)
    result = DoubleAuction(pricing, k).clear(_book(market, quantity, limit))
    f, paid, price = result.filled_kwh, result.payment, result.price
    for m in range(4):
        here = market == m
        q, p = quantity[here], limit[here]
        assert np.isclose(result.volume_kwh[m], _reference_volume(q, p), atol=1e-9)
        bought, sold = f[here & (quantity > 0)].sum(), -f[here & (quantity < 0)].sum()
        assert np.isclose(bought, result.volume_kwh[m], atol=1e-9)
        assert np.isclose(sold, result.volume_kwh[m], atol=1e-9)
        money = paid[here].sum()
        if pricing == "uniform":  # budget balance: buyers pay exactly what sellers receive
            assert abs(money) <= 1e-9
        else:  # the operator keeps a spread, never a loss
            assert money >= -1e-9
        if result.volume_kwh[m] == 0:
            assert np.isnan(result.market_price[m]) and np.allclose(f[here], 0)
        # unmatched volume goes up a layer: what was asked less what was filled
        assert np.isclose(result.unmatched_demand_kwh[m], q[q > 0].sum() - bought)
        assert np.isclose(result.unmatched_supply_kwh[m], -q[q < 0].sum() - sold)
    # individually rational for truthful bids: nobody trades beyond their limit
    assert (limit[f > 1e-12] >= price[f > 1e-12] - 1e-12).all()
    assert (limit[f < -1e-12] <= price[f < -1e-12] + 1e-12).all()
    np.testing.assert_allclose(paid, f * price)
    # fills stay within orders and keep their sign
    assert (np.sign(f) * np.sign(quantity) >= 0).all()
    assert (np.abs(f) <= np.abs(quantity) + 1e-12).all()
    # deterministic ties: equal prices on one side of a market are rationed pro rata
    for m in range(4):
        for side in (quantity > 0, quantity < 0):
            for level in np.unique(limit[side & (market == m)]):
                same = side & (market == m) & (limit == level)
                ratio = f[same] / quantity[same]
                assert np.allclose(ratio, ratio[0], atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(orders, st.integers(0, 39), st.floats(0.01, 0.2))
def test_a_higher_bid_never_gets_less(case, who, raise_by):
    """Monotonicity: a buyer who raises its limit (a seller who lowers its ask) is filled at
    least as much, and the arrival order of the orders does not matter."""
    market, quantity, limit = (np.array(x) for x in case)
    who = who % len(market)
    auction = DoubleAuction()
    before = auction.clear(_book(market, quantity, limit)).filled_kwh[who]
    better = limit.copy()
    better[who] += raise_by if quantity[who] > 0 else -raise_by
    after = auction.clear(_book(market, quantity, better)).filled_kwh[who]
    assert abs(after) >= abs(before) - 1e-9
    shuffle = np.random.default_rng(who).permutation(len(market))
    again = auction.clear(_book(market[shuffle], quantity[shuffle], limit[shuffle]))
    np.testing.assert_allclose(again.filled_kwh,
                               auction.clear(_book(market, quantity, limit)).filled_kwh[shuffle],
                               atol=1e-12)


def test_textbook_example():
    # buyers 3 kWh @0.30, 2 @0.20; sellers 2 @0.10, 4 @0.25.
    # Q*: at 0.25 demand 3, supply 6 -> 3; at 0.30 demand 3, supply 6 -> 3. Marginal buyer
    # @0.30 (covers unit 3), marginal seller @0.25 (covers unit 3).
    book = Orders([0, 1, 2, 3], [0, 0, 0, 0], [3, 2, -2, -4], [0.30, 0.20, 0.10, 0.25], 1)
    mid = DoubleAuction(k=0.5).clear(book)
    assert mid.volume_kwh[0] == 3.0 and mid.market_price[0] == 0.275
    assert mid.filled_kwh.tolist() == [3.0, 0.0, -2.0, -1.0]
    # k = 1: the buyers' price; k = 0: the sellers'
    assert DoubleAuction(k=1.0).clear(book).market_price[0] == 0.30
    assert DoubleAuction(k=0.0).clear(book).market_price[0] == 0.25
    # pay as bid: the buyer pays 0.30 x 3 = 0.90; sellers get 0.10 x 2 + 0.25 x 1 = 0.45
    pab = DoubleAuction("pay_as_bid").clear(book)
    np.testing.assert_allclose(pab.payment, [0.90, 0.0, -0.20, -0.25])
    assert pab.operator_revenue == pytest.approx(0.45)
    # left for the layer above: 2 kWh of demand (the 0.20 buyer), 3 of supply
    assert mid.unmatched_demand_kwh[0] == 2.0 and mid.unmatched_supply_kwh[0] == 3.0


def test_no_sellers_or_no_buyers_clears_nothing():
    result = DoubleAuction().clear(Orders([0, 1], [0, 1], [2.0, 1.0], [0.3, 0.3], 2))
    assert result.volume_kwh.tolist() == [0.0, 0.0] and np.isnan(result.market_price).all()
    assert clear([0, 1], [2.0, 1.0], [0.3, 0.3], n_markets=2).volume.tolist() == [0.0, 0.0]


def test_bad_orders_are_rejected_with_a_reason_and_the_rest_clears():
    home = np.array([0, 0, 0, 0, 0, 0, 1])  # participant 6 belongs to market 1
    book = Orders([0, 1, 2, 3, 4, 6, 9], [0, 0, 0, 0, 0, 0, 0],
                  [3.0, np.nan, -2.0, 1.0, -1.0, 1.0, 1.0],
                  [0.30, 0.30, 0.10, np.inf, 9.0, 0.3, 0.3], 2)
    result = DoubleAuction(price_caps=(-1.0, 5.0)).clear(book, Upstream.flat(0.3, 0.05, 2),
                                                         home_market=home)
    reasons = [REJECTIONS[c] for c in result.rejected]
    assert reasons == ["", "quantity is not a finite number", "",
                       "limit price is not a finite number",
                       "limit price outside the market's price caps",
                       "order into a market the participant does not belong to",
                       "unknown participant"]
    # the rest clears as if the rejected orders were not there
    clean = DoubleAuction().clear(Orders([0, 2], [0, 0], [3.0, -2.0], [0.3, 0.1], 2))
    assert result.filled_kwh[[0, 2]].tolist() == clean.filled_kwh.tolist() == [2.0, -2.0]
    assert (result.filled_kwh[result.rejected > 0] == 0).all()
    assert result.demand_kwh[0] == 3.0  # only accepted orders count


def test_thousands_of_markets_clear_as_each_would_alone():
    """One running sum serves every market, so rounding grows with the whole book: each
    of 40,000 markets must still clear exactly as it does on its own."""
    rng = np.random.default_rng(5)
    n_markets, per = 40_000, 10
    market = np.repeat(np.arange(n_markets), per)
    # tenths of a kWh: a market's demand and supply often tie exactly, where rounding
    # decides which order is marginal
    quantity = np.round(rng.uniform(0.1, 3.0, len(market)), 1) * np.where(
        rng.random(len(market)) < 0.5, 1, -1)
    limit = np.round(rng.uniform(0.05, 0.30, len(market)), 2)
    together = clear(market, quantity, limit, n_markets)
    for m in rng.choice(n_markets, 2000, replace=False):
        here = market == m
        alone = clear(np.zeros(per, int), quantity[here], limit[here], 1)
        np.testing.assert_allclose(together.filled[here], alone.filled, atol=1e-9)
        assert together.buyer_limit[m] == alone.buyer_limit[0] or (
            np.isnan(together.buyer_limit[m]) and np.isnan(alone.buyer_limit[0]))
        assert together.seller_limit[m] == alone.seller_limit[0] or (
            np.isnan(together.seller_limit[m]) and np.isnan(alone.seller_limit[0]))
