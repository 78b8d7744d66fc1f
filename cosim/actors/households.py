"""HouseholdShard: hundreds to thousands of households stepped as arrays.

Each household is a composition of devices (`agents.households.Households`: battery, EV,
heat pump, PV, generator, flexible load, any of them absent) with its own load, PV and car
use, a grid connection, a microgrid market and a retailer. The shard runs the households'
policy on local observations only (own devices, own inputs, own prices), bids each
household's net draw into its market, dispatches the devices, and books the bill. The
device code is the same that GradMAP differentiates through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from agents.households import Households, HouseholdState
from agents.households.dataset import HouseholdSeries
from agents.policies.rule_based import limit_prices, self_consumption_setpoints
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
    """The static description of a shard's households, one row each, and the local clock
    and weather they share."""

    household: np.ndarray  # global ids
    connection: np.ndarray  # index into the grid actor's connections
    market: np.ndarray  # microgrid market id
    retailer: np.ndarray  # name of the actor that retails each household's grid energy
    load_kw: np.ndarray  # [n, steps] appliance demand, mean over each step
    pv_kw: np.ndarray  # [n, steps] PV available
    ev_at_home: np.ndarray | None  # [n, steps] bool; None when no household here has a car
    ev_trip_kwh: np.ndarray | None  # [n, steps] energy driven within the step
    ev_steps_left: np.ndarray | None  # [n, steps] at-home steps before departure (inf away)
    devices: dict[str, dict[str, object]]  # keyword arguments of Households.create
    initial: dict[str, float]  # battery_soc, ev_soc, indoor_c at the start
    power_factor: float  # of the appliance and heat-pump load
    hour: np.ndarray  # [steps] local clock hour at each step's start
    weekend: np.ndarray  # [steps] 1 on Saturdays and Sundays
    outdoor_c: np.ndarray  # [steps]

    def series(self, dt_h: float) -> HouseholdSeries:
        """The households' inputs, step by step. Without cars the car series are zero-stride
        views, so a shard of carless homes carries no car arrays."""
        n, steps = self.load_kw.shape

        def tensor(x: np.ndarray) -> torch.Tensor:  # shares memory unless a copy is needed
            return torch.from_numpy(np.require(x, np.float64, ["W"]))

        def per_home(x: np.ndarray | None, fill: float) -> torch.Tensor:
            if x is None:
                return torch.full((n, 1), fill, dtype=torch.float64).expand(n, steps)
            return tensor(x)

        zero = torch.zeros(1, dtype=torch.float64).expand(steps)  # prices come as messages
        return HouseholdSeries(
            load_kw=tensor(self.load_kw), pv_kw=tensor(self.pv_kw),
            ev_at_home=per_home(self.ev_at_home, 0.0),
            ev_trip_kwh=per_home(self.ev_trip_kwh, 0.0),
            ev_steps_left=per_home(self.ev_steps_left, math.inf),
            outdoor_c=tensor(self.outdoor_c), hour=tensor(self.hour),
            weekend=tensor(self.weekend), wholesale_price=zero,
            carbon_kg_per_kwh=zero, gains_kw=zero, dt_h=dt_h)


class HouseholdShard(Actor):
    SUBSCRIBES = {"decide": ("price",), "dispatch": ("clearing",),
                  "settle": ("price", "exogenous", "clearing", "grid")}
    PUBLISHES = {"decide": ("bids",), "dispatch": ("injections",)}

    def __init__(self, name: str, seed: int, homes: HouseholdArrays, dt_s: float) -> None:
        super().__init__(name, seed)
        self.homes = homes
        self.dt_h = dt_s / 3600.0
        self.households = Households.create(homes.household.tolist(), **homes.devices)
        self.series = homes.series(self.dt_h)
        self.state = self.households.initial_state(self.dt_h, **homes.initial)
        self.tan_phi = float(np.tan(np.arccos(homes.power_factor)))
        self._setpoints = None  # decided this step
        self._net: np.ndarray | None = None  # kW each household draws this step
        self._served: torch.Tensor | None = None  # kW of appliance demand served this step
        self._prices: tuple[np.ndarray, np.ndarray] | None = None

    # -- phases -------------------------------------------------------------------
    def decide(self, step: int, inbox: list[Message]) -> list[Message]:
        buy, sell = self._household_prices(step, only(inbox, PriceSignal))
        x = self.series.at(step)
        buy_t, sell_t = torch.from_numpy(buy), torch.from_numpy(sell)
        sp = self_consumption_setpoints(self.households, self.state, x, self.dt_h, buy_t, sell_t)
        net = self.households.net_kw(sp, x)
        # the inflexible part and the flexible part the policy runs now
        served = self.households.flexible_load.inflexible_kw(x.load_kw) + sp.flexible_kw
        self._setpoints, self._net, self._served = sp, net.numpy(), served
        return [BidBatch(step, self.name, household=self.homes.household,
                         market=self.homes.market, quantity_kwh=self._net * self.dt_h,
                         limit_price=limit_prices(net, buy_t, sell_t).numpy(),
                         battery_kw=sp.battery_kw.numpy())]

    def dispatch(self, step: int, inbox: list[Message]) -> list[Message]:
        self._check_clearing(step, inbox)
        x, sp = self.series.at(step), self._setpoints
        consumption = self._served + sp.heat_pump_kw
        self.state = self.households.step(self.state, sp, x, self.dt_h)
        return [InjectionBatch(step, self.name, household=self.homes.household,
                               connection=self.homes.connection, p_kw=-self._net,
                               q_kvar=-consumption.numpy() * self.tan_phi)]

    def settle(self, step: int, inbox: list[Message]) -> PhaseOutput:
        clearing = self._check_clearing(step, inbox)
        grid = only(inbox, GridState)[0]
        carbon = only(inbox, MarketData)[0].carbon_intensity
        buy, sell = self._prices
        x, sp, hh, dt_h = self.series.at(step), self._setpoints, self.households, self.dt_h
        cost = (clearing.traded_kwh * clearing.price
                + np.where(clearing.grid_kwh > 0, clearing.grid_kwh * buy,
                           clearing.grid_kwh * sell))
        kw = {name: getattr(sp, name).numpy() for name in sp._fields}
        load = self._served.numpy()
        curtailed = (hh.pv.available(x.pv_kw) - sp.pv_kw).numpy()
        operating = hh.operating_cost(sp, dt_h).numpy()
        discomfort = hh.discomfort_kh(self.state, x, dt_h).numpy()
        shortfall = hh.ev.departure_shortfall_kwh(self.state.ev_kwh, x.ev()).numpy()
        emissions = np.maximum(clearing.grid_kwh, 0.0) * carbon
        self.record(
            "households", step=step, household=self.homes.household, load_kw=load,
            pv_kw=kw["pv_kw"], curtailed_kw=curtailed, battery_kw=kw["battery_kw"],
            ev_kw=kw["ev_kw"], heat_pump_kw=kw["heat_pump_kw"],
            generator_kw=kw["generator_kw"], net_kw=self._net,
            battery_energy_kwh=self.state.battery_kwh.numpy().copy(),
            ev_energy_kwh=self.state.ev_kwh.numpy().copy(),
            indoor_c=self.state.indoor_c.numpy().copy(),
            backlog_kwh=self.state.backlog_kwh.sum(-1).numpy(), discomfort_kh=discomfort,
            ev_shortfall_kwh=shortfall, traded_kwh=clearing.traded_kwh, price=clearing.price,
            grid_kwh=clearing.grid_kwh, cost=cost, operating_cost=operating,
            emissions_kg=emissions, voltage_pu=grid.connection_v_pu[self.homes.connection])
        # what was bought and sold must be what the households drew, household by household
        mismatch = float(np.max(np.abs(clearing.traded_kwh + clearing.grid_kwh
                                       - self._net * dt_h), initial=0.0))
        grid_kwh = clearing.grid_kwh
        totals = {
            "load_kwh": float(load.sum() * dt_h),
            "pv_kwh": float(kw["pv_kw"].sum() * dt_h),
            "curtailed_kwh": float(curtailed.sum() * dt_h),
            "battery_kwh": float(kw["battery_kw"].sum() * dt_h),
            "ev_kwh": float(kw["ev_kw"].sum() * dt_h),
            "heat_pump_kwh": float(kw["heat_pump_kw"].sum() * dt_h),
            "generator_kwh": float(kw["generator_kw"].sum() * dt_h),
            "import_kwh": float(np.maximum(grid_kwh, 0).sum()),
            "export_kwh": float(-np.minimum(grid_kwh, 0).sum()),
            "p2p_kwh": float(np.maximum(clearing.traded_kwh, 0).sum()),
            "household_cost": float(cost.sum()),
            "operating_cost": float(operating.sum()),
            "household_emissions_kg": float(emissions.sum()),
            "discomfort_kh": float(discomfort.sum()),
            "ev_shortfall_kwh": float(shortfall.sum()),
        }
        # the bill moves money between parties; wear and fuel leave the system, so they
        # are reported (operating_cost) but not booked in the ledger
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
        state = {name: t.numpy().copy() for name, t in self.state._asdict().items()}
        return super().state_dict() | {"households": state}

    def load_state_dict(self, state: dict[str, object]) -> None:
        super().load_state_dict(state)
        self.state = HouseholdState(**{name: torch.from_numpy(np.array(value))
                                       for name, value in state["households"].items()})
