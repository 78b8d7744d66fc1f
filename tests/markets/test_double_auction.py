"""The uniform-price double auction against a brute-force reference, with property tests."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from markets.double_auction import clear


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


@settings(max_examples=300, deadline=None)
@given(orders)
def test_clearing_is_efficient_fair_and_conserves_energy_and_money(case):
    market, quantity, limit = (np.array(x) for x in case)
    result = clear(market, quantity, limit, n_markets=4)
    for m in range(4):
        here = market == m
        q, p, f = quantity[here], limit[here], result.filled[here]
        assert np.isclose(result.volume[m], _reference_volume(q, p), atol=1e-9)
        bought, sold = f[q > 0].sum(), -f[q < 0].sum()
        assert np.isclose(bought, result.volume[m], atol=1e-9)
        assert np.isclose(sold, result.volume[m], atol=1e-9)
        # money: buyers pay exactly what sellers receive
        if result.volume[m] > 0:
            price = result.price[m]
            assert abs(price * bought - price * sold) <= 1e-9
            # individually rational: nobody trades beyond their limit
            assert (p[(q > 0) & (f > 1e-12)] >= price - 1e-12).all()
            assert (p[(q < 0) & (f < -1e-12)] <= price + 1e-12).all()
        else:
            assert np.isnan(result.price[m]) and np.allclose(f, 0)
        # fills stay within orders and keep their sign
        assert (np.sign(f) * np.sign(q) >= 0).all() and (np.abs(f) <= np.abs(q) + 1e-12).all()
        # equal prices on one side are rationed pro rata
        for side in (q > 0, q < 0):
            for level in np.unique(p[side]):
                same = side & (p == level)
                ratio = f[same] / q[same]
                assert np.allclose(ratio, ratio[0], atol=1e-9)


def test_textbook_example():
    # buyers 3 kWh @0.30, 2 @0.20; sellers 2 @0.10, 4 @0.25 -> 2 kWh clear at 0.275?
    # Q*: at 0.25 demand 3, supply 6 -> 3; at 0.30 demand 3, supply 6 -> 3. Marginal buyer
    # @0.30 (covers unit 3), marginal seller @0.25 (covers unit 3): price 0.275.
    result = clear([0, 0, 0, 0], [3, 2, -2, -4], [0.30, 0.20, 0.10, 0.25], n_markets=1)
    assert result.volume[0] == 3.0
    assert result.price[0] == 0.275
    assert result.filled.tolist() == [3.0, 0.0, -2.0, -1.0]


def test_no_sellers_or_no_buyers_clears_nothing():
    result = clear([0, 1], [2.0, 1.0], [0.3, 0.3], n_markets=2)
    assert result.volume.tolist() == [0.0, 0.0] and np.isnan(result.price).all()
