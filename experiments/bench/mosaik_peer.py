"""The co-simulation benchmark's peer: the same job as a mosaik 3.6 scenario.

Three in-process mosaik simulators, written the way a mosaik user would:
- HouseholdSim: every household an entity (load, PV, a battery under the same
  self-consumption rule as ours), computed with numpy inside the simulator; bids and power
  leave it entity by entity through mosaik.
- MarketSim: one uniform-price double auction entity per 100 households (the same clearing
  function as ours), its price fed back to its households one step later.
- GridSim: OpenDSS IEEE 123 through OpenDSSDirect.py, one OpenDSS load per connection point
  carrying the households there, solved every step with controls frozen.

Nothing is recorded, which favours the peer.
"""

from __future__ import annotations

import time

import mosaik
import mosaik_api_v3
import numpy as np

from grid.reference import OpenDSSReference
from markets.double_auction import DoubleAuction
from markets.mechanism import Orders

STEP_S = 900

# The scenario is handed to the simulators through this module (they run in-process).
SETUP: dict[str, object] = {}


class HouseholdSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__({"type": "time-based", "models": {"House": {
            "public": True, "params": ["index"],
            "attrs": ["p_kw", "q_kvar", "bid_kwh", "limit_price", "price"]}}})
        self.eids: list[str] = []

    def init(self, sid, time_resolution=1.0, **params):  # noqa: ANN001, ANN201
        return self.meta

    def create(self, num, model, index=0):  # noqa: ANN001, ANN201
        start = len(self.eids)
        new = [f"H{start + k}" for k in range(num)]
        self.eids += new
        return [{"eid": e, "type": model} for e in new]

    def setup_done(self):  # noqa: ANN201
        s = SETUP
        n = len(self.eids)
        self.load, self.pv = s["load_kw"], s["pv_kw"]
        self.cap, self.rate = s["battery_kwh"], s["battery_kw"]
        self.energy = self.cap * 0.5
        self.eta = 0.95
        self.out = {k: np.zeros(n) for k in ("p_kw", "q_kvar", "bid_kwh", "limit_price")}

    def step(self, time_s, inputs, max_advance):  # noqa: ANN001, ANN201
        t = time_s // STEP_S
        dt_h = STEP_S / 3600.0
        net = self.load[:, t] - self.pv[:, t]
        lo = np.maximum(-self.rate, -(self.energy - 0.1 * self.cap) * self.eta / dt_h)
        hi = np.minimum(self.rate, (0.9 * self.cap - self.energy) / (self.eta * dt_h))
        battery = np.clip(-net, np.minimum(lo, 0), np.maximum(hi, 0))
        self.energy = self.energy + (np.maximum(battery, 0) * self.eta
                                     + np.minimum(battery, 0) / self.eta) * dt_h
        residual = net + battery
        self.out["p_kw"] = -residual
        self.out["q_kvar"] = -self.load[:, t] * np.tan(np.arccos(0.95))
        self.out["bid_kwh"] = residual * dt_h
        self.out["limit_price"] = np.where(residual > 0, 0.30, 0.08)
        return time_s + STEP_S

    def get_data(self, outputs):  # noqa: ANN001, ANN201
        index = {e: k for k, e in enumerate(self.eids)}
        return {eid: {a: float(self.out[a][index[eid]]) for a in attrs if a in self.out}
                for eid, attrs in outputs.items()}


class MarketSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__({"type": "time-based", "models": {"Market": {
            "public": True, "params": [], "attrs": ["bid_kwh", "limit_price", "price"]}}})
        self.prices: dict[str, float] = {}

    def init(self, sid, time_resolution=1.0, **params):  # noqa: ANN001, ANN201
        return self.meta

    def create(self, num, model):  # noqa: ANN001, ANN201
        start = len(self.prices)
        new = [f"M{start + k}" for k in range(num)]
        self.prices |= {e: 0.0 for e in new}
        return [{"eid": e, "type": model} for e in new]

    def step(self, time_s, inputs, max_advance):  # noqa: ANN001, ANN201
        for eid, attrs in inputs.items():
            bids = attrs.get("bid_kwh", {})
            limits = attrs.get("limit_price", {})
            keys = list(bids)
            result = DoubleAuction().clear(Orders(
                np.arange(len(keys)), np.zeros(len(keys), dtype=int),
                np.array([bids[k] for k in keys]), np.array([limits[k] for k in keys]), 1))
            self.prices[eid] = float(np.nan_to_num(result.market_price[0]))
        return time_s + STEP_S

    def get_data(self, outputs):  # noqa: ANN001, ANN201
        return {eid: {"price": self.prices[eid]} for eid in outputs}


class GridSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__({"type": "time-based", "models": {"Grid": {
            "public": True, "params": [], "attrs": ["p_kw", "q_kvar", "v_min_pu"]}}})
        self.v_min = 1.0

    def init(self, sid, time_resolution=1.0, **params):  # noqa: ANN001, ANN201
        return self.meta

    def create(self, num, model):  # noqa: ANN001, ANN201
        s = SETUP
        self.ref = OpenDSSReference(s["feeder"], s["connections"], tolerance=1e-4)
        self.ref.set_case(0.0)  # households replace the feeder's own loads
        self.connection = {f"HouseholdSim-0.H{k}": c for k, c in enumerate(s["connection"])}
        self.n_conn = len(s["connections"])
        self.base = s["feeder"].node_base_kv * 1e3
        return [{"eid": "G0", "type": model}]

    def step(self, time_s, inputs, max_advance):  # noqa: ANN001, ANN201
        p, q = np.zeros(self.n_conn), np.zeros(self.n_conn)
        attrs = inputs.get("G0", {})
        for src, value in attrs.get("p_kw", {}).items():
            p[self.connection[src]] += value
        for src, value in attrs.get("q_kvar", {}).items():
            q[self.connection[src]] += value
        self.ref.set_case(0.0, p, q)
        v, _ = self.ref.solve()
        self.v_min = float(np.nanmin(np.abs(v) / self.base))
        return time_s + STEP_S

    def get_data(self, outputs):  # noqa: ANN001, ANN201
        return {"G0": {"v_min_pu": self.v_min}}


def run(households: dict[str, np.ndarray], feeder: object, connections: list[str],
        steps: int, per_market: int = 100) -> dict[str, float]:
    """Build and run the mosaik world; returns setup and run wall times (s)."""
    SETUP.clear()
    SETUP.update(households, feeder=feeder, connections=connections)
    n = len(households["connection"])
    t0 = time.perf_counter()
    sim_config = {"HouseholdSim": {"python": f"{__name__}:HouseholdSim"},
                  "MarketSim": {"python": f"{__name__}:MarketSim"},
                  "GridSim": {"python": f"{__name__}:GridSim"}}
    world = mosaik.World(sim_config, skip_greetings=True, configure_logging=False)
    homes = world.start("HouseholdSim").House.create(n)
    markets = world.start("MarketSim").Market.create(-(-n // per_market))
    (grid,) = world.start("GridSim").Grid.create(1)
    for k, house in enumerate(homes):
        market = markets[k // per_market]
        world.connect(house, market, "bid_kwh", "limit_price")
        world.connect(market, house, "price", time_shifted=True, initial_data={"price": 0.0})
        world.connect(house, grid, "p_kw", "q_kvar")
    t1 = time.perf_counter()
    world.run(until=steps * STEP_S, print_progress=False)
    t2 = time.perf_counter()
    return {"setup_s": t1 - t0, "run_s": t2 - t1}


def households_for(n: int, load_kw: np.ndarray, pv_kw: np.ndarray, battery_kwh: np.ndarray,
                   battery_kw: np.ndarray, connection: np.ndarray) -> dict[str, np.ndarray]:
    """The per-household arrays the simulators read (the same data our scenario uses)."""
    return {"load_kw": load_kw[:n], "pv_kw": pv_kw[:n], "battery_kwh": battery_kwh[:n],
            "battery_kw": battery_kw[:n], "connection": connection[:n]}

