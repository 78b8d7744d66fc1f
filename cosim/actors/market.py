"""MicrogridOperator: clears the local market of every microgrid it runs.

All shards' bids arrive as a handful of BidBatch messages; every microgrid is cleared at
once by the vectorised double auction, and each shard gets back one ClearingResult with its
households' peer-to-peer trades and the residual they settle with their retailer.
"""

from __future__ import annotations

import numpy as np

from cosim.actors.base import Actor, PhaseOutput, only
from cosim.messages import BidBatch, ClearingResult, Message
from markets.double_auction import clear


class MicrogridOperator(Actor):
    SUBSCRIBES = {"clear": ("bids",)}
    PUBLISHES = {"clear": ("clearing",)}

    def __init__(self, name: str, seed: int, n_markets: int, n_households: int) -> None:
        super().__init__(name, seed)
        self.n_markets = n_markets
        self.n_households = n_households
        self._money = 0.0

    def clear(self, step: int, inbox: list[Message]) -> list[Message]:
        bids = only(inbox, BidBatch)
        for batch in bids:
            self._validate(step, batch)
        market = np.concatenate([b.market for b in bids])
        quantity = np.concatenate([b.quantity_kwh for b in bids])
        limit = np.concatenate([b.limit_price for b in bids])
        result = clear(market, quantity, limit, self.n_markets)
        price = np.nan_to_num(result.price[market], nan=0.0)
        paid = result.filled * price  # + buyers pay, - sellers are paid
        self._money = float(paid.sum())
        traded = result.volume > 0
        self.record("trades", step=step, market=np.arange(self.n_markets),
                    price=result.price, volume_kwh=result.volume,
                    buyers=np.bincount(market[quantity > 0], minlength=self.n_markets),
                    sellers=np.bincount(market[quantity < 0], minlength=self.n_markets),
                    traded=traded)
        out, start = [], 0
        for batch in bids:
            rows = slice(start, start + batch.rows)
            start += batch.rows
            out.append(ClearingResult(
                step, self.name, recipient=batch.sender, household=batch.household,
                market=batch.market, traded_kwh=result.filled[rows], price=price[rows],
                grid_kwh=quantity[rows] - result.filled[rows]))
        return out

    def settle(self, step: int, inbox: list[Message]) -> PhaseOutput:
        # buyers paid the operator, sellers were paid by it: this nets to zero
        return PhaseOutput(ledger={"market_operator": self._money})

    def _validate(self, step: int, batch: BidBatch) -> None:
        batch.require(step, "market", 0, self.n_markets, "bids into unknown market")
        batch.require(step, "household", 0, self.n_households, "unknown household id")
        batch.require(step, "limit_price", -10.0, 10.0, "limit price per kWh out of range:")

    def state_dict(self) -> dict[str, object]:
        return super().state_dict() | {"money": self._money}

    def load_state_dict(self, state: dict[str, object]) -> None:
        super().load_state_dict(state)
        self._money = float(state["money"])
