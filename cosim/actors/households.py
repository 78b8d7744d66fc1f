"""HouseholdShard: hundreds to thousands of households stepped as arrays.

Each household has a load and a PV profile, maybe a battery, a grid connection, a microgrid
market and a retailer. The shard runs their policy on local observations only (own load,
PV and battery, own prices, own voltage of the last step), bids the residual into the
household's market, dispatches, and books the bill.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from agents.devices import Battery
from agents.policies.rule_based import limit_prices, self_consumption
from cosim.actors.base import Actor, PhaseOutput, only
from cosim.messages import (
    BidBatch,
    ClearingResult,
    GridState,
    InjectionBatch,
    MarketData,
    Message,
    MessageError,
    PriceSignal,
)


@dataclass
class HouseholdArrays:
    """The static description of a shard's households, one row each."""

    household: np.ndarray  # global ids
    connection: np.ndarray  # index into the grid actor's connections
    market: np.ndarray  # microgrid market id
    retailer: np.ndarray  # name of the actor that retails each household's grid energy
    load_kw: np.ndarray  # [n, steps], mean over each step
    pv_kw: np.ndarray  # [n, steps]
    battery_kwh: np.ndarray
    battery_kw: np.ndarray
    efficiency: float
    soc_min: float
    soc_max: float
    soc_initial: float
    power_factor: float


class HouseholdShard(Actor):
    SUBSCRIBES = {"decide": ("price",), "dispatch": ("clearing",),
                  "settle": ("price", "exogenous", "clearing", "grid")}
    PUBLISHES = {"decide": ("bids",), "dispatch": ("injections",)}

    def __init__(self, name: str, seed: int, homes: HouseholdArrays, dt_s: float) -> None:
        super().__init__(name, seed)
        self.homes = homes
        self.dt_h = dt_s / 3600.0
        self.battery = Battery.create(
            [f"{h} (shard {name})" for h in homes.household], homes.battery_kwh,
            homes.battery_kw, homes.efficiency, homes.efficiency, homes.soc_min, homes.soc_max)
        self.energy = torch.as_tensor(homes.battery_kwh * homes.soc_initial)
        self.tan_phi = float(np.tan(np.arccos(homes.power_factor)))
        self._intent: np.ndarray | None = None  # battery kW decided this step
        self._prices: tuple[np.ndarray, np.ndarray] | None = None

    # -- phases -------------------------------------------------------------------
    def decide(self, step: int, inbox: list[Message]) -> list[Message]:
        buy, sell = self._household_prices(step, only(inbox, PriceSignal))
        net = torch.as_tensor(self.homes.load_kw[:, step] - self.homes.pv_kw[:, step])
        battery = self_consumption(net, self.battery, self.energy, self.dt_h)
        residual = net + battery
        limit = limit_prices(residual, torch.as_tensor(buy), torch.as_tensor(sell))
        self._intent = battery.numpy()
        return [BidBatch(step, self.name, household=self.homes.household,
                         market=self.homes.market, quantity_kwh=residual.numpy() * self.dt_h,
                         limit_price=limit.numpy(), battery_kw=self._intent)]

    def dispatch(self, step: int, inbox: list[Message]) -> list[Message]:
        self._check_clearing(step, inbox)
        battery = torch.as_tensor(self._intent)
        p = -(self.homes.load_kw[:, step] - self.homes.pv_kw[:, step] + self._intent)
        q = -self.homes.load_kw[:, step] * self.tan_phi
        self.energy = self.battery.step(self.energy, battery, self.dt_h)
        return [InjectionBatch(step, self.name, household=self.homes.household,
                               connection=self.homes.connection, p_kw=p, q_kvar=q)]

    def settle(self, step: int, inbox: list[Message]) -> PhaseOutput:
        clearing = self._check_clearing(step, inbox)
        grid = only(inbox, GridState)[0]
        carbon = only(inbox, MarketData)[0].carbon_intensity
        buy, sell = self._prices
        cost = (clearing.traded_kwh * clearing.price
                + np.where(clearing.grid_kwh > 0, clearing.grid_kwh * buy,
                           clearing.grid_kwh * sell))
        net_kwh = (self.homes.load_kw[:, step] - self.homes.pv_kw[:, step]
                   + self._intent) * self.dt_h
        self.record(
            "households", step=step, household=self.homes.household,
            load_kw=self.homes.load_kw[:, step], pv_kw=self.homes.pv_kw[:, step],
            battery_kw=self._intent, energy_kwh=self.energy.numpy().copy(),
            traded_kwh=clearing.traded_kwh, price=clearing.price, grid_kwh=clearing.grid_kwh,
            cost=cost, emissions_kg=np.maximum(clearing.grid_kwh, 0.0) * carbon,
            voltage_pu=grid.connection_v_pu[self.homes.connection])
        # what was bought and sold must be what the households drew, household by household
        mismatch = float(np.max(np.abs(clearing.traded_kwh + clearing.grid_kwh - net_kwh),
                                initial=0.0))
        grid_kwh = clearing.grid_kwh
        totals = {
            "load_kwh": float(self.homes.load_kw[:, step].sum() * self.dt_h),
            "pv_kwh": float(self.homes.pv_kw[:, step].sum() * self.dt_h),
            "import_kwh": float(np.maximum(grid_kwh, 0).sum()),
            "export_kwh": float(-np.minimum(grid_kwh, 0).sum()),
            "p2p_kwh": float(np.maximum(clearing.traded_kwh, 0).sum()),
            "household_cost": float(cost.sum()),
            "household_emissions_kg": float((np.maximum(grid_kwh, 0) * carbon).sum()),
        }
        return PhaseOutput(ledger={"households": -float(cost.sum())}, totals=totals,
                           checks={"household_energy_kwh": mismatch})

    # -- helpers ------------------------------------------------------------------
    def _household_prices(self, step: int,
                          signals: list[PriceSignal]) -> tuple[np.ndarray, np.ndarray]:
        """Import and export price of each household, from its retailer's signal."""
        buy = np.full(len(self.homes.household), np.nan)
        sell = np.full(len(self.homes.household), np.nan)
        for signal in signals:
            mine = self.homes.retailer == signal.sender
            if not mine.any():
                continue
            where = np.searchsorted(signal.market, self.homes.market[mine])
            where = np.minimum(where, len(signal.market) - 1)
            if not (signal.market[where] == self.homes.market[mine]).all():
                raise MessageError(f"PriceSignal from {signal.sender!r} at step {step} has no "
                                   f"price for a market of shard {self.name}")
            buy[mine], sell[mine] = signal.buy_price[where], signal.sell_price[where]
        missing = np.isnan(buy)
        if missing.any():
            k = int(np.flatnonzero(missing)[0])
            raise MessageError(f"household {self.homes.household[k]} (shard {self.name}): no "
                               f"price signal from its retailer {self.homes.retailer[k]!r}")
        self._prices = (buy, sell)
        return buy, sell

    def _check_clearing(self, step: int, inbox: list[Message]) -> ClearingResult:
        results = [m for m in only(inbox, ClearingResult) if m.recipient == self.name]
        if len(results) != 1 or not np.array_equal(results[0].household, self.homes.household):
            raise MessageError(f"shard {self.name} at step {step}: expected one clearing result "
                               f"for its {len(self.homes.household)} households")
        return results[0]

    def state_dict(self) -> dict[str, object]:
        return super().state_dict() | {"energy": self.energy.numpy().copy()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        super().load_state_dict(state)
        self.energy = torch.as_tensor(np.array(state["energy"]))
