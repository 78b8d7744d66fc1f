"""The peer-to-peer double auction, cleared for many independent markets at once.

Each order has a market, a quantity (kWh; positive to buy, negative to sell) and a limit
price (currency/kWh). In each market the traded volume is the largest Q at which every unit
still finds a buyer willing to pay at least what its seller asks:

    Q* = max over buyers k (by price, high first) of  min(D_k, S(b_k)),

with D_k the demand of the k best buyers and S(p) the supply asked at p or less. Orders
priced better than the margin are filled in full; orders at the marginal price share the
remainder pro rata, so ties are broken the same way whatever the order of arrival.

Pricing (`DoubleAuction.pricing`):
- "uniform": every trade of a market clears at one price, k-pricing between the marginal
  seller's limit s and the marginal buyer's limit b: p = s + k (b - s), k in [0, 1] (k = 0.5
  the midpoint, k = 1 the buyers' price). Budget-balanced: buyers pay what sellers receive.
- "pay_as_bid": every filled order trades at its own limit; the operator keeps the spread
  between what buyers pay and sellers receive (never negative, since every filled buyer's
  limit is at least every filled seller's).
Both are individually rational: nobody trades at a price worse than its limit. What is not
filled goes up a layer (the unmatched demand and supply of the Outcome).

Everything is vectorised over orders with numpy: sorting by (market, price) once per side
replaces a Python loop over markets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from markets.mechanism import Orders, Outcome, Upstream, empty_outcome, screen


@dataclass
class DoubleAuction:
    """The mechanism: `pricing` "uniform" (k-pricing) or "pay_as_bid"; orders with limits
    outside `price_caps` (currency/kWh) are rejected. Stateless."""

    pricing: Literal["uniform", "pay_as_bid"] = "uniform"
    k: float = 0.5
    price_caps: tuple[float, float] = (-1.0, 5.0)

    def __post_init__(self) -> None:
        if self.pricing not in ("uniform", "pay_as_bid"):
            raise ValueError(f"double auction pricing {self.pricing!r}: use \"uniform\" or "
                             "\"pay_as_bid\"")
        if not 0.0 <= self.k <= 1.0:
            raise ValueError(f"double auction k {self.k} must be in [0, 1]")

    def clear(self, orders: Orders, upstream: Upstream | None = None,
              home_market: np.ndarray | None = None) -> Outcome:
        """Clear every market of `orders` (`upstream` is not needed: what is not filled
        goes up a layer at its prices, outside the auction)."""
        rejected = screen(orders, self.price_caps, home_market)
        ok = orders.without(rejected)
        out = empty_outcome(ok, rejected)
        match = clear(ok.market, ok.quantity_kwh, ok.limit_price, ok.n_markets)
        traded = match.volume > 0
        if self.pricing == "uniform":
            market_price = np.where(traded, match.seller_limit + self.k * (
                match.buyer_limit - match.seller_limit), np.nan)
            price = np.where(match.filled != 0, market_price[ok.market], 0.0)
        else:
            price = np.where(match.filled != 0, ok.limit_price, 0.0)
            bought = np.bincount(ok.market, np.maximum(match.filled, 0) * price, ok.n_markets)
            # a pay-as-bid market's price: what buyers paid per kWh, on average
            market_price = np.where(traded, bought / np.where(traded, match.volume, 1.0),
                                    np.nan)
        out.update(filled_kwh=match.filled, price=price, payment=match.filled * price)
        return Outcome(**out, market_price=market_price, volume_kwh=match.volume)

    def state_dict(self) -> dict[str, object]:
        return {}

    def load_state_dict(self, state: dict[str, object]) -> None:
        pass


@dataclass(frozen=True)
class Matching:
    """Per order: filled kWh (signed like the order); per market: the traded volume and
    the limits of the marginal buyer and seller (nan where nothing traded)."""

    filled: np.ndarray
    volume: np.ndarray
    buyer_limit: np.ndarray
    seller_limit: np.ndarray


def clear(
    market: np.ndarray, quantity: np.ndarray, limit: np.ndarray, n_markets: int
) -> Matching:
    """Match the orders of `n_markets` double auctions (module docstring).

    market: int [orders] in [0, n_markets); quantity: kWh [orders], > 0 buy, < 0 sell, 0 no
    order; limit: currency/kWh [orders] (a buyer's maximum, a seller's minimum).
    """
    market = np.asarray(market, dtype=np.int64)
    quantity = np.asarray(quantity, dtype=float)
    limit = np.asarray(limit, dtype=float)
    filled = np.zeros_like(quantity)
    buyer, seller = np.full(n_markets, np.nan), np.full(n_markets, np.nan)
    volume = np.zeros(n_markets)
    buy = np.flatnonzero(quantity > 0)
    sell = np.flatnonzero(quantity < 0)
    if len(buy) == 0 or len(sell) == 0:
        return Matching(filled, volume, buyer, seller)

    # Buyers by market, then price high to low; sellers by market, then price low to high:
    # one argsort on a combined key per side (a (market, price) lexsort costs twice as much).
    # The order within a tie does not matter: fills at a price level are pro rata, and
    # numpy's sort is deterministic for the same input.
    span = max(float(np.abs(limit[quantity != 0]).max()), 1.0) * 4.0 + 1.0
    b = buy[np.argsort(market[buy] * span - limit[buy])]
    s = sell[np.argsort(market[sell] * span + limit[sell])]
    bm, bp, bq = market[b], limit[b], quantity[b]
    sm, sp, sq = market[s], limit[s], -quantity[s]
    demand = _segment_cumsum(bq, bm)  # D_k within each market
    supply = _segment_cumsum(sq, sm)

    # S(b_k): supply in the buyer's market asked at b_k or less. Sellers are sorted by
    # (market, price), so one searchsorted on a combined key finds it for every buyer.
    s_key = sm * span + sp
    pos = np.searchsorted(s_key, bm * span + bp, side="right")  # sellers up to b_k
    first = np.searchsorted(sm, bm, side="left")  # first seller of the buyer's market
    has = pos > first
    supply_at = np.where(has, supply[np.maximum(pos - 1, 0)], 0.0)
    tradable = np.minimum(demand, supply_at)
    q_star = np.zeros(n_markets)
    np.maximum.at(q_star, bm, tradable)
    traded = q_star > 0
    volume[:] = q_star

    # Marginal orders: the first buyer / seller whose cumulative quantity reaches Q*.
    b_marg = _marginal(bm, demand, q_star, n_markets, float(bq.sum()))
    s_marg = _marginal(sm, supply, q_star, n_markets, float(sq.sum()))
    buyer = np.where(traded, bp[b_marg], np.nan)
    seller = np.where(traded, sp[s_marg], np.nan)
    filled[b] = _fill(bm, bp, bq, q_star, buyer, better=np.greater)
    filled[s] = -_fill(sm, sp, sq, q_star, seller, better=np.less)
    return Matching(filled, volume, buyer, seller)


def _segment_cumsum(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each new value of the (sorted) segment array."""
    total = np.cumsum(values)
    starts = np.flatnonzero(np.concatenate(([True], segment[1:] != segment[:-1])))
    offset = np.zeros_like(total)
    offset[starts[1:]] = total[starts[1:] - 1]
    return total - np.maximum.accumulate(offset)


