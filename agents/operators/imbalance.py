"""The pricing and matching core shared by microgrid operators and the distributor.

A pool (a microgrid's households, or the distributor's microgrids) has members with net
energy positive (short: they need energy) or negative (long: they have surplus). Inside the
pool, supply O (the longs' surplus) meets demand D (the shorts' need):

- price: between the upstream sell price (what exporting out of the pool earns) and the
  upstream buy price (what importing into it costs), at the share of demand in the pool's
  volume, mid = sell + (buy - sell) D / (D + O): scarce local energy is dear, abundant
  local energy cheap; the midpoint when nothing is offered or asked;
- matching: min(O, D) is traded inside the pool, shared pro rata to each member's surplus
  or need; the rest goes upstream.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def imbalance_price(low: np.ndarray, high: np.ndarray, supply: np.ndarray,
                    demand: np.ndarray) -> np.ndarray:
    """Mid price per pool, between `low` and `high` at the demand share D / (D + O)."""
    supply, demand = np.asarray(supply, float), np.asarray(demand, float)
    volume = supply + demand
    share = np.where(volume > 0, demand / np.where(volume > 0, volume, 1.0), 0.5)
    return np.asarray(low, float) + (np.asarray(high, float) - np.asarray(low, float)) * share


class Matching(NamedTuple):
    """Per member: energy traded inside the pool (kWh, + bought, - sold) and the residual
    that goes upstream; per pool: supply, demand, and the volume matched."""

    traded_kwh: np.ndarray
    upstream_kwh: np.ndarray
    supply_kwh: np.ndarray
    demand_kwh: np.ndarray
    matched_kwh: np.ndarray


def pro_rata(net_kwh: np.ndarray, pool: np.ndarray, n_pools: int) -> Matching:
    """Match the members of each pool (index `pool`, 0..n_pools-1) pro rata."""
    net = np.asarray(net_kwh, float)
    pool = np.asarray(pool, int)
    need, surplus = np.maximum(net, 0.0), np.maximum(-net, 0.0)
    demand = np.bincount(pool, weights=need, minlength=n_pools)
    supply = np.bincount(pool, weights=surplus, minlength=n_pools)
    matched = np.minimum(demand, supply)

    def share(x: np.ndarray, total: np.ndarray) -> np.ndarray:
        t = total[pool]
        return np.where(t > 0, x / np.where(t > 0, t, 1.0), 0.0)

    traded = matched[pool] * (share(need, demand) - share(surplus, supply))
    return Matching(traded, net - traded, supply, demand, matched)
