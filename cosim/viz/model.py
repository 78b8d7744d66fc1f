"""The viewer's Mesa model: a run's households, microgrid operators, retailers and grid,
placed on the feeder (a Mesa `Network` over the feeder's bus graph, at the bus coordinates)
and stepped through the records of a run folder (replay) or of a live `cosim.Simulation`.

    model = FeederModel("runs/ieee123_1000-20261201-101500")
    model.step()                      # the next recorded step (Mesa counts model.steps)
    model.seek(40)                    # any recorded step
    model.frame.bus_v                 # this step's lowest-phase voltage per bus, p.u.

`model.steps` is the step on display. A live model runs the simulation when it is stepped
past the last recorded step. A failure while stepping never escapes `step`: it stops the
model and is kept, one line, in `model.error` for the page to show.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
from mesa import Model
from mesa.discrete_space import Network

from cosim.scenario import ProfileData
from cosim.viz.agents import GridAgent, HouseholdAgent, MarketAgent, RetailerAgent
from cosim.viz.layout import FeederLayout, build_layout, feeder_of
from cosim.viz.live import LiveRun
from cosim.viz.records import RunRecords
from cosim.viz.trades import trade_edges

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    """One step of the records, in the shapes the views draw.

    households: the households table's row of each household (columns, [households]);
    soc [households] (0..1, NaN without a battery); bus_v [buses], the lowest phase's
    voltage, p.u.; line_loading [lines], current over rating (NaN where unrated); trades:
    (seller, buyer, kwh) edges; market_price and market_volume per market (currency/kWh,
    kWh); retail_prices: (import, export) per retailer, currency/kWh; grid: the grid
    table's row (substation_kw, losses_kw, violations, converged, ...)."""

    step: int
    time: pd.Timestamp
    households: dict[str, np.ndarray]
    soc: np.ndarray
    bus_v: np.ndarray
    line_loading: np.ndarray
    trades: tuple[np.ndarray, np.ndarray, np.ndarray]
    market_price: dict[int, float]
    market_volume: dict[int, float]
    retail_prices: dict[str, tuple[float, float]]
    grid: dict[str, float]


class FeederModel(Model):
    """A run on its feeder (module docstring). `source`: a run folder, or with `live` a
    scenario TOML run step by step into `live_folder`; `profiles` replaces a live
    scenario's profile source (tests, benchmarks)."""

    def __init__(self, source: str | Path = "", live: bool = False,
                 live_folder: str | Path | None = None,
                 profiles: ProfileData | None = None) -> None:
        super().__init__(seed=0)
        self.live: LiveRun | None = None
        if live:
            self.live = LiveRun(source, live_folder, profiles)
            self.live.advance()  # step 0 must exist to draw anything
            source = self.live.folder
        self.records = RunRecords(source)
        self.layout: FeederLayout = build_layout(feeder_of(self.records.config),
                                                 self.records.homes)
        self.error: str | None = None
        self.grid = Network(self._graph(), random=self.random)
        self._place_agents()
        self.frame = self._frame(0)
        self.running = self.last_step > 0

    # -- the network and its agents ---------------------------------------------------------
    def _graph(self) -> nx.Graph:
        """The feeder's bus graph with each bus's drawing position as `pos`."""
        graph = nx.Graph(self.layout.feeder.graph)
        for bus, xy in zip(self.layout.buses, self.layout.bus_xy):
            graph.nodes[bus]["pos"] = tuple(xy)
        return graph

    def _place_agents(self) -> None:
        buses, homes = self.layout.buses, self.records.homes
        cell = self.grid._cells  # Mesa's Network keys its cells by node id
        for index, bus in enumerate(self.layout.home_bus):
            HouseholdAgent(self, index).cell = cell[buses[bus]]
        markets = homes["market"].to_numpy()
        for market in np.unique(markets):
            # the bus where most of the market's households connect
            bus = np.bincount(self.layout.home_bus[markets == market]).argmax()
            MarketAgent(self, int(market)).cell = cell[buses[bus]]
        source = cell[buses[self.layout.source_bus]]
        for name in sorted(homes["retailer"].unique()):
            RetailerAgent(self, str(name)).cell = source
        GridAgent(self).cell = source

    @property
    def households(self) -> list[HouseholdAgent]:
        """The household agents, in household order."""
        return list(self.agents_by_type[HouseholdAgent])

    # -- stepping -----------------------------------------------------------------------------
    @property
    def last_step(self) -> int:
        """The last step there is or can be: the scenario's last for a live run, the last
        recorded for a replay."""
        if self.live is not None:
            return self.records.steps_total - 1
        return self.records.n_steps - 1

    def step(self) -> None:
        """Show the next step (Mesa has already counted it in `self.steps`)."""
        if not self._show(self.steps):
            self.steps -= 1

    def seek(self, step: int) -> None:
        """Show `step` (clamped to the steps there are); a live run runs up to it."""
        target = int(np.clip(step, 0, self.last_step))
        if self._show(target):
            self.steps = target

    def _show(self, step: int) -> bool:
        """Make `step` the frame on display; False (and `error` set, the model stopped) if
        it cannot be had."""
        try:
            if step > self.last_step:
                self.running = False
                return False
            while self.live is not None and self.records.n_steps <= step:
                self.live.advance()
                self.records.refresh()
            self.frame = self._frame(step)
        except Exception as exc:  # the page shows one line; the log keeps the traceback
            log.exception("step %d failed", step)
            self.error = f"step {step}: {type(exc).__name__}: {exc}"
            self.running = False
            return False
        self.running = step < self.last_step
        return True

    def _frame(self, step: int) -> Frame:
        records = self.records
        homes = records.households_at(step)
        buses = records.tables["buses"].at(step)
        v = np.full(len(self.layout.feeder.nodes), np.nan)
        v[buses["node"]] = buses["v_pu"]
        lines = records.tables["lines"].at(step)
        loading = np.full(len(self.layout.feeder.lines), np.nan)
        loading[lines["line"]] = lines["loading"]
        trades = records.table("trades")
        rows = trades.at(step) if trades is not None else None
        edges = trade_edges(rows["household"], rows["market"], rows["kwh"]) if rows else \
            (np.zeros(0, int), np.zeros(0, int), np.zeros(0))
        markets = records.table("markets")
        mrows = markets.at(step) if markets is not None else {"market": [], "price": [],
                                                               "volume_kwh": []}
        prices = records.table("prices")
        prows = prices.at(step) if prices is not None else {"source": [],
                                                            "import_price": [],
                                                            "export_price": []}
        grid = {k: v[0] for k, v in records.tables["grid"].at(step).items() if len(v)}
        return Frame(
            step=step, time=records.time(step), households=homes, soc=records.soc(homes),
            bus_v=self.layout.bus_min(v), line_loading=loading, trades=edges,
            market_price=dict(zip(mrows["market"], mrows["price"])),
            market_volume=dict(zip(mrows["market"], mrows["volume_kwh"])),
            retail_prices={s: (i, e) for s, i, e in zip(prows["source"],
                                                        prows["import_price"],
                                                        prows["export_price"])},
            grid=grid)

    def close(self) -> None:
        """Stop a live simulation (its run folder keeps what it recorded)."""
        if self.live is not None:
            self.live.close()