def _marginal(segment: np.ndarray, cumulative: np.ndarray, q_star: np.ndarray,
              n_markets: int, side_total: float) -> np.ndarray:
    """Index (into the sorted side) of the first order whose cumulative quantity reaches Q*
    in its market; -1 for markets without one. The cumulative sums come from one running
    sum over every market, so their rounding grows with the side's total, not the market's:
    the tolerance does too."""
    q = q_star[segment]
    reach = cumulative >= q - (1e-12 * q + 1e-14 * side_total)
    idx = np.full(n_markets, -1, dtype=np.int64)
    order = np.flatnonzero(reach)[::-1]  # assign in reverse so the first one wins
    idx[segment[order]] = order
    return idx


def _fill(segment: np.ndarray, prices: np.ndarray, qty: np.ndarray, q_star: np.ndarray,
          marginal_price: np.ndarray, better: np.ufunc) -> np.ndarray:
    """Quantities filled on one side: in full if priced better than the margin, pro rata
    at the marginal price, nothing worse."""
    mp = marginal_price[segment]
    full = better(prices, mp)
    at_margin = prices == mp
    n = len(q_star)
    full_volume = np.bincount(segment, weights=np.where(full, qty, 0.0), minlength=n)
    margin_volume = np.bincount(segment, weights=np.where(at_margin, qty, 0.0), minlength=n)
    share = np.divide(q_star - full_volume, margin_volume, out=np.zeros(n),
                      where=margin_volume > 0)
    return np.where(full, qty, np.where(at_margin, qty * share[segment], 0.0))
