"""Microgrid operators (MAHTM layer 2): local buy and sell prices for their households.

Each microgrid's operator prices local energy between its upstream prices (what the
distributor or grid pays for its exports, `upstream_sell`, and charges for its imports,
`upstream_buy`), moving toward the local imbalance: a microgrid short of energy prices it
near the import price, one with surplus near the export price (`imbalance_price`). The
local buy price is that mid price plus half the operator's `fee`, the local sell price
minus half, both kept within the upstream prices so no household loses by trading locally.
`gain` < 1 moves the price only part of the way each step (a smoother, more predictable
signal); the operator keeps the last mid price per microgrid as its state.

Settlement: local trades are matched pro rata and paid at the local prices; each
household's residual goes upstream at the upstream prices through the operator, who keeps
the fee spread. Money balances exactly: households pay = operator keeps + upstream is paid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from agents.households.bill import energy_bill
from agents.operators.imbalance import imbalance_price, pro_rata


class LocalPrices(NamedTuple):
    buy: np.ndarray  # [markets] what households pay for local energy, currency/kWh
    sell: np.ndarray  # [markets] what households earn for local energy


class Settlement(NamedTuple):
    """Per member: energy traded in the pool and upstream (kWh, + bought), payment
    (currency, + paid by the member); per pool: the operator's take and the net payment
    upstream (+ paid to upstream)."""

    traded_kwh: np.ndarray
    upstream_kwh: np.ndarray
    payment: np.ndarray
    operator_revenue: np.ndarray
    upstream_payment: np.ndarray


def settle_pool(net_kwh: np.ndarray, pool: np.ndarray, n_pools: int, local: LocalPrices,
                upstream_buy: np.ndarray, upstream_sell: np.ndarray) -> Settlement:
    """Match members pro rata inside each pool, the rest upstream; book the money."""
    m = pro_rata(net_kwh, pool, n_pools)
    ub, us = np.asarray(upstream_buy, float), np.asarray(upstream_sell, float)
    ub, us = np.broadcast_to(ub, (n_pools,)), np.broadcast_to(us, (n_pools,))
    upstream_pay = energy_bill(m.upstream_kwh, ub[pool], us[pool])
    payment = energy_bill(m.traded_kwh, local.buy[pool], local.sell[pool]) + upstream_pay
    upstream = np.bincount(pool, weights=upstream_pay, minlength=n_pools)
    revenue = np.bincount(pool, weights=payment, minlength=n_pools) - upstream
    return Settlement(m.traded_kwh, m.upstream_kwh, payment, revenue, upstream)


@dataclass
class MicrogridOperator:
    n_markets: int
    fee: float = 0.01  # local buy - local sell, currency/kWh
    gain: float = 1.0  # share of the way to the target price moved each step, (0, 1]
    mid: np.ndarray | None = field(default=None)  # last mid price per market

    def __post_init__(self) -> None:
        if not 0 < self.gain <= 1:
            raise ValueError(f"microgrid operator gain {self.gain} must be in (0, 1]")
        if self.fee < 0:
            raise ValueError(f"microgrid operator fee {self.fee} is negative")

    def prices(self, net_kwh: np.ndarray, market: np.ndarray, upstream_buy: np.ndarray,
               upstream_sell: np.ndarray) -> LocalPrices:
        """Local prices per market from its households' intended net energy (kWh, +
        import) and the upstream prices (scalars or [markets])."""
        ub = np.broadcast_to(np.asarray(upstream_buy, float), (self.n_markets,))
        us = np.broadcast_to(np.asarray(upstream_sell, float), (self.n_markets,))
        if (us > ub).any():
            k = int(np.flatnonzero(us > ub)[0])
            raise ValueError(f"market {k}: upstream sell price {us[k]} above buy price {ub[k]}")
        m = pro_rata(net_kwh, market, self.n_markets)
        target = imbalance_price(us, ub, m.supply_kwh, m.demand_kwh)
        mid = target if self.mid is None else self.mid + self.gain * (target - self.mid)
        self.mid = mid
        return LocalPrices(np.minimum(mid + self.fee / 2, ub), np.maximum(mid - self.fee / 2, us))

    def settle(self, net_kwh: np.ndarray, market: np.ndarray, local: LocalPrices,
               upstream_buy: np.ndarray, upstream_sell: np.ndarray) -> Settlement:
        return settle_pool(net_kwh, market, self.n_markets, local, upstream_buy, upstream_sell)
