"""HouseholdShard: hundreds to thousands of households stepped as arrays.

Each household is a composition of devices (`agents.households.Households`: battery, EV,
heat pump, PV, generator, flexible load, any of them absent) with its own load, PV and car
use, a grid connection, a microgrid market, a retailer and a policy. The device code is the
same that GradMAP differentiates through. In each step the shard

- observes: takes in this step's price signals (prices and forecasts) and the previous
  step's grid state, so each household knows its own prices and the voltage at its own
  connection, and nothing of other households;
- decides: runs each household's policy (`rule`, `mpc`, `bank`, `external` or `bidder`,
  see cosim.config) on that local view, and bids each household's net draw into its market
  at its own marginal value of the energy (agents.households.orders), or a bidder's at the
  price its driver chose;
- dispatches: what its order did not fill, the household's reserve covers or absorbs
  (within device limits); the grid takes the rest, and its meter records it;
- settles: books each household's bill (market payment plus `energy_bill` at its
  retailer's prices) and records everything.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from agents.households import (
    ACTIONS,
    HouseholdInputs,
    Households,
    HouseholdState,
    Setpoints,
    observe,
)
from agents.households.bill import energy_bill
from agents.households.dataset import HouseholdSeries
from agents.households.orders import Reserve, cover, order
from agents.policies.rule_based import self_consumption_reserve
from cosim.actors.base import Actor, PhaseOutput, only
from cosim.messages import (
    ActionBatch,
    BidBatch,
    ClearingResult,
    GridState,
    InjectionBatch,
    MarketData,
    MemberState,
    Message,
    MessageError,
    MeterBatch,
    PriceSignal,
    UpstreamPrices,
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
    policy: np.ndarray  # per home: "rule", "mpc", "bank", "external" or "bidder"
    mpc: dict[str, object]  # MPCConfig keyword arguments
    bank: object | None  # the `bank` households' PolicyBank, in household order

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


def _union(rows: list[torch.Tensor]) -> torch.Tensor | None:
    """The households in any of `rows` (boolean masks); None for no masks."""
    return torch.stack(rows).any(0) if rows else None


def _merge(base: Setpoints, rows: torch.Tensor, values: Setpoints) -> Setpoints:
    """`base` with the households at `rows` set to `values` (full-length tensors)."""
    return Setpoints(*(torch.where(rows, v, b) for b, v in zip(base, values)))


class HouseholdShard(Actor):
    SUBSCRIBES = {"observe": ("price", "grid"), "decide": ("actions",),
                  "dispatch": ("clearing",), "settle": ("exogenous", "grid", "upstream")}
    PUBLISHES = {"decide": ("bids",), "dispatch": ("injections", "meters"),
                 "settle": ("telemetry",)}

    def __init__(self, name: str, seed: int, homes: HouseholdArrays, dt_s: float,
                 telemetry_every: int = 0) -> None:
        super().__init__(name, seed)
        # steps between MemberState messages (0: none; an aggregator leading asks for them)
        self.telemetry_every = telemetry_every
        self.homes = homes
        self.dt_h = dt_s / 3600.0
        self.households = Households.create(homes.household.tolist(), **homes.devices)
        self.series = homes.series(self.dt_h)
        self.state = self.households.initial_state(self.dt_h, **homes.initial)
        self.tan_phi = float(np.tan(np.arccos(homes.power_factor)))
        # the grid connections this shard's households are at, and each household's among
        # them: the shard sends the grid its sums per connection (a few hundred rows
        # whatever the households: 100,000 households' rows cost a two-node run 2.4 MB per
        # host and step through Ray's object store)
        self._connections, self._at_connection = np.unique(homes.connection, return_inverse=True)
        n = len(homes.household)
        policy = homes.policy
        self.rows = {kind: torch.as_tensor(policy == kind) for kind in np.unique(policy)}
        self._mpc = self._bank = None
        # the rows the driver of Simulation.step sets (actions or bids)
        self._driven_rows = np.flatnonzero(np.isin(policy, ("external", "bidder")))
        if "mpc" in self.rows:
            from agents.policies.mpc import MPC, MPCConfig  # cvxpy only where it is used

            where = np.flatnonzero(policy == "mpc")
            self._mpc = (where, MPC(self.households.select(where), self.dt_h,
                                    MPCConfig(**homes.mpc)), self.series.select(where))
        if "bank" in self.rows:
            self._bank = (np.flatnonzero(policy == "bank"), homes.bank)
        # the rows acting on a bank's or the driver's actions (None: none), and whether
        # they are all of them: then a step's setpoints need no merging (the RL case)
        self._acting = _union([self.rows[k] for k in ("bank", "external") if k in self.rows])
        self._all_acting = self._acting is not None and bool(self._acting.all())
        # the voltage each household last saw at its connection (1 p.u. before the first
        # power flow; kept through a step whose power flow did not converge)
        self._voltage = np.ones(n)
        self._rows_of: dict[tuple[str, bytes], tuple[np.ndarray, np.ndarray] | None] = {}
        self._step = -1
        self._prices: tuple[np.ndarray, np.ndarray] | None = None  # this step's buy, sell
        self._forecast: tuple[np.ndarray, np.ndarray] | None = None  # [n, horizon] each
        # committed setpoints, reserve, order quantity (kWh) and limit price of this step
        self._decided: tuple[Setpoints, Reserve, torch.Tensor, torch.Tensor] | None = None
        self._dispatched: dict[str, object] | None = None
        self._costs: dict[str, np.ndarray] | None = None
        self._at: tuple[int, HouseholdInputs] | None = None  # the step's inputs (`_inputs`)

    # -- phases -------------------------------------------------------------------
    def observe(self, step: int, inbox: list[Message]) -> list[Message]:
        self._household_prices(step, only(inbox, PriceSignal))
        for state in only(inbox, GridState):  # none before the first power flow
            v = state.connection_v_pu.reshape(-1)[self.homes.connection]
            self._voltage = np.where(np.isfinite(v), v, self._voltage)
        self._step = step
        return []

    def _inputs(self, step: int) -> HouseholdInputs:
        """The households' inputs of `step`, sliced once: four phases read them."""
        if self._at is None or self._at[0] != step:
            self._at = (step, self.series.at(step))
        return self._at[1]

    def observation(self) -> tuple[np.ndarray, np.ndarray]:
        """(household ids, each one's local observation `[n, len(FIELDS)]`) for the step
        just observed: what its policy sees."""
        return self.homes.household, self._observe().numpy()

    def decide(self, step: int, inbox: list[Message]) -> list[Message]:
        if step != self._step:
            raise RuntimeError(f"shard {self.name}: decide at step {step} before observing it")
        hh, x, dt_h = self.households, self._inputs(step), self.dt_h
        buy, sell = (torch.from_numpy(p) for p in self._prices)
        # only the rule leaves a reserve to the market; a bidder's devices follow it too
        ruled = _union([self.rows[k] for k in ("rule", "bidder") if k in self.rows])
        if ruled is not None:
            committed, reserve = self_consumption_reserve(hh, self.state, x, dt_h, buy, sell)
        elif self._all_acting:  # every row acts on actions below: nothing to merge into
            committed = None
        else:  # every row is set by another policy below
            committed = Setpoints(*(torch.zeros_like(buy) for _ in ACTIONS))
        if "mpc" in self.rows:
            where, mpc, series = self._mpc
            planned = mpc.act(_rows(self.state, where), series.window(step, mpc.config.horizon),
                              self._forecast[0][where], self._forecast[1][where])
            index = (torch.as_tensor(where),)
            committed = Setpoints(*(c.index_put(index, p) for c, p in zip(committed, planned)))
        driven = self._driven(step, only(inbox, ActionBatch))
        action = self._actions(driven)
        if action is not None:
            chosen = hh.from_action(action, self.state, x, dt_h)
            committed = chosen if committed is None else _merge(committed, self._acting, chosen)
        if ruled is None:
            reserve = Reserve.none(committed)
        elif not bool(ruled.all()):
            reserve = Reserve(_merge(committed, ruled, reserve.lo),
                              _merge(committed, ruled, reserve.hi))
        quantity, limit = order(hh, self.state, x, committed, reserve, buy, sell, dt_h)
        if "bidder" in self.rows:  # its own price between its export and import prices
            where = self.rows["bidder"]
            bid = torch.from_numpy(driven[1])
            limit = torch.where(where, sell + bid.nan_to_num(0.0) * (buy - sell), limit)
        self._decided = (committed, reserve, quantity, limit)
        return [BidBatch(step, self.name, household=self.homes.household,
                         market=self.homes.market, quantity_kwh=quantity.numpy(),
                         limit_price=limit.numpy())]

    def dispatch(self, step: int, inbox: list[Message]) -> list[Message]:
        clearing = self._check_clearing(step, inbox)
        committed, reserve, quantity, _ = self._decided
        hh, x, dt_h = self.households, self._inputs(step), self.dt_h
        traded = torch.from_numpy(clearing.traded_kwh.copy())
        sp = cover(committed, reserve, quantity - traded, dt_h)
        net = hh.net_kw(sp, x)
        served = hh.flexible_load.inflexible_kw(x.load_kw) + sp.flexible_kw
        q_kvar = (served + sp.heat_pump_kw).numpy() * self.tan_phi
        grid_kwh = net.numpy() * dt_h - clearing.traded_kwh
        self.state = hh.step(self.state, sp, x, dt_h)
        self._dispatched = dict(clearing=clearing, setpoints=sp, net=net.numpy(),
                                served=served.numpy(), q_kvar=q_kvar, grid_kwh=grid_kwh)
        width = len(self._connections)
        return [InjectionBatch(step, self.name, connection=self._connections,
                               p_kw=-np.bincount(self._at_connection, net.numpy(), width),
                               q_kvar=-np.bincount(self._at_connection, q_kvar, width)),
                MeterBatch(step, self.name, household=self.homes.household, grid_kwh=grid_kwh)]

    def settle(self, step: int, inbox: list[Message]) -> PhaseOutput:
        d = self._dispatched
        clearing, sp, grid_kwh = d["clearing"], d["setpoints"], d["grid_kwh"]
        carbon = only(inbox, MarketData)[0].carbon_intensity
        buy, sell, grid_share = self._upstream_prices(step, only(inbox, UpstreamPrices))
        x, hh, dt_h = self._inputs(step), self.households, self.dt_h
        bill = clearing.payment + energy_bill(grid_kwh, buy, sell)
        kw = {name: getattr(sp, name).numpy() for name in sp._fields}
        curtailed = (hh.pv.available(x.pv_kw) - sp.pv_kw).numpy()
        operating = hh.operating_cost(sp, dt_h).numpy()
        discomfort = hh.discomfort_kh(self.state, x, dt_h).numpy()
        shortfall = hh.ev.departure_shortfall_kwh(self.state.ev_kwh, x.ev()).numpy()
        emissions = np.maximum(grid_kwh, 0.0) * grid_share * carbon
        self._costs = dict(bill=bill, operating_cost=operating, discomfort_kh=discomfort,
                           ev_shortfall_kwh=shortfall, emissions_kg=emissions)
        if self.recording:
            grid = only(inbox, GridState)[0]
            self.record(
                "households", step=step, household=self.homes.household, load_kw=d["served"],
                pv_kw=kw["pv_kw"], curtailed_kw=curtailed, battery_kw=kw["battery_kw"],
                ev_kw=kw["ev_kw"], heat_pump_kw=kw["heat_pump_kw"],
                generator_kw=kw["generator_kw"], net_kw=d["net"], q_kvar=d["q_kvar"],
                battery_energy_kwh=self.state.battery_kwh.numpy().copy(),
                ev_energy_kwh=self.state.ev_kwh.numpy().copy(),
                indoor_c=self.state.indoor_c.numpy().copy(),
                backlog_kwh=self.state.backlog_kwh.sum(-1).numpy(), discomfort_kh=discomfort,
                ev_shortfall_kwh=shortfall, bid_kwh=self._decided[2].numpy(),
                limit_price=self._decided[3].numpy(), traded_kwh=clearing.traded_kwh,
                price=clearing.price, payment=clearing.payment, rejected=clearing.rejected,
                grid_kwh=grid_kwh,
                import_price=buy, export_price=sell, cost=bill, operating_cost=operating,
                emissions_kg=emissions, voltage_pu=grid.connection_v_pu.reshape(-1)[
                    self.homes.connection])
        totals = {
            "load_kwh": float(d["served"].sum() * dt_h),
            "pv_kwh": float(kw["pv_kw"].sum() * dt_h),
            "curtailed_kwh": float(curtailed.sum() * dt_h),
            "battery_kwh": float(kw["battery_kw"].sum() * dt_h),
            "ev_kwh": float(kw["ev_kw"].sum() * dt_h),
            "heat_pump_kwh": float(kw["heat_pump_kw"].sum() * dt_h),
            "generator_kwh": float(kw["generator_kw"].sum() * dt_h),
            "import_kwh": float(np.maximum(grid_kwh, 0).sum()),
            "export_kwh": float(-np.minimum(grid_kwh, 0).sum()),
            "p2p_kwh": float(np.maximum(clearing.traded_kwh, 0).sum()),
            "household_cost": float(bill.sum()),
            "operating_cost": float(operating.sum()),
            "household_emissions_kg": float(emissions.sum()),
            "discomfort_kh": float(discomfort.sum()),
            "ev_shortfall_kwh": float(shortfall.sum()),
        }
        # the bill moves money between parties; wear and fuel leave the system, so they
        # are reported (operating_cost) but not booked in the ledger
        messages = []
        if self.telemetry_every and (step + 1) % self.telemetry_every == 0:
            st = self.state
            messages.append(MemberState(
                step, self.name, household=self.homes.household,
                battery_kwh=st.battery_kwh.numpy(), ev_kwh=st.ev_kwh.numpy(),
                indoor_c=st.indoor_c.numpy(), backlog_kwh=st.backlog_kwh.numpy()))
        return PhaseOutput(messages=messages, ledger={"households": -float(bill.sum())},
                           totals=totals)

    def costs(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(household ids, the cost terms of the step just settled: bill, operating_cost,
        discomfort_kh, ev_shortfall_kwh, emissions_kg, one value per household)."""
        return self.homes.household, self._costs

    # -- helpers ------------------------------------------------------------------
    def _observe(self) -> torch.Tensor:
        buy, sell = (torch.from_numpy(p) for p in self._prices)
        return observe(self.households, self.state, self._inputs(self._step), buy, sell,
                       torch.from_numpy(self._voltage), self.dt_h)

    def _actions(self, driven: tuple[np.ndarray, np.ndarray] | None) -> torch.Tensor | None:
        """The raw actions `[n, len(ACTIONS)]` of the households acting on a policy bank's
        or the driver's actions this step (`self._acting`; zeros elsewhere); None if there
        are none."""
        if self._acting is None:
            return None
        if self._bank is None and self._all_acting:  # every row driven: as given
            return torch.from_numpy(driven[0])
        action = torch.zeros(len(self.homes.household), len(ACTIONS), dtype=torch.float64)
        if self._bank is not None:
            where, bank = self._bank
            with torch.no_grad():
                action[where] = bank(self._observe()[where]).to(action.dtype)
        if "external" in self.rows:
            where = np.flatnonzero(self.rows["external"].numpy())
            action[where] = torch.from_numpy(driven[0][where])
        return action

    def _driven(self, step: int, batches: list[ActionBatch]
                ) -> tuple[np.ndarray, np.ndarray] | None:
        """The driver's (actions `[n, len(ACTIONS)]`, bids `[n]`) for this shard's rows,
        from its one ActionBatch (rows it does not drive hold zeros and NaN); None when
        it drives none."""
        where = self._driven_rows
        if len(where) == 0:
            return None
        if len(batches) != 1 or not np.array_equal(batches[0].household,
                                                   self.homes.household[where]):
            raise MessageError(f"shard {self.name} at step {step}: its {len(where)} "
                               "households with policy \"external\" or \"bidder\" need "
                               "actions or bids (Simulation.step(actions, bids))")
        n = len(self.homes.household)
        action, bid = np.zeros((n, len(ACTIONS))), np.full(n, np.nan)
        action[where], bid[where] = batches[0].action, batches[0].bid
        return action, bid

    def _household_prices(self, step: int, signals: list[PriceSignal]) -> None:
        """Each household's import and export price (and their forecasts, for MPC), from
        its retailer's signal."""
        n = len(self.homes.household)
        buy, sell = np.full(n, np.nan), np.full(n, np.nan)
        forecasts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for signal in signals:
            rows = self._signal_rows(step, signal)
            if rows is None:
                continue
            mine, where = rows
            buy[mine], sell[mine] = signal.buy_price[where], signal.sell_price[where]
            if self._mpc is not None:
                forecasts.append((mine, signal.buy_forecast[where], signal.sell_forecast[where]))
        missing = np.isnan(buy)
        if missing.any():
            k = int(np.flatnonzero(missing)[0])
            raise MessageError(f"household {self.homes.household[k]} (shard {self.name}): no "
                               f"price signal from its retailer {self.homes.retailer[k]!r}")
        self._prices = (buy, sell)
        if self._mpc is not None:
            horizon = min(f[1].shape[1] for f in forecasts)
            buy_f, sell_f = np.empty((n, horizon)), np.empty((n, horizon))
            for mine, b, s in forecasts:
                buy_f[mine], sell_f[mine] = b[:, :horizon], s[:, :horizon]
            self._forecast = (buy_f, sell_f)

    def _signal_rows(self, step: int, signal: PriceSignal | UpstreamPrices
                     ) -> tuple[np.ndarray, np.ndarray] | None:
        """(the households the signal's sender retails, the signal row of each one's
        market), None if it retails none here; worked out once per sender and markets."""
        key = (signal.sender, signal.market.tobytes())
        if key not in self._rows_of:
            mine = np.flatnonzero(self.homes.retailer == signal.sender)
            where = np.minimum(np.searchsorted(signal.market, self.homes.market[mine]),
                               len(signal.market) - 1)
            if not (signal.market[where] == self.homes.market[mine]).all():
                raise MessageError(f"{type(signal).__name__} from {signal.sender!r} at step "
                                   f"{step} has no price for a market of shard {self.name}")
            self._rows_of[key] = (mine, where) if len(mine) else None
        return self._rows_of[key]

    def _upstream_prices(self, step: int, layers: list[UpstreamPrices]
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(import price, export price, share of imports from the grid) each household's
        metered energy is billed at: its retailer's prices, or where its retailer pools
        the microgrids' residuals (MAHTM), the mix its market's residual got."""
        buy, sell = (p.copy() for p in self._prices)
        grid_share = np.ones(len(buy))
        for layer in layers:
            rows = self._signal_rows(step, layer)  # the same rows as its price signal's
            if rows is None:
                continue
            mine, where = rows
            buy[mine], sell[mine] = layer.import_price[where], layer.export_price[where]
            grid_share[mine] = layer.import_grid_share[where]
        return buy, sell, grid_share

    def _check_clearing(self, step: int, inbox: list[Message]) -> ClearingResult:
        results = [m for m in only(inbox, ClearingResult) if m.recipient == self.name]
        if len(results) != 1 or not np.array_equal(results[0].household, self.homes.household):
            raise MessageError(f"shard {self.name} at step {step}: expected one clearing result "
                               f"for its {len(self.homes.household)} households")
        return results[0]

    def state_dict(self) -> dict[str, object]:
        state = {name: t.numpy().copy() for name, t in self.state._asdict().items()}
        # what `observe` saw of the step about to be acted in: with it, a state taken
        # between a step's observation and its decision (`Simulation.snapshot`) restores
        # to the same point; a resume observes again and overwrites it
        observed = {"step": self._step, "prices": self._prices, "forecast": self._forecast}
        return super().state_dict() | {"households": state, "voltage": self._voltage.copy(),
                                       "observed": copy.deepcopy(observed)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        super().load_state_dict(state)
        self.state = HouseholdState(**{name: torch.from_numpy(np.array(value))
                                       for name, value in state["households"].items()})
        self._voltage = np.array(state["voltage"])
        observed = copy.deepcopy(state.get("observed", {}))  # (older checkpoints lack it)
        self._step = observed.get("step", -1)
        self._prices, self._forecast = observed.get("prices"), observed.get("forecast")


def _rows(state: HouseholdState, where: np.ndarray) -> HouseholdState:
    index = torch.as_tensor(where)
    return HouseholdState(*(t[index] for t in state))
