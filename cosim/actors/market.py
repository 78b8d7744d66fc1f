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
out more than it takes in where it keeps a spread (pay-as-bid, fees); the residuals go
to the system table, and one beyond rounding stops the run naming the market.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cosim.actors.base import Actor, PhaseOutput, only
from cosim.messages import BidBatch, ClearingResult, MarketResult, Message, PriceSignal
from markets.mechanism import REJECTIONS, Mechanism, Orders, Outcome, Upstream


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
                 upstream: str = "distributor", coalition: dict[str, object] | None = None,
                 steps_per_day: int = 1, steps: int = 1) -> None:
        super().__init__(name, seed)
        self.kind = kind
        self.mechanism = mechanism(kind, settings)
        self.markets = np.asarray(markets, dtype=np.int64)  # global ids, sorted
        self.households = np.asarray(households, dtype=np.int64)  # served, sorted
        # each served household's market, as an index into self.markets
        self.home = np.searchsorted(self.markets, np.asarray(home_market, dtype=np.int64))
        self.upstream = upstream  # whose PriceSignal prices the layer above
        # one price per market and no spread (the cooperative pool has no fee): buyers pay
        # exactly what sellers receive; otherwise the operator keeps a spread
        self.budget_balanced = kind == "cooperative" or (
            kind == "double_auction" and settings.get("pricing", "uniform") == "uniform")
        self._checks: dict[str, float] = {}
        self._money = 0.0
        self._last: MarketResult | None = None
        self._positions: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # `_local`'s last
        # the cooperative game: each market's members share one meter step by step, and
        # at the end of each day split what they saved by the day's game
        self.coalition = None if coalition is None else Coalitions(
            coalition, self.home, len(self.markets), steps_per_day, steps)

    def clear(self, step: int, inbox: list[Message]) -> list[Message]:
        bids = only(inbox, BidBatch)
        household = np.concatenate([b.household for b in bids])
        market = np.concatenate([b.market for b in bids])
        orders = Orders(self._local("household", household, self.households),
                        self._local("market", market, self.markets),
                        np.concatenate([b.quantity_kwh for b in bids]),
                        np.concatenate([b.limit_price for b in bids]), len(self.markets))
        upstream = self._upstream(step, inbox)
        result = self.mechanism.clear(orders, upstream, self.home)
        # each order's market for the books: a known household's own (fills only happen
        # there; a cooperative transfer is booked there even if its order went astray)
        who = orders.participant
        m = np.where(who >= 0, self.home[who.clip(0)], orders.market.clip(0))
        filled = result.filled_kwh
        trade_payment = result.payment  # transfers of the cooperative game come on top
        if self.coalition is not None:
            result, day = self.coalition.settle(step, orders, result, upstream)
            if day is not None:
                self.record("coalitions", step=step, household=self.households,
                            market=self.markets[self.home], **day)
        self._checks = self._check_books(step, m, filled, result.payment)
        if self.recording:  # (the record columns cost as much as the clearing)
            self._record(step, household, market, m, orders, result, trade_payment)
        self._last = MarketResult(
            step, self.name, market=self.markets, price=result.market_price,
            volume_kwh=result.volume_kwh, demand_kwh=result.demand_kwh,
            supply_kwh=result.supply_kwh, unmatched_demand_kwh=result.unmatched_demand_kwh,
            unmatched_supply_kwh=result.unmatched_supply_kwh)
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

    def _record(self, step: int, household: np.ndarray, market: np.ndarray, m: np.ndarray,
                orders: Orders, result: Outcome, trade_payment: np.ndarray) -> None:
        """The step's `trades` (filled orders), `rejections` and `markets` rows."""
        filled = result.filled_kwh
        traded = filled != 0
        self.record("trades", step=step, household=household[traded],
                    market=market[traded], kwh=filled[traded],
                    limit_price=orders.limit_price[traded], price=result.price[traded],
                    payment=trade_payment[traded])
        bad = result.rejected != 0
        if bad.any():
            self.record("rejections", step=step, household=household[bad], market=market[bad],
                        quantity_kwh=orders.quantity_kwh[bad],
                        limit_price=orders.limit_price[bad],
                        reason=np.array([REJECTIONS[c] for c in result.rejected[bad]]))
        n = len(self.markets)
        self.record("markets", step=step, market=self.markets, price=result.market_price,
                    volume_kwh=result.volume_kwh, demand_kwh=result.demand_kwh,
                    supply_kwh=result.supply_kwh,
                    unmatched_demand_kwh=result.unmatched_demand_kwh,
                    unmatched_supply_kwh=result.unmatched_supply_kwh,
                    operator_revenue=np.bincount(m, result.payment, n),
                    buyers=np.bincount(m[~bad & (orders.quantity_kwh > 0)], minlength=n),
                    sellers=np.bincount(m[~bad & (orders.quantity_kwh < 0)], minlength=n))

    def _check_books(self, step: int, market: np.ndarray, filled: np.ndarray,
                     payment: np.ndarray) -> dict[str, float]:
        """Every market's bought energy equals its sold energy, and its payments sum to zero
        (one price, no spread) or leave the operator a spread, never a loss. The residuals go
        to the system table; one beyond rounding is a bookkeeping error and stops the run,
        naming the market."""
        n = len(self.markets)
        energy = np.bincount(market, filled, n)
        money = np.bincount(market, payment, n)
        self._money = float(money.sum())
        shortfall = np.abs(money) if self.budget_balanced else np.maximum(-money, 0.0)
        scale = 1.0 + np.bincount(market, np.abs(payment), n) + np.bincount(
            market, np.abs(filled), n)
        for name, residual in (("energy bought and sold (kWh)", np.abs(energy)),
                               ("payments", shortfall)):
            bad = np.flatnonzero(residual > 1e-9 * scale)
            if len(bad):
                k = int(bad[0])
                raise RuntimeError(f"{self.name} at step {step}: market {self.markets[k]}: "
                                   f"{name} do not balance (off by {residual[k]:.3g})")
        return {"market_imbalance_kwh": float(np.abs(energy).max(initial=0.0)),
                "market_money_imbalance": float(shortfall.max(initial=0.0))}

    def result(self) -> MarketResult | None:
        """The last step's per-market outcome (what Simulation.step reports)."""
        return self._last

    def settle(self, step: int, inbox: list[Message]) -> PhaseOutput:
        # buyers paid the operator, sellers were paid by it: it keeps any spread
        return PhaseOutput(ledger={"market_operator": self._money}, checks=self._checks)

    def state_dict(self) -> dict[str, object]:
        state = super().state_dict() | {"mechanism": self.mechanism.state_dict()}
        if self.coalition is not None:
            state["coalition"] = self.coalition.state_dict()
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        super().load_state_dict(state)
        self.mechanism.load_state_dict(state["mechanism"])
        if self.coalition is not None:
            self.coalition.load_state_dict(state["coalition"])

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

    def _local(self, column: str, ids: np.ndarray, known: np.ndarray) -> np.ndarray:
        """Positions of `ids` in the sorted `known`, -1 for ids not there. The bids'
        columns rarely change from step to step: the last answer per column is kept, and
        comparing against it (about 30 us for 50,000 households) saves the search (1.5 ms
        of the 100,000-household benchmark's step, per operator)."""
        last = self._positions.get(column)
        if last is not None and np.array_equal(ids, last[0]):
            return last[1]
        if np.array_equal(ids, known):  # the usual case: every household, in order
            pos = np.arange(len(ids))
        elif len(known):
            pos = np.searchsorted(known, ids).clip(0, len(known) - 1)
            pos = np.where(known[pos] == ids, pos, -1)
        else:
            pos = np.full(len(ids), -1)
        pos.setflags(write=False)  # shared by the steps that reuse it
        self._positions[column] = (ids.copy(), pos)
        return pos


