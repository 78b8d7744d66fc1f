"""The one interface every market mechanism has: orders and upstream prices in; per-order
fills, prices and payments, and what is left for the layer above, out.

A layer of the market (the microgrids' local markets, the distributor's market between
microgrids) holds `Orders` in `n_markets` independent markets and knows the prices of the
layer above it (`Upstream`: what importing from it costs and exporting to it earns, per
market). A mechanism clears them into an `Outcome`: each order's filled energy, the price it
got and its payment, and per market the price, the volume and the unmatched demand and
supply that go up a layer. Nothing in a mechanism knows about households or actors: a
microgrid operator's orders come from households, the distributor's from microgrids.

Orders the mechanism cannot take are *screened* first and rejected with a reason (a code
into `REJECTIONS`): a quantity or limit that is not a finite number, a limit outside the
market's price caps, an unknown participant, or a market the participant does not belong
to. A rejected order is not filled; everyone else's orders clear as if it were not there.

Units: energy in kWh per step (+ bought, - sold), prices in currency/kWh, payments in
currency (+ paid by the participant).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

REJECTIONS = (
    "",  # 0: accepted
    "quantity is not a finite number",
    "limit price is not a finite number",
    "limit price outside the market's price caps",
    "unknown participant",
    "order into a market the participant does not belong to",
)
OK, BAD_QUANTITY, BAD_LIMIT, OUTSIDE_CAPS, UNKNOWN_PARTICIPANT, WRONG_MARKET = range(6)


@dataclass(frozen=True)
class Orders:
    """One layer's orders: participant ids, the market each is for (0..n_markets-1), the
    quantity (kWh, > 0 buys, < 0 sells, 0 no order) and the limit price (a buyer's
    maximum, a seller's minimum; mechanisms that post prices ignore it)."""

    participant: np.ndarray
    market: np.ndarray
    quantity_kwh: np.ndarray
    limit_price: np.ndarray
    n_markets: int

    def __post_init__(self) -> None:
        for name, dtype in (("participant", np.int64), ("market", np.int64),
                            ("quantity_kwh", float), ("limit_price", float)):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dtype))
        n = len(self.participant)
        if any(len(getattr(self, f)) != n for f in ("market", "quantity_kwh", "limit_price")):
            raise ValueError("orders: participant, market, quantity_kwh and limit_price need "
                             "one entry per order")

    def __len__(self) -> int:
        return len(self.participant)

    def without(self, rejected: np.ndarray) -> Orders:
        """The same orders with the rejected ones emptied (quantity 0, limit 0, market 0; an
        empty order into a market that does not exist is not rejected, but moved too)."""
        keep = (rejected == OK) & (self.market >= 0) & (self.market < self.n_markets)
        return Orders(self.participant, np.where(keep, self.market, 0),
                      np.where(keep, self.quantity_kwh, 0.0),
                      np.where(keep, self.limit_price, 0.0), self.n_markets)


@dataclass(frozen=True)
class Upstream:
    """The layer above, per market: `buy` what importing from it costs, `sell` what
    exporting to it earns (currency/kWh, sell <= buy)."""

    buy: np.ndarray
    sell: np.ndarray

    @classmethod
    def flat(cls, buy: float, sell: float, n_markets: int) -> Upstream:
        return cls(np.full(n_markets, float(buy)), np.full(n_markets, float(sell)))


@dataclass(frozen=True)
class Outcome:
    """A clearing. Per order: filled kWh (signed like the order), the price it traded at
    (0 where nothing was filled), the payment (+ paid) and the rejection code (0 accepted).
    Per market: the price (nan where nothing traded), the traded volume, the accepted
    demand and supply, and the demand and supply left unmatched for the layer above."""

    filled_kwh: np.ndarray
    price: np.ndarray
    payment: np.ndarray
    rejected: np.ndarray
    market_price: np.ndarray
    volume_kwh: np.ndarray
    demand_kwh: np.ndarray
    supply_kwh: np.ndarray
    unmatched_demand_kwh: np.ndarray = field(default=None)
    unmatched_supply_kwh: np.ndarray = field(default=None)

    def __post_init__(self) -> None:
        if self.unmatched_demand_kwh is None:
            object.__setattr__(self, "unmatched_demand_kwh", self.demand_kwh - self.volume_kwh)
        if self.unmatched_supply_kwh is None:
            object.__setattr__(self, "unmatched_supply_kwh", self.supply_kwh - self.volume_kwh)

    @property
    def operator_revenue(self) -> float:
        """What the market's operator keeps: buyers' payments less sellers' receipts
        (0 for budget-balanced mechanisms, the spread for pay-as-bid and fees)."""
        return float(self.payment.sum())


class Mechanism(Protocol):
    """A market-clearing rule (see the module docstring)."""

    def clear(self, orders: Orders, upstream: Upstream) -> Outcome: ...

    def state_dict(self) -> dict[str, object]: ...

    def load_state_dict(self, state: dict[str, object]) -> None: ...


def screen(orders: Orders, price_caps: tuple[float, float] = (-np.inf, np.inf),
           home_market: np.ndarray | None = None) -> np.ndarray:
    """Rejection code per order (0 accepted). `home_market`: each known participant's
    market (an array indexed by participant id, -1 where unknown); None accepts anyone
    into any market that exists."""
    q, p, m = orders.quantity_kwh, orders.limit_price, orders.market
    code = np.zeros(len(orders), dtype=np.int8)
    low, high = price_caps
    # later checks overwrite earlier ones: the reason given is the most basic one
    code[(p < low) | (p > high)] = OUTSIDE_CAPS
    code[~np.isfinite(p)] = BAD_LIMIT
    code[~np.isfinite(q)] = BAD_QUANTITY
    if home_market is not None:
        home = np.asarray(home_market)
        ids = orders.participant
        known = (ids >= 0) & (ids < len(home))
        own = np.full(len(orders), -1)
        own[known] = home[ids[known]]
        code[(own >= 0) & (own != m)] = WRONG_MARKET
        code[own < 0] = UNKNOWN_PARTICIPANT
    else:
        code[(m < 0) | (m >= orders.n_markets)] = WRONG_MARKET
    code[q == 0] = OK  # no order: nothing to reject
    return code


def empty_outcome(orders: Orders, rejected: np.ndarray) -> dict[str, np.ndarray]:
    """Zero per-order arrays and the accepted demand and supply per market, the common
    start of every mechanism's outcome."""
    n = orders.n_markets
    q = orders.quantity_kwh
    return dict(filled_kwh=np.zeros(len(orders)), price=np.zeros(len(orders)),
                payment=np.zeros(len(orders)), rejected=rejected,
                demand_kwh=np.bincount(orders.market, np.maximum(q, 0.0), minlength=n),
                supply_kwh=np.bincount(orders.market, np.maximum(-q, 0.0), minlength=n))
