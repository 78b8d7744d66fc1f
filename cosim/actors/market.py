"""MarketOperator: runs the local markets of one group of shards with a mechanism.

The microgrids are split among several operators, one per group of shards whose
households share markets, so each operator reads only its own shards' bids and each shard
only its own operator's result (on Ray, an operator lives with its shards). An operator
clears its markets with the scenario's mechanism (markets.double_auction or the MAHTM pool
of markets.mahtm; see `mechanism`) against the distributor's prices as the layer above,
and answers each shard with one ClearingResult for its households (recipient: the shard).
What an order did not fill, the household settles upstream after dispatch.

Bad orders (not finite, outside the price caps, from an unknown household or into a
market not its own) are rejected with a reason, in the shard's result and the
`rejections` table; the other orders clear as if they were not there. Each filled order is
booked once in `trades`, each market's outcome in `markets`. At run time the operator
checks that every market's bought energy equals its sold energy and that its money
balances: payments sum to zero where the price is uniform, and the operator never pays
out more than it takes in where it keeps a spread (pay-as-bid, fees).
"""

from __future__ import annotations

import numpy as np

from cosim.actors.base import Actor, PhaseOutput, only
from cosim.messages import BidBatch, ClearingResult, MarketResult, Message, PriceSignal
from markets.mechanism import REJECTIONS, Mechanism, Orders, Upstream


def mechanism(kind: str, settings: dict[str, object]) -> Mechanism:
    """The market mechanism a scenario names ([markets] mechanism), from its settings."""
    if kind == "double_auction":
        from markets.double_auction import DoubleAuction

        return DoubleAuction(**settings)
    if kind in ("mahtm", "cooperative"):
        from markets.mahtm import PoolMarket

        return PoolMarket(**settings)
    raise ValueError(f"unknown market mechanism {kind!r}")


class MarketOperator(Actor):
    SUBSCRIBES = {"clear": ("bids", "price")}
    PUBLISHES = {"clear": ("clearing", "markets")}

    def __init__(self, name: str, seed: int, kind: str, settings: dict[str, object],
                 markets: np.ndarray, households: np.ndarray, home_market: np.ndarray,
                 upstream: str = "distributor") -> None:
        super().__init__(name, seed)
        self.kind = kind
        self.mechanism = mechanism(kind, settings)
        self.markets = np.asarray(markets, dtype=np.int64)  # global ids, sorted
        self.households = np.asarray(households, dtype=np.int64)  # served, sorted
        # each served household's market, as an index into self.markets
        self.home = np.searchsorted(self.markets, np.asarray(home_market, dtype=np.int64))
        self.upstream = upstream  # whose PriceSignal prices the layer above
        self.budget_balanced = kind == "double_auction" and settings.get(
            "pricing", "uniform") == "uniform"
        self._checks: dict[str, float] = {}
        self._money = 0.0
        self._last: MarketResult | None = None

    def clear(self, step: int, inbox: list[Message]) -> list[Message]:
        bids = only(inbox, BidBatch)
        household = np.concatenate([b.household for b in bids])
        market = np.concatenate([b.market for b in bids])
        orders = Orders(self._local(household, self.households),
                        self._local(market, self.markets),
                        np.concatenate([b.quantity_kwh for b in bids]),
                        np.concatenate([b.limit_price for b in bids]), len(self.markets))
        result = self.mechanism.clear(orders, self._upstream(step, inbox), self.home)
        m = orders.market.clip(0, len(self.markets) - 1)
        filled = result.filled_kwh
        per_market = np.bincount(m, filled, len(self.markets))
        money = np.bincount(m, result.payment, len(self.markets))
        self._money = float(money.sum())
        self._checks = {
            "market_imbalance_kwh": float(np.abs(per_market).max(initial=0.0)),
            # uniform prices: buyers pay what sellers receive; a spread: never negative
            "market_money_imbalance": float(np.abs(money).max(initial=0.0)
                                            if self.budget_balanced
                                            else np.maximum(-money, 0.0).max(initial=0.0)),
        }
        traded = filled != 0
        self.record("trades", step=step, household=household[traded],
                    market=market[traded], kwh=filled[traded],
                    limit_price=orders.limit_price[traded], price=result.price[traded],
                    payment=result.payment[traded])
        bad = result.rejected != 0
        if bad.any():
            self.record("rejections", step=step, household=household[bad], market=market[bad],
                        quantity_kwh=orders.quantity_kwh[bad],
                        limit_price=orders.limit_price[bad],
                        reason=np.array([REJECTIONS[c] for c in result.rejected[bad]]))
        self._last = MarketResult(
            step, self.name, market=self.markets, price=result.market_price,
            volume_kwh=result.volume_kwh, demand_kwh=result.demand_kwh,
            supply_kwh=result.supply_kwh, unmatched_demand_kwh=result.unmatched_demand_kwh,
            unmatched_supply_kwh=result.unmatched_supply_kwh)
        self.record("markets", step=step, market=self.markets, price=result.market_price,
                    volume_kwh=result.volume_kwh, demand_kwh=result.demand_kwh,
                    supply_kwh=result.supply_kwh,
                    unmatched_demand_kwh=result.unmatched_demand_kwh,
                    unmatched_supply_kwh=result.unmatched_supply_kwh,
                    operator_revenue=money,
                    buyers=np.bincount(m[orders.quantity_kwh > 0], minlength=len(self.markets)),
                    sellers=np.bincount(m[orders.quantity_kwh < 0],
                                        minlength=len(self.markets)))
        out: list[Message] = []
        start = 0
        for batch in bids:
            rows = slice(start, start + batch.rows)
            start += batch.rows
            out.append(ClearingResult(
                step, self.name, recipient=batch.sender, household=batch.household,
                market=batch.market, traded_kwh=filled[rows], price=result.price[rows],
                payment=result.payment[rows], rejected=result.rejected[rows]))
        out.append(self._last)
        return out

    def result(self) -> MarketResult | None:
        """The last step's per-market outcome (what Simulation.step reports)."""
        return self._last

    def settle(self, step: int, inbox: list[Message]) -> PhaseOutput:
        # buyers paid the operator, sellers were paid by it: it keeps any spread
        return PhaseOutput(ledger={"market_operator": self._money}, checks=self._checks)

    def state_dict(self) -> dict[str, object]:
        return super().state_dict() | {"mechanism": self.mechanism.state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        super().load_state_dict(state)
        self.mechanism.load_state_dict(state["mechanism"])

    def _upstream(self, step: int, inbox: list[Message]) -> Upstream:
        """The layer above's prices for this operator's markets."""
        for signal in only(inbox, PriceSignal):
            if signal.sender == self.upstream:
                where = np.searchsorted(signal.market, self.markets).clip(
                    0, len(signal.market) - 1)
                if np.array_equal(signal.market[where], self.markets):
                    return Upstream(signal.buy_price[where], signal.sell_price[where])
        raise RuntimeError(f"{self.name} at step {step}: no prices from {self.upstream!r} "
                           "for its markets")

    @staticmethod
    def _local(ids: np.ndarray, known: np.ndarray) -> np.ndarray:
        """Positions of `ids` in the sorted `known`, -1 for ids not there."""
        pos = np.searchsorted(known, ids).clip(0, max(len(known) - 1, 0))
        return np.where(known[pos] == ids, pos, -1) if len(known) else np.full(len(ids), -1)
