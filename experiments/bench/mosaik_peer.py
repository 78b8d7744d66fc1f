"""The co-simulation benchmark's peer: the same job as a mosaik 3.6 scenario.

Written the way a mosaik user would write it on top of our libraries: the households are
`agents.households` (the same device code, the same self-consumption rule with its reserve,
the same orders at each household's marginal value and the same cover of what the market
did not fill as our engine's shards), the markets are `markets.double_auction`, the grid
is OpenDSS IEEE 123 through OpenDSSDirect.py or our `grid.PowerFlow` at batch 1 with a warm
start. Only the wiring is mosaik's. Two layouts:

- **per household** (`layout="household"`): every household is a mosaik entity of one
  in-process simulator; the simulator steps all its households in one batch (a favour to
  mosaik: a naive user would step each entity alone), but bids, fills and power leave and
  enter it entity by entity through mosaik, one float per household and attribute.
- **array** (`layout="array"`): a speed-aware user keeps households as arrays, one entity
  per group of microgrids (`entities` groups; one per microgrid at most), each entity its
  own `Households` batch; one market entity per group clears that group's microgrids in
  one call, and each group sends the grid one array per quantity (kW per connection).

Within a step our engine bids, clears, dispatches and solves the power flow in that order.
A mosaik data flow cannot go from households to market and back within one time without
same-time loops, so the market's fills reach the households one mosaik time later
(`time_shifted`): at time t each household entity first dispatches step t - 1 (cover what
was not filled, step the devices, send the injections) and then bids for step t, and the
grid solves step t - 1. The world runs steps + 1 times; the work per household-step is the
same as ours, and so are the results (the rule does not read the grid's voltages).

By default nothing is recorded, which favours the peer. With `run(..., records=FOLDER)`
the array layout with our power flow writes the tables ours writes from the same steps
(households, trades, markets, grid, buses, lines; `Records`): the simulators share one
in-process buffer and a writer thread encodes Parquet while the world steps, as a
speed-aware user would (records sent through mosaik's data flow to a collector entity
would only add copies). `run(..., trace=True)` keeps each step's household net draw,
market prices and substation power for cross-checks (outside the timed runs).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mosaik
import mosaik_api_v3
import numpy as np
import torch

from agents.households import Households, HouseholdSeries
from agents.households.bill import energy_bill
from agents.households.orders import cover, order
from agents.policies.rule_based import self_consumption_reserve
from cosim.config import usable_cpus
from cosim.records import RunFolder, chunk
from markets.double_auction import DoubleAuction
from markets.mechanism import REJECTIONS, Orders, Outcome

GRIDS = ("opendss", "powerflow")
LAYOUTS = ("household", "array")


@dataclass
class Homes:
    """The scenario's households, one row each in household order, and what they share:
    the inputs a mosaik user reads in from the scenario's files.

    load_kw, pv_kw: [n, steps] kW (means over each step); ev_*: [n, steps] car use, None
    without cars; devices: `Households.create` keyword arguments (per-household arrays or
    scalars); hour, weekend, outdoor_c: [steps] local clock hour, 1 on weekends, degrees C;
    buy, sell: [steps] the retail import and export price, currency/kWh; auction:
    `DoubleAuction` settings; dt_s: step length, s; carbon: [steps] the grid's carbon
    intensity, kgCO2/kWh (the records' emissions); time: [steps] step start times (the
    records' time column).
    """

    market: np.ndarray
    connection: np.ndarray
    load_kw: np.ndarray
    pv_kw: np.ndarray
    devices: dict[str, dict[str, object]]
    initial: dict[str, float]
    power_factor: float
    hour: np.ndarray
    weekend: np.ndarray
    outdoor_c: np.ndarray
    buy: np.ndarray
    sell: np.ndarray
    auction: dict[str, object]
    dt_s: float
    ev_at_home: np.ndarray | None = None
    ev_trip_kwh: np.ndarray | None = None
    ev_steps_left: np.ndarray | None = None
    carbon: np.ndarray | None = None
    time: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.market)

    @property
    def n_markets(self) -> int:
        return int(self.market.max()) + 1

    def series(self, rows: np.ndarray) -> HouseholdSeries:
        """The input series of households `rows`; without cars the car series are
        zero-stride views (no arrays to carry)."""
        n, steps = len(rows), self.load_kw.shape[1]

        def per_home(x: np.ndarray | None, fill: float) -> torch.Tensor:
            if x is None:
                return torch.full((n, 1), fill, dtype=torch.float64).expand(n, steps)
            return torch.from_numpy(np.asarray(x[rows], dtype=np.float64))

        def shared(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(x, dtype=np.float64))

        zero = torch.zeros(1, dtype=torch.float64).expand(steps)  # prices: self.buy, sell
        return HouseholdSeries(
            load_kw=per_home(self.load_kw, 0.0), pv_kw=per_home(self.pv_kw, 0.0),
            ev_at_home=per_home(self.ev_at_home, 0.0),
            ev_trip_kwh=per_home(self.ev_trip_kwh, 0.0),
            ev_steps_left=per_home(self.ev_steps_left, math.inf),
            outdoor_c=shared(self.outdoor_c), hour=shared(self.hour),
            weekend=shared(self.weekend), wholesale_price=zero, carbon_kg_per_kwh=zero,
            gains_kw=zero, dt_h=self.dt_s / 3600.0)

    def devices_of(self, rows: np.ndarray) -> dict[str, dict[str, object]]:
        return {name: {k: (v[rows] if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
                for name, kw in self.devices.items()}


class Fleet:
    """Households `rows` of `homes` stepped as one batch with `agents.households`: the
    library calls our engine's shards make for households on the `rule` policy."""

    def __init__(self, homes: Homes, rows: np.ndarray) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)
        self.dt_h = homes.dt_s / 3600.0
        self.households = Households.create(self.rows.tolist(), **homes.devices_of(self.rows))
        self.series = homes.series(self.rows)
        self.state = self.households.initial_state(self.dt_h, **homes.initial)
        self.tan_phi = float(np.tan(np.arccos(homes.power_factor)))
        self.buy, self.sell = homes.buy, homes.sell
        self._decided: tuple | None = None
        self.net_kw = np.zeros(len(self.rows))  # of the last dispatch, kW drawn
        self.bill = np.zeros(len(self.rows))  # of the last dispatch, currency
        # the last dispatch's inputs, setpoints, served load (kW), kvar and metered kWh, and
        # its orders: what a caller that records (the benchmark's limit) reads
        self.last: dict[str, object] = {}

    def decide(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Step t's orders: (quantity kWh, + buys; limit price currency/kWh)."""
        n = len(self.rows)
        buy = torch.full((n,), float(self.buy[t]), dtype=torch.float64)
        sell = torch.full((n,), float(self.sell[t]), dtype=torch.float64)
        x = self.series.at(t)
        committed, reserve = self_consumption_reserve(self.households, self.state, x,
                                                      self.dt_h, buy, sell)
        quantity, limit = order(self.households, self.state, x, committed, reserve, buy, sell,
                                self.dt_h)
        self._decided = (t, committed, reserve, quantity, limit)
        return quantity.numpy(), limit.numpy()

    def dispatch(self, traded_kwh: np.ndarray, payment: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """The decided step with `traded_kwh` filled: the reserve covers the rest, the
        devices step, the bill is booked. Returns the injections (kW, kvar; generation
        positive) per household."""
        t, committed, reserve, quantity, limit = self._decided
        hh, x, dt_h = self.households, self.series.at(t), self.dt_h
        sp = cover(committed, reserve, quantity - torch.from_numpy(traded_kwh), dt_h)
        net = hh.net_kw(sp, x)
        served = hh.flexible_load.inflexible_kw(x.load_kw) + sp.flexible_kw
        q_kvar = (served + sp.heat_pump_kw).numpy() * self.tan_phi
        self.state = hh.step(self.state, sp, x, dt_h)
        self.net_kw = net.numpy()
        grid_kwh = self.net_kw * dt_h - traded_kwh
        self.bill = payment + energy_bill(grid_kwh, self.buy[t], self.sell[t])
        self.last = dict(step=t, inputs=x, setpoints=sp, served=served.numpy(), q_kvar=q_kvar,
                         grid_kwh=grid_kwh, quantity=quantity.numpy(),
                         limit=limit.numpy())
        self._decided = None
        return -self.net_kw, -q_kvar


def clear(auction: DoubleAuction, market: np.ndarray, quantity: np.ndarray,
          limit: np.ndarray) -> Outcome:
    """Clear the markets of one group's orders (household k bids `quantity[k]` kWh at
    `limit[k]` into global market `market[k]`); per-market results are in the order of
    np.unique(market)."""
    ids, local = np.unique(market, return_inverse=True)
    return auction.clear(Orders(np.arange(len(market)), local, quantity, limit, len(ids)),
                         None, local)


# -- records: the tables ours writes, built alike by the limit and the array peer ----------
def fills(cleared: Outcome) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What a clearing tells each order: (filled kWh, payment, price, rejection code)."""
    return cleared.filled_kwh, cleared.payment, cleared.price, cleared.rejected


def household_rows(fleet: Fleet, filled: tuple[np.ndarray, ...], carbon: float,
                   voltage_pu: np.ndarray | float) -> dict[str, np.ndarray]:
    """The `households` rows of the fleet's last dispatch (`filled`: its orders' `fills`;
    `carbon` kgCO2/kWh; each household's connection voltage, p.u.), as ours' shards
    record them."""
    d, hh, state, dt_h = fleet.last, fleet.households, fleet.state, fleet.dt_h
    x = d["inputs"]
    sp, grid_kwh = d["setpoints"], d["grid_kwh"]
    kw = {name: getattr(sp, name).numpy() for name in sp._fields}
    return chunk(
        step=d["step"], household=fleet.rows, load_kw=d["served"], pv_kw=kw["pv_kw"],
        curtailed_kw=(hh.pv.available(x.pv_kw) - sp.pv_kw).numpy(),
        battery_kw=kw["battery_kw"], ev_kw=kw["ev_kw"], heat_pump_kw=kw["heat_pump_kw"],
        generator_kw=kw["generator_kw"], net_kw=fleet.net_kw, q_kvar=d["q_kvar"],
        battery_energy_kwh=state.battery_kwh.numpy().copy(),
        ev_energy_kwh=state.ev_kwh.numpy().copy(), indoor_c=state.indoor_c.numpy().copy(),
        backlog_kwh=state.backlog_kwh.sum(-1).numpy(),
        discomfort_kh=hh.discomfort_kh(state, x, dt_h).numpy(),
        ev_shortfall_kwh=hh.ev.departure_shortfall_kwh(state.ev_kwh, x.ev()).numpy(),
        bid_kwh=d["quantity"], limit_price=d["limit"], traded_kwh=filled[0],
        price=filled[2], payment=filled[1], rejected=filled[3],
        grid_kwh=grid_kwh, import_price=fleet.buy[d["step"]],
        export_price=fleet.sell[d["step"]], cost=fleet.bill,
        operating_cost=hh.operating_cost(sp, dt_h).numpy(),
        emissions_kg=np.maximum(grid_kwh, 0.0) * carbon, voltage_pu=voltage_pu)


def market_rows(step: int, household: np.ndarray, market: np.ndarray, quantity: np.ndarray,
                limit: np.ndarray, cleared: Outcome, markets: np.ndarray
                ) -> dict[str, dict[str, np.ndarray]]:
    """The `trades`, `rejections` and `markets` rows of one clearing of households
    `household` bidding `quantity` kWh into global markets `market` at `limit`;
    `markets`: the global ids of its per-market results, sorted."""
    filled, bad = cleared.filled_kwh, cleared.rejected != 0
    traded, m, n = filled != 0, np.searchsorted(markets, market), len(markets)
    out = {"trades": chunk(step=step, household=household[traded], market=market[traded],
                           kwh=filled[traded], limit_price=limit[traded],
                           price=cleared.price[traded], payment=cleared.payment[traded])}
    if bad.any():
        out["rejections"] = chunk(step=step, household=household[bad], market=market[bad],
                                  quantity_kwh=quantity[bad], limit_price=limit[bad],
                                  reason=np.array([REJECTIONS[c] for c in cleared.rejected[bad]]))
    out["markets"] = chunk(step=step, market=markets, price=cleared.market_price,
                           volume_kwh=cleared.volume_kwh, demand_kwh=cleared.demand_kwh,
                           supply_kwh=cleared.supply_kwh,
                           unmatched_demand_kwh=cleared.unmatched_demand_kwh,
                           unmatched_supply_kwh=cleared.unmatched_supply_kwh,
                           operator_revenue=np.bincount(m, cleared.payment, n),
                           buyers=np.bincount(m[~bad & (quantity > 0)], minlength=n),
                           sellers=np.bincount(m[~bad & (quantity < 0)], minlength=n))
    return out


def grid_rows(step: int, solved: object, injections_kw: float, nodes: list[str]
              ) -> dict[str, dict[str, np.ndarray]]:
    """The `grid`, `buses` and `lines` rows of one power flow at batch 1 (`solved`, a
    grid.PowerFlow result; `nodes` the feeder's node names)."""
    vpu = solved.vmag_pu[0].numpy()
    sub, losses = complex(solved.substation_power[0]), complex(solved.losses[0])
    load = complex(solved.load_power[0])  # the feeder's own loads
    kcl = (sub + complex(solved.injection_power[0]) - load
           - complex(solved.network_losses[0])).real
    loading = solved.line_loading[0].numpy()
    return {
        "grid": chunk(step=np.array([step]), converged=bool(solved.converged[0]),
                      iterations=int(solved.iterations[0]), substation_kw=sub.real,
                      substation_kvar=sub.imag, losses_kw=losses.real,
                      losses_kvar=losses.imag, v_min_pu=float(np.nanmin(vpu)),
                      v_max_pu=float(np.nanmax(vpu)), violations=int(solved.violations[0]),
                      kcl_mismatch_kw=kcl, injections_kw=injections_kw,
                      feeder_loads_kw=load.real,
                      worst_bus=nodes[int(np.nanargmin(vpu))]),
        "buses": chunk(step=step, node=np.arange(len(vpu)), v_pu=vpu),
        "lines": chunk(step=step, line=np.arange(len(loading)), loading=loading)}


class Records:
    """The records of a speed-aware user of the array layout: its in-process simulators share
    this buffer, and every `every` steps the finished steps' chunks go to one writer thread
    that encodes them to Parquet (`cosim.records.RunFolder.write`: the files ours writes)
    while the steps go on (the last flush a part per CPU at once, as ours). A household's
    chunk waits for its step's voltages. Not `threaded` (the benchmark's limit), the writes
    happen in line, one part after another."""

    def __init__(self, folder: Path, time: np.ndarray, steps: int, every: int,
                 threaded: bool = True) -> None:
        self.folder, self.time, self.steps, self.every = RunFolder(folder), time, steps, every
        self._chunks: list[tuple[int, str, str, dict[str, np.ndarray]]] = []
        self._waiting: dict[int, list[tuple[dict[str, np.ndarray], np.ndarray]]] = {}
        self._first = 0
        self._pool = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="peer-records")
                      if threaded else None)
        self._pending: list[Future] = []

    def add(self, step: int, owner: str, tables: dict[str, dict[str, np.ndarray]]) -> None:
        self._chunks += [(step, table, owner, c) for table, c in tables.items()]

    def add_households(self, step: int, owner: str, rows: dict[str, np.ndarray],
                       connection: np.ndarray) -> None:
        """Households rows whose voltage_pu comes with `voltages(step, ...)`."""
        self._waiting.setdefault(step, []).append((rows, connection))
        self.add(step, owner, {"households": rows})

    def voltages(self, step: int, connection_v_pu: np.ndarray) -> None:
        """Step `step`'s voltage magnitude per connection, p.u.: the last of its rows."""
        for rows, connection in self._waiting.pop(step, ()):
            rows["voltage_pu"] = connection_v_pu[connection]
        if (step + 1) % self.every == 0 or step == self.steps - 1:
            self._flush(step)

    def _flush(self, last: int) -> None:
        parts: dict[tuple[str, str], list] = {}
        keep = []
        for item in self._chunks:
            if item[0] <= last:
                parts.setdefault((item[1], item[2]), []).append(item[3])
            else:
                keep.append(item)
        self._chunks = keep
        if self._pool is None:
            self.folder.write(parts, self._first, last, self.time)
        else:
            # the last flush, with no step beside it, writes a part per CPU at once, as
            # ours' does
            threads = usable_cpus() if last == self.steps - 1 else 1
            self._pending.append(self._pool.submit(self.folder.write, parts, self._first,
                                                   last, self.time, threads))
        self._first = last + 1

    def close(self) -> None:
        """Wait for every write (re-raising a write's error)."""
        for future in self._pending:
            future.result()
        if self._pool is not None:
            self._pool.shutdown()


@dataclass
class Trace:
    """What a traced run saw, step by step: household net draw [steps, n] kW, market price
    [steps, markets] currency/kWh (nan where nothing traded), substation [steps] kW."""

    net_kw: np.ndarray
    price: np.ndarray
    substation_kw: np.ndarray
    bill: np.ndarray | None = None  # [steps, n] currency


# -- the array layout ---------------------------------------------------------------------
class GroupSim(mosaik_api_v3.Simulator):
    """Households as arrays: one entity per group of microgrids (rows given at create)."""

    def __init__(self) -> None:
        super().__init__({"type": "time-based", "models": {"Group": {
            "public": True, "params": ["rows"], "attrs": ["bids", "fills", "p_kw", "q_kvar"]}}})
        self.fleets: dict[str, Fleet] = {}
        self.connection: dict[str, np.ndarray] = {}  # each entity's households' connections
        self.out: dict[str, dict[str, object]] = {}

    def init(self, sid, time_resolution=1.0, homes=None, steps=0, n_conn=0,  # noqa: ANN001
             trace=None, records=None):  # noqa: ANN001, ANN201
        self.homes, self.steps, self.n_conn, self.trace = homes, steps, n_conn, trace
        self.records = records
        self.step_s = int(homes.dt_s)
        return self.meta

    def create(self, num, model, rows=()):  # noqa: ANN001, ANN201
        eid = f"G{len(self.fleets)}"
        self.fleets[eid] = Fleet(self.homes, np.asarray(rows))
        self.connection[eid] = self.homes.connection[self.fleets[eid].rows]
        return [{"eid": eid, "type": model}]

    def step(self, time_s, inputs, max_advance):  # noqa: ANN001, ANN201
        t = time_s // self.step_s
        for eid, fleet in self.fleets.items():
            out = self.out[eid] = {"bids": (), "p_kw": (), "q_kvar": ()}
            filled = next(iter(inputs.get(eid, {}).get("fills", {None: ()}).values()))
            if filled:  # step t - 1 cleared: dispatch it
                p, q = fleet.dispatch(filled[0], filled[1])
                conn = self.connection[eid]
                if self.records is not None:
                    self.records.add_households(
                        t - 1, eid, household_rows(fleet, filled, self.homes.carbon[t - 1],
                                                   np.nan), conn)
                out["p_kw"] = np.bincount(conn, p, self.n_conn)
                out["q_kvar"] = np.bincount(conn, q, self.n_conn)
                if self.trace is not None:
                    self.trace.net_kw[t - 1, fleet.rows] = fleet.net_kw
                    self.trace.bill[t - 1, fleet.rows] = fleet.bill
            if t < self.steps:
                out["bids"] = fleet.decide(t)
        return time_s + self.step_s

    def get_data(self, outputs):  # noqa: ANN001, ANN201
        return {eid: {a: self.out[eid][a] for a in attrs} for eid, attrs in outputs.items()}


class GroupMarketSim(mosaik_api_v3.Simulator):
    """One entity per group: the group's microgrids cleared by one double-auction call."""

    def __init__(self) -> None:
        super().__init__({"type": "time-based", "models": {"Market": {
            "public": True, "params": ["rows"], "attrs": ["bids", "fills"]}}})
        self.market: dict[str, np.ndarray] = {}
        self.fills: dict[str, tuple] = {}

    def init(self, sid, time_resolution=1.0, homes=None, trace=None,  # noqa: ANN001
             records=None):  # noqa: ANN001, ANN201
        self.homes, self.trace, self.records = homes, trace, records
        self.rows: dict[str, np.ndarray] = {}
        self.auction = DoubleAuction(**homes.auction)
        self.step_s = int(homes.dt_s)
        return self.meta

    def create(self, num, model, rows=()):  # noqa: ANN001, ANN201
        eid = f"M{len(self.market)}"
        self.rows[eid] = np.asarray(rows)
        self.market[eid] = self.homes.market[self.rows[eid]]
        return [{"eid": eid, "type": model}]

    def step(self, time_s, inputs, max_advance):  # noqa: ANN001, ANN201
        for eid, market in self.market.items():
            bids = next(iter(inputs.get(eid, {}).get("bids", {None: ()}).values()))
            self.fills[eid] = ()  # () for "nothing cleared": mosaik warns on None
            if bids:
                cleared = clear(self.auction, market, *bids)
                self.fills[eid] = fills(cleared)
                t = time_s // self.step_s
                if self.trace is not None:
                    self.trace.price[t, np.unique(market)] = cleared.market_price
                if self.records is not None:
                    self.records.add(t, eid, market_rows(t, self.rows[eid], market, *bids,
                                                         cleared, np.unique(market)))
        return time_s + self.step_s

    def get_data(self, outputs):  # noqa: ANN001, ANN201
        return {eid: {"fills": self.fills[eid]} for eid in outputs}


# -- the per-household layout ---------------------------------------------------------------
class HouseSim(mosaik_api_v3.Simulator):
    """Every household an entity; the simulator steps them all in one batch."""

    def __init__(self) -> None:
        super().__init__({"type": "time-based", "models": {"House": {
            "public": True, "params": [],
            "attrs": ["bid_kwh", "limit_price", "fills", "p_kw", "q_kvar"]}}})
        self.eids: list[str] = []

    def init(self, sid, time_resolution=1.0, homes=None, steps=0, n_conn=0,  # noqa: ANN001
             trace=None):  # noqa: ANN001, ANN201
        self.sid, self.homes, self.steps, self.trace = sid, homes, steps, trace
        self.step_s = int(homes.dt_s)
        return self.meta

    def create(self, num, model):  # noqa: ANN001, ANN201
        start = len(self.eids)
        new = [f"H{start + k}" for k in range(num)]
        self.eids += new
        return [{"eid": e, "type": model} for e in new]

    def setup_done(self):  # noqa: ANN201
        n = len(self.eids)
        self.fleet = Fleet(self.homes, np.arange(n))
        self.full = [f"{self.sid}.{e}" for e in self.eids]
        self.out = {k: np.full(n, np.nan) for k in ("bid_kwh", "limit_price", "p_kw",
                                                    "q_kvar")}
        self.index = {e: k for k, e in enumerate(self.eids)}

    def step(self, time_s, inputs, max_advance):  # noqa: ANN001, ANN201
        t = time_s // self.step_s
        # each house reads its own fill from its market's answer (one dict per market)
        fills = [next(iter(inputs[e]["fills"].values())) if e in inputs else {}
                 for e in self.eids]
        if fills[0]:
            traded = np.array([f[k][0] for f, k in zip(fills, self.full)])
            payment = np.array([f[k][1] for f, k in zip(fills, self.full)])
            self.out["p_kw"], self.out["q_kvar"] = self.fleet.dispatch(traded, payment)
            if self.trace is not None:
                self.trace.net_kw[t - 1] = self.fleet.net_kw
                self.trace.bill[t - 1] = self.fleet.bill
        else:
            self.out["p_kw"] = self.out["q_kvar"] = np.full(len(self.eids), np.nan)
        if t < self.steps:
            self.out["bid_kwh"], self.out["limit_price"] = self.fleet.decide(t)
        else:
            self.out["bid_kwh"] = self.out["limit_price"] = np.full(len(self.eids), np.nan)
        return time_s + self.step_s

    def get_data(self, outputs):  # noqa: ANN001, ANN201
        index, out = self.index, self.out
        return {eid: {a: float(out[a][index[eid]]) for a in attrs}
                for eid, attrs in outputs.items()}


class HouseMarketSim(mosaik_api_v3.Simulator):
    """One double-auction entity per microgrid, its orders arriving house by house; its
    answer maps each house (full id) to (filled kWh, payment)."""

    def __init__(self) -> None:
        super().__init__({"type": "time-based", "models": {"Market": {
            "public": True, "params": ["market"], "attrs": ["bid_kwh", "limit_price",
                                                            "fills"]}}})
        self.fills: dict[str, dict[str, tuple[float, float]]] = {}
        self.ids: dict[str, int] = {}

    def init(self, sid, time_resolution=1.0, homes=None, trace=None):  # noqa: ANN001, ANN201
        self.auction = DoubleAuction(**homes.auction)
        self.trace, self.step_s = trace, int(homes.dt_s)
        return self.meta

    def create(self, num, model, market=0):  # noqa: ANN001, ANN201
        eid = f"M{len(self.ids)}"
        self.ids[eid] = market
        return [{"eid": eid, "type": model}]

    def step(self, time_s, inputs, max_advance):  # noqa: ANN001, ANN201
        for eid, attrs in inputs.items():
            bids, limits = attrs["bid_kwh"], attrs["limit_price"]
            keys = list(bids)
            quantity = np.array([bids[k] for k in keys])
            self.fills[eid] = {}  # {} for "nothing cleared": mosaik warns on None
            if np.isnan(quantity).any():  # the extra last time: nothing to clear
                continue
            cleared = clear(self.auction, np.zeros(len(keys), dtype=np.int64), quantity,
                            np.array([limits[k] for k in keys]))
            self.fills[eid] = dict(zip(keys, zip(cleared.filled_kwh.tolist(),
                                                 cleared.payment.tolist())))
            if self.trace is not None:
                self.trace.price[time_s // self.step_s, self.ids[eid]] = \
                    cleared.market_price[0]
        return time_s + self.step_s

    def get_data(self, outputs):  # noqa: ANN001, ANN201
        return {eid: {"fills": self.fills.get(eid, {})} for eid in outputs}


# -- the grid ---------------------------------------------------------------------------------
class GridSim(mosaik_api_v3.Simulator):
    """The feeder, one entity: injections arrive as arrays per connection (array layout) or
    as one float per house (per-household layout, summed here per connection), and are
    solved by OpenDSS (`grid="opendss"`, its default tolerance, controls frozen) or by our
    power flow at batch 1 warm-started from the last step (`grid="powerflow"`)."""

    def __init__(self) -> None:
        super().__init__({"type": "time-based", "models": {"Grid": {
            "public": True, "params": ["houses"], "attrs": ["p_kw", "q_kvar", "v_min_pu"]}}})
        self.v_min = 1.0

    def init(self, sid, time_resolution=1.0, feeder=None, connections=(),  # noqa: ANN001
             homes=None, grid="opendss", trace=None, records=None):  # noqa: ANN001, ANN201
        if feeder.shaped:
            raise NotImplementedError("the peer's grid has no daily generation shapes")
        self.kind, self.trace, self.step_s = grid, trace, int(homes.dt_s)
        self.records, self.nodes = records, feeder.nodes
        self.conn_base_v = feeder.connection_bases_v(connections)
        self.n_conn = len(connections)
        self.house_conn: dict[str, int] = {}
        if grid == "opendss":
            from grid.reference import OpenDSSReference

            self.ref = OpenDSSReference(feeder, connections, tolerance=1e-4)
            self.ref.set_case(0.0)  # households replace the feeder's own loads
            self.base = feeder.node_base_kv * 1e3
        else:
            from grid import PowerFlow

            self.pf = PowerFlow(feeder, connections, device="cpu")
            self.warm = None
        return self.meta

    def create(self, num, model, houses=None):  # noqa: ANN001, ANN201
        self.house_conn = houses or {}  # each house's connection, by its full id
        return [{"eid": "G0", "type": model}]

    def _sum(self, values: dict[str, object]) -> np.ndarray:
        total = np.zeros(self.n_conn)
        for src, value in values.items():
            if isinstance(value, np.ndarray):
                total += value
            else:
                total[self.house_conn[src]] += value
        return total

    def step(self, time_s, inputs, max_advance):  # noqa: ANN001, ANN201
        attrs = inputs.get("G0", {})
        p_in = attrs.get("p_kw", {})
        first = next(iter(p_in.values()), ())
        if not isinstance(first, np.ndarray) and (first == () or math.isnan(first)):
            return time_s + self.step_s  # time 0: nothing dispatched yet
        p, q = self._sum(p_in), self._sum(attrs["q_kvar"])
        if self.kind == "opendss":
            self.ref.set_case(0.0, p, q)
            v, _ = self.ref.solve()
            self.v_min = float(np.nanmin(np.abs(v) / self.base))
            substation = self.ref.powers()[0].real if self.trace is not None else 0.0
        else:
            result = self.pf.solve(torch.as_tensor(p[None]), torch.as_tensor(q[None]),
                                   load_scale=0.0, initial=self.warm)
            self.warm = result.u if bool(result.converged[0]) else None
            self.v_min = float(np.nanmin(result.vmag_pu[0].numpy()))
            substation = float(result.substation_power[0].real)
            if self.records is not None:
                step = time_s // self.step_s - 1
                self.records.add(step, "grid", grid_rows(step, result, float(p.sum()),
                                                         self.nodes))
                self.records.voltages(step, np.abs(result.connection_voltages[0].numpy())
                                      / self.conn_base_v)
        if self.trace is not None:
            self.trace.substation_kw[time_s // self.step_s - 1] = substation
        return time_s + self.step_s

    def get_data(self, outputs):  # noqa: ANN001, ANN201
        return {"G0": {"v_min_pu": self.v_min}}


def groups(n_markets: int, entities: int) -> list[np.ndarray]:
    """The markets of each of `entities` groups: consecutive runs, dealt out evenly."""
    return np.array_split(np.arange(n_markets), min(max(entities, 1), n_markets))


def run(homes: Homes, feeder: object, connections: list[str], steps: int,
        layout: str = "array", grid: str = "opendss", entities: int | None = None,
        trace: bool = False, records: Path | None = None, records_every: int = 24
        ) -> dict[str, object]:
    """Build and run the mosaik world of `layout` with `grid`; `entities` groups of
    microgrids in the array layout (default one per microgrid). With `records` (array
    layout, our power flow) it writes the tables ours writes there (`Records`, every
    `records_every` steps; the timed run waits for the last write). Returns set-up and
    run wall times (s), and the Trace when `trace`."""
    if layout not in LAYOUTS or grid not in GRIDS:
        raise ValueError(f"layout {layout!r} (one of {LAYOUTS}), grid {grid!r} (one of {GRIDS})")
    if records is not None and (layout, grid) != ("array", "powerflow"):
        raise ValueError("records: the array layout with our power flow only (the grid "
                         f"tables are our power flow's), not {layout!r} with {grid!r}")
    if records is not None and (homes.carbon is None or homes.time is None):
        raise ValueError("records: Homes needs carbon and time")
    n_markets = homes.n_markets
    writer = None if records is None else Records(records, homes.time, steps, records_every)
    record = None
    if trace:
        record = Trace(np.full((steps, homes.n), np.nan), np.full((steps, n_markets), np.nan),
                       np.full(steps, np.nan), np.full((steps, homes.n), np.nan))
    t0 = time.perf_counter()
    names = ("GroupSim", "GroupMarketSim") if layout == "array" else ("HouseSim",
                                                                       "HouseMarketSim")
    sims = {"Households": {"python": f"{__name__}:{names[0]}"},
            "Markets": {"python": f"{__name__}:{names[1]}"},
            "Grid": {"python": f"{__name__}:GridSim"}}
    world = mosaik.World(sims, skip_greetings=True, configure_logging=False)
    kw = {} if writer is None else {"records": writer}
    house_sim = world.start("Households", homes=homes, steps=steps, n_conn=len(connections),
                            trace=record, **kw)
    market_sim = world.start("Markets", homes=homes, trace=record, **kw)
    grid_sim = world.start("Grid", feeder=feeder, connections=connections, homes=homes,
                           grid=grid, trace=record, **kw)
    if layout == "array":
        (net,) = grid_sim.Grid.create(1)
        for markets in groups(n_markets, n_markets if entities is None else entities):
            rows = np.flatnonzero(np.isin(homes.market, markets))
            group = house_sim.Group(rows=rows)
            market = market_sim.Market(rows=rows)
            world.connect(group, market, "bids")
            world.connect(market, group, "fills", time_shifted=True,
                          initial_data={"fills": ()})
            world.connect(group, net, "p_kw", "q_kvar")
    else:
        houses = house_sim.House.create(homes.n)
        (net,) = grid_sim.Grid.create(1, houses={h.full_id: int(c) for h, c in
                                                 zip(houses, homes.connection)})
        markets = [market_sim.Market(market=m) for m in range(n_markets)]
        for k, house in enumerate(houses):
            market = markets[int(homes.market[k])]
            world.connect(house, market, "bid_kwh", "limit_price")
            world.connect(market, house, "fills", time_shifted=True,
                          initial_data={"fills": {}})
            world.connect(house, net, "p_kw", "q_kvar")
    t1 = time.perf_counter()
    # one time more than steps: the last step's fills, dispatch and power flow (see above)
    world.run(until=(steps + 1) * int(homes.dt_s), print_progress=False)
    if writer is not None:
        writer.close()
    t2 = time.perf_counter()
    out: dict[str, object] = {"setup_s": t1 - t0, "run_s": t2 - t1}
    if trace:
        out["trace"] = record
    return out
