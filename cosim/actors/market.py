"""MicrogridOperator: clears the local market of every microgrid it runs.

All shards' bids arrive as a handful of BidBatch messages; every microgrid is cleared at
once by the vectorised double auction, and each shard gets back one ClearingResult with its
households' filled peer-to-peer quantities, prices and payments. What an order did not
fill, the household settles with its retailer after dispatch. The operator records every
filled order (`trades`) and every market's outcome (`markets`).
"""

from __future__ import annotations

import numpy as np

from cosim.actors.base import Actor, PhaseOutput, only
from cosim.messages import BidBatch, ClearingResult, MarketResult, Message
from markets.double_auction import clear


class MicrogridOperator(Actor):
    SUBSCRIBES = {"clear": ("bids",)}
    PUBLISHES = {"clear": ("clearing", "markets")}

    def __init__(self, name: str, seed: int, n_markets: int, n_households: int) -> None:
        super().__init__(name, seed)
        self.n_markets = n_markets
        self.n_households = n_households
        self._money = 0.0
        self._imbalance = 0.0

    def clear(self, step: int, inbox: list[Message]) -> list[Message]:
        bids = only(inbox, BidBatch)
        for batch in bids:
            self._validate(step, batch)
        household = np.concatenate([b.household for b in bids])
        market = np.concatenate([b.market for b in bids])
        quantity = np.concatenate([b.quantity_kwh for b in bids])
        limit = np.concatenate([b.limit_price for b in bids])
        result = clear(market, quantity, limit, self.n_markets)
        price = np.nan_to_num(result.price[market], nan=0.0)
        payment = result.filled * price  # + buyers pay, - sellers are paid
        self._money = float(payment.sum())
        # what the auction matched must balance in each market: bought = sold
        self._imbalance = float(np.abs(np.bincount(market, weights=result.filled,
                                                   minlength=self.n_markets)).max(initial=0))
        demand = np.bincount(market, weights=np.maximum(quantity, 0), minlength=self.n_markets)
        supply = np.bincount(market, weights=np.maximum(-quantity, 0), minlength=self.n_markets)
        filled = result.filled != 0
        self.record("trades", step=step, household=household[filled], market=market[filled],
                    kwh=result.filled[filled], limit_price=limit[filled], price=price[filled],
                    payment=payment[filled])
        self.record("markets", step=step, market=np.arange(self.n_markets), price=result.price,
                    volume_kwh=result.volume, demand_kwh=demand, supply_kwh=supply,
                    buyers=np.bincount(market[quantity > 0], minlength=self.n_markets),
                    sellers=np.bincount(market[quantity < 0], minlength=self.n_markets))
        out: list[Message] = []
        start = 0
        for batch in bids:
            rows = slice(start, start + batch.rows)
            start += batch.rows
            out.append(ClearingResult(
                step, self.name, recipient=batch.sender, household=batch.household,
                market=batch.market, traded_kwh=result.filled[rows], price=price[rows],
                payment=payment[rows]))
        out.append(MarketResult(step, self.name, market=np.arange(self.n_markets),
                                price=result.price, volume_kwh=result.volume,
                                demand_kwh=demand, supply_kwh=supply))
        return out

    def settle(self, step: int, inbox: list[Message]) -> PhaseOutput:
        # buyers paid the operator, sellers were paid by it: this nets to zero
        return PhaseOutput(ledger={"market_operator": self._money},
                           checks={"market_imbalance_kwh": self._imbalance})

    def _validate(self, step: int, batch: BidBatch) -> None:
        batch.require(step, "market", 0, self.n_markets, "bids into unknown market")
        batch.require(step, "household", 0, self.n_households, "unknown household id")
        batch.require(step, "limit_price", -10.0, 10.0, "limit price per kWh out of range:")
