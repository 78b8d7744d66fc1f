"""Retailers: who sells households their grid energy, and at what price.

The Distributor retails at a (time-of-use) tariff and also buys the network's losses; an
Aggregator retails its portfolio at the wholesale price plus a margin (a dynamic tariff)
and, in later work, leads a Stackelberg game with it. Both publish a PriceSignal per market
in the signal phase, with a forecast of their prices over the next steps, and book their
money in the settle phase from their customers' meters: the customers' `energy_bill`, less
the wholesale cost of the net energy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from agents.households.bill import energy_bill
from cosim.actors.base import Actor, PhaseOutput, only
from cosim.messages import GridState, MarketData, Message, MeterBatch, PriceSignal


class Retailer(Actor, ABC):
    SUBSCRIBES = {"settle": ("meters", "exogenous", "grid")}
    PUBLISHES = {"signal": ("price",)}

    def __init__(self, name: str, seed: int, n_markets: int, customers: np.ndarray,
                 dt_s: float, steps: int, forecast_steps: int) -> None:
        super().__init__(name, seed)
        self.markets = np.arange(n_markets)
        self.customers = np.asarray(customers, dtype=bool)  # [households], True if ours
        self.dt_h = dt_s / 3600.0
        self.steps, self.forecast_steps = steps, forecast_steps
        self._prices: tuple[float, float] = (0.0, 0.0)
        self._table: np.ndarray | None = None  # [steps, 2] of `prices`, made on first use

    @abstractmethod
    def prices(self, step: int) -> tuple[float, float]:
        """(import, export) price for the step, currency/kWh: known in advance (a tariff,
        a day-ahead price), so the whole run's table is made once and forecasts slice it."""

    def signal(self, step: int, inbox: list[Message]) -> list[Message]:
        if self._table is None:
            self._table = np.array([self.prices(t) for t in range(self.steps)])
        buy, sell = self._prices = tuple(float(p) for p in self._table[step])
        forecast = self._table[step: step + self.forecast_steps]  # [horizon, 2]
        n = len(self.markets)
        self.record("prices", step=step, source=self.name, import_price=buy, export_price=sell)
        return [PriceSignal(step, self.name, market=self.markets, buy_price=np.full(n, buy),
                            sell_price=np.full(n, sell),
                            buy_forecast=np.broadcast_to(forecast[:, 0], (n, len(forecast))),
                            sell_forecast=np.broadcast_to(forecast[:, 1], (n, len(forecast))))]

    def settle(self, step: int, inbox: list[Message]) -> PhaseOutput:
        grid_kwh = np.concatenate([
            m.grid_kwh[self.customers[m.household]] for m in only(inbox, MeterBatch)])
        buy, sell = self._prices
        wholesale = only(inbox, MarketData)[0].wholesale_price
        revenue = float(energy_bill(grid_kwh, buy, sell).sum())
        money = revenue - wholesale * float(grid_kwh.sum()) - self.extra_cost(step, inbox)
        return PhaseOutput(ledger={self.name: money})

    def extra_cost(self, step: int, inbox: list[Message]) -> float:
        return 0.0

    def state_dict(self) -> dict[str, object]:
        return super().state_dict() | {"prices": self._prices}

    def load_state_dict(self, state: dict[str, object]) -> None:
        super().load_state_dict(state)
        self._prices = tuple(state["prices"])


class Distributor(Retailer):
    """The network's retailer of last resort, with a flat or time-of-use tariff. It also
    buys, at the wholesale price, the energy the network itself consumes (losses) and what
    the feeder's own loads draw."""

    def __init__(self, name: str, seed: int, n_markets: int, customers: np.ndarray,
                 dt_s: float, import_price: float, export_price: float,
                 peak_import_price: float | None, peak_hours: tuple[int, int],
                 hours: np.ndarray, forecast_steps: int) -> None:
        super().__init__(name, seed, n_markets, customers, dt_s, len(hours), forecast_steps)
        self.import_price, self.export_price = import_price, export_price
        self.peak_import_price, self.peak_hours = peak_import_price, peak_hours
        self.hours = np.asarray(hours)  # hour of day of each step

    def prices(self, step: int) -> tuple[float, float]:
        start, end = self.peak_hours
        peak = self.peak_import_price is not None and start <= self.hours[step] < end
        return (self.peak_import_price if peak else self.import_price), self.export_price

    def extra_cost(self, step: int, inbox: list[Message]) -> float:
        grid = only(inbox, GridState)[0]
        all_households = sum(float(m.grid_kwh.sum()) for m in only(inbox, MeterBatch))
        other_kwh = grid.substation_kw * self.dt_h - all_households  # losses + feeder loads
        return only(inbox, MarketData)[0].wholesale_price * other_kwh


class Aggregator(Retailer):
    """Retails its portfolio at the day-ahead wholesale price plus a margin, both ways."""

    def __init__(self, name: str, seed: int, n_markets: int, customers: np.ndarray,
                 dt_s: float, wholesale: np.ndarray, margin: float,
                 forecast_steps: int) -> None:
        super().__init__(name, seed, n_markets, customers, dt_s, len(wholesale), forecast_steps)
        self.wholesale = np.asarray(wholesale, dtype=float)  # day-ahead, known in advance
        self.margin = margin

    def prices(self, step: int) -> tuple[float, float]:
        w = float(self.wholesale[step])
        return w + self.margin, w - self.margin