class Coalitions:
    """The cooperative game of each market (markets.cooperative), played on the day.

    Step by step the members trade through one meter (the pool without a spread): what one
    exports while another imports is saved at the retail spread, and the pool price splits
    that saving between them. At the day's last step the day's game is played on the
    members' orders (their net draw, kWh per step) at the layer above's prices: v(S) is
    what coalition S would have saved behind one meter, and its nucleolus or Shapley value
    (exact up to `exact_limit` members, K-means clustered beyond) is each member's share
    of the day's saving. Members then settle the difference between their share and what
    the pool gave them, as a payment with that step's clearing; the transfers sum to zero
    in every market because the pool realises exactly v(N).
    """

    def __init__(self, settings: dict[str, object], home: np.ndarray, n_markets: int,
                 steps_per_day: int, steps: int) -> None:
        from markets.cooperative import CoopConfig

        self.config = CoopConfig(**settings)
        self.home, self.n_markets = home, n_markets
        self.steps_per_day, self.steps = steps_per_day, steps
        self._reset_day()

    def _reset_day(self) -> None:
        n, t = len(self.home), self.steps_per_day
        self.quantity = np.zeros((n, t))  # each member's accepted order, kWh
        self.saved = np.zeros(n)  # what the pool saved it so far today, currency
        self.buy = np.zeros((self.n_markets, t))
        self.sell = np.zeros((self.n_markets, t))
        self.used = np.zeros(t, dtype=bool)

    def settle(self, step: int, orders: Orders, result: Outcome, upstream: Upstream
               ) -> tuple[Outcome, dict[str, np.ndarray] | None]:
        """Book the step; at the day's end add each member's transfer to its payment and
        return the day's columns per member (pool and allocated savings, transfer)."""
        from markets.cooperative import Prosumers, allocate

        k = step % self.steps_per_day
        who = orders.participant
        ok = (who >= 0) & (result.rejected == 0)
        filled, price = result.filled_kwh, result.price
        retail = np.where(filled > 0, upstream.buy[orders.market.clip(0)],
                          upstream.sell[orders.market.clip(0)])
        self.quantity[who[ok], k] = orders.quantity_kwh[ok]
        np.add.at(self.saved, who[ok], (filled * (retail - price))[ok])
        self.buy[:, k], self.sell[:, k] = upstream.buy, upstream.sell
        self.used[k] = True
        if k != self.steps_per_day - 1 and step != self.steps - 1:
            return result, None
        share = np.zeros(len(self.home))
        hours = self.used
        for m in range(self.n_markets):
            members = np.flatnonzero(self.home == m)
            q = self.quantity[members][:, hours]
            if len(members) < 2 or not np.abs(q).sum():
                share[members] = self.saved[members]
                continue
            game = Prosumers(demand_kwh=np.maximum(q, 0.0), pv_kwh=np.maximum(-q, 0.0),
                             capacity_kwh=np.zeros(len(members)),
                             power_kw=np.zeros(len(members)),
                             buy=self.buy[m, hours], sell=self.sell[m, hours])
            share[members] = allocate(game, self.config).payoff
        transfer = self.saved - share  # + the member pays back what the pool gave above it
        day = dict(pool_savings=self.saved.copy(), allocated_savings=share, transfer=transfer)
        payment = result.payment.copy()
        known = who >= 0
        payment[known] += transfer[who[known]]
        self._reset_day()
        return dataclasses.replace(result, payment=payment), day

    def state_dict(self) -> dict[str, object]:
        return {k: getattr(self, k).copy() for k in ("quantity", "saved", "buy", "sell", "used")}

    def load_state_dict(self, state: dict[str, object]) -> None:
        for k, v in state.items():
            setattr(self, k, np.array(v))
