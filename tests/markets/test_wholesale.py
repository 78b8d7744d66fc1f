"""Day-ahead positions and imbalance settlement, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from markets.wholesale import persistence, settle


def test_dual_pricing_never_pays_a_deviation_better_than_day_ahead():
    # bought 10 kWh at 0.10; drew 12: the 2 missing kWh cost max(0.15, 0.10) + 0.01
    short = settle(10.0, 12.0, day_ahead=0.10, real_time=0.15, penalty=0.01)
    assert short.imbalance_price == pytest.approx(0.16)
    assert short.total_cost == pytest.approx(10 * 0.10 + 2 * 0.16)
    assert short.balancing_revenue == pytest.approx(2 * 0.06)
    # drew 8: the 2 spare kWh are sold at min(0.15, 0.10) - 0.01 = 0.09
    long = settle(10.0, 8.0, day_ahead=0.10, real_time=0.15, penalty=0.01)
    assert long.imbalance_price == pytest.approx(0.09)
    assert long.total_cost == pytest.approx(1.0 - 2 * 0.09)
    assert long.balancing_revenue == pytest.approx(2 * 0.01)
    # a cheap real-time price does not reward being short
    assert settle(10.0, 12.0, 0.10, 0.02).imbalance_price == 0.10
    # a perfect forecast pays the day-ahead price only
    exact = settle(-3.0, -3.0, 0.10, 0.50, 0.05)
    assert exact.total_cost == pytest.approx(-0.3) and exact.balancing_revenue == 0.0
    with pytest.raises(ValueError, match="finite"):
        settle(np.nan, 1.0, 0.1, 0.1)


def test_persistence_uses_the_day_before_and_the_baseline_before_that():
    baseline = np.arange(8.0) * 10
    actual = np.array([1.0, 2.0, 3.0, 4.0])
    # day 0 (steps 0-3): the baseline; day 1 (steps 4-7): what was drawn on day 0
    np.testing.assert_array_equal(persistence(actual[:0], baseline, 0, 4, 4), baseline[:4])
    np.testing.assert_array_equal(persistence(actual, baseline, 4, 4, 4), actual)
    # a run starting mid-way: only the steps with a day-before are taken from it
    np.testing.assert_array_equal(persistence(actual[:2], baseline, 4, 4, 4),
                                  [1.0, 2.0, 60.0, 70.0])
