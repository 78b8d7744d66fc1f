"""MAHTM's formula-priced pool market (Cuadrado et al., 2023), used at two layers.

A pool's members (a microgrid's households; the distributor's microgrids) each offer a
quantity: surplus to sell or need to buy. Within a market, supply O (offered) meets demand
D (asked):

- price: between the upstream sell price s (what exporting out of the pool earns) and the
  upstream buy price b (what importing into it costs), at the share of demand in the
  pool's volume, mid = s + (b - s) D / (D + O): scarce local energy is dear, abundant
  local energy cheap; the midpoint when nothing is offered or asked. The operator's `fee`
  is the spread: buyers pay mid + fee/2, sellers get mid - fee/2, both kept within [s, b]
  so no member loses by trading in the pool rather than upstream. `gain` < 1 moves the mid
  price only part of the way each step (a smoother signal); the last mid is the state;
- matching: min(O, D) is traded inside the pool, shared pro rata to each member's offer
  or need; the rest goes up a layer.

Limits set no price: members are price takers at the posted price, which is never worse
than their upstream alternative (orders are still screened like any other).

The three layers of a step (`cosim` runs them): microgrid operators clear their households
in a pool each (layer 2, upstream = the distributor's prices); the distributor clears the
microgrids' residual imports and exports in one pool (layer 3, upstream = the grid:
`grid_prices`, the grid's buy price plus the carbon cost of its energy, and the feed-in
price); the rest flows to and from the grid. Energy traded inside and between microgrids
counts as carbon-free (MAHTM's assumption), so a household's emissions are its share of
grid imports times the grid's carbon intensity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from markets.mechanism import Orders, Outcome, Upstream, empty_outcome, screen


def imbalance_price(low: np.ndarray, high: np.ndarray, supply: np.ndarray,
                    demand: np.ndarray) -> np.ndarray:
    """Mid price per pool, between `low` and `high` at the demand share D / (D + O)."""
    supply, demand = np.asarray(supply, float), np.asarray(demand, float)
    volume = supply + demand
    share = np.where(volume > 0, demand / np.where(volume > 0, volume, 1.0), 0.5)
    return np.asarray(low, float) + (np.asarray(high, float) - np.asarray(low, float)) * share


def pro_rata(quantity: np.ndarray, market: np.ndarray, n_markets: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(filled per order, matched, demand, supply per market): min(D, O) shared pro rata
    to each order's need or offer."""
    q = np.asarray(quantity, float)
    need, offer = np.maximum(q, 0.0), np.maximum(-q, 0.0)
    demand = np.bincount(market, weights=need, minlength=n_markets)
    supply = np.bincount(market, weights=offer, minlength=n_markets)
    matched = np.minimum(demand, supply)
    buy_share = np.divide(matched, demand, out=np.zeros(n_markets), where=demand > 0)
    sell_share = np.divide(matched, supply, out=np.zeros(n_markets), where=supply > 0)
    return need * buy_share[market] - offer * sell_share[market], matched, demand, supply


def grid_prices(grid_price: float, carbon_kg_per_kwh: float, carbon_price: float,
                feed_in: float) -> tuple[float, float]:
    """(import, export) price of energy from and to the grid, currency/kWh: the grid's
    price plus the carbon cost of its energy (`carbon_price` currency/kgCO2), and the
    feed-in price."""
    return grid_price + carbon_price * carbon_kg_per_kwh, feed_in


@dataclass
class PoolMarket:
    """The mechanism (module docstring): `fee` currency/kWh, `gain` in (0, 1]."""

    fee: float = 0.01
    gain: float = 1.0
    price_caps: tuple[float, float] = (-np.inf, np.inf)  # limits outside are rejected
    mid: np.ndarray | None = field(default=None)  # last mid price per market

    def __post_init__(self) -> None:
        if not 0 < self.gain <= 1:
            raise ValueError(f"pool market gain {self.gain} must be in (0, 1]")
        if self.fee < 0:
            raise ValueError(f"pool market fee {self.fee} is negative")

    def prices(self, demand: np.ndarray, supply: np.ndarray,
               upstream: Upstream) -> tuple[np.ndarray, np.ndarray]:
        """(buy, sell) price per market from its demand and supply (kWh), and moves the
        mid price state toward its target."""
        ub, us = np.asarray(upstream.buy, float), np.asarray(upstream.sell, float)
        if (us > ub).any():
            k = int(np.flatnonzero(us > ub)[0])
            raise ValueError(f"market {k}: upstream sell price {us[k]} above buy price {ub[k]}")
        target = imbalance_price(us, ub, supply, demand)
        mid = target if self.mid is None else self.mid + self.gain * (target - self.mid)
        # a smoothed price stays within today's upstream prices, or a member would trade at
        # a loss against its outside option (and the operator pay out more than it takes)
        mid = self.mid = np.clip(mid, us, ub)
        return np.minimum(mid + self.fee / 2, ub), np.maximum(mid - self.fee / 2, us)

    def clear(self, orders: Orders, upstream: Upstream,
              home_market: np.ndarray | None = None) -> Outcome:
        # limits set no price here, but a bad one is still a bad order
        rejected = screen(orders, self.price_caps, home_market)
        ok = orders.without(rejected)
        out = empty_outcome(ok, rejected)
        filled, matched, demand, supply = pro_rata(ok.quantity_kwh, ok.market, ok.n_markets)
        buy, sell = self.prices(demand, supply, upstream)
        price = np.where(filled > 0, buy[ok.market], np.where(filled < 0, sell[ok.market], 0.0))
        out.update(filled_kwh=filled, price=price, payment=filled * price)
        return Outcome(**out, market_price=np.where(matched > 0, 0.5 * (buy + sell), np.nan),
                       volume_kwh=matched)

    def state_dict(self) -> dict[str, object]:
        return {"mid": None if self.mid is None else self.mid.copy()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.mid = None if state["mid"] is None else np.array(state["mid"])
