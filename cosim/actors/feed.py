"""ExogenousFeed: weather, wholesale price and carbon intensity, step by step; and the
wholesale market itself, which is paid for the energy entering at the substation."""

from __future__ import annotations

import numpy as np

from cosim.actors.base import Actor, PhaseOutput, only
from cosim.messages import GridState, MarketData, Message, Weather


class ExogenousFeed(Actor):
    SUBSCRIBES = {"settle": ("grid",)}
    PUBLISHES = {"signal": ("exogenous",)}

    def __init__(self, name: str, seed: int, temperature_c: np.ndarray, ghi_w_m2: np.ndarray,
                 wholesale_price: np.ndarray, carbon_intensity: np.ndarray,
                 dt_s: float) -> None:
        super().__init__(name, seed)
        self.series = {k: np.asarray(v, dtype=float) for k, v in dict(
            temperature_c=temperature_c, ghi_w_m2=ghi_w_m2, wholesale_price=wholesale_price,
            carbon_intensity=carbon_intensity).items()}
        self.dt_h = dt_s / 3600.0

    def signal(self, step: int, inbox: list[Message]) -> list[Message]:
        s = {k: float(v[step]) for k, v in self.series.items()}
        self.record("exogenous", step=step, **s)
        return [Weather(step, self.name, temperature_c=s["temperature_c"],
                        ghi_w_m2=s["ghi_w_m2"]),
                MarketData(step, self.name, wholesale_price=s["wholesale_price"],
                           carbon_intensity=s["carbon_intensity"])]

    def settle(self, step: int, inbox: list[Message]) -> PhaseOutput:
        grid = only(inbox, GridState)[0]
        price = float(self.series["wholesale_price"][step])
        return PhaseOutput(ledger={"wholesale": price * grid.substation_kw * self.dt_h})
