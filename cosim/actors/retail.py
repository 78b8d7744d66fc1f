"""Retailers: who sells households their grid energy, and at what price.

The Distributor retails at a (time-of-use) tariff and also buys the network's losses; an
Aggregator retails its portfolio at the wholesale price plus a margin (a dynamic tariff),
or at the tariff it picks each day as a Stackelberg leader, and trades the portfolio's
energy day-ahead and in imbalance. Both publish a PriceSignal per market
in the signal phase, with a forecast of their prices over the next steps, and book their
money in the settle phase from their customers' meters: the customers' `energy_bill`, less
the wholesale cost of the net energy.

Under MAHTM (`[markets] mechanism = "mahtm"`) the distributor is the third layer: it
prices grid energy at the wholesale price plus its carbon cost (feed-in at the tariff's
export price), and in the `upstream` phase pools the residual imports and exports its
customers' microgrids metered after their local markets (markets.mahtm.PoolMarket): what
one microgrid has left over, another buys at the pool's price, the rest goes to and from
the grid. Each microgrid's residual is then billed at the mix of pool and grid prices its
share got (UpstreamPrices, read by the shards), and only the grid's share emits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from agents.households.bill import energy_bill
from cosim.actors.base import Actor, PhaseOutput, only
from cosim.actors.households import HouseholdArrays
from cosim.messages import (
    GridState,
    MarketData,
    MemberState,
    Message,
    MeterBatch,
    PriceSignal,
    UpstreamPrices,
)
from markets.mahtm import PoolMarket, grid_prices
from markets.mechanism import Orders, Upstream
from markets.wholesale import persistence, settle


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

    def table(self) -> np.ndarray:
        """[steps, 2] (import, export) prices of the whole run, made once."""
        if self._table is None:
            self._table = np.array([self.prices(t) for t in range(self.steps)])
        return self._table

    def signal(self, step: int, inbox: list[Message]) -> list[Message]:
        buy, sell = self._prices = tuple(float(p) for p in self.table()[step])
        forecast = self._table[step: step + self.forecast_steps]  # [horizon, 2]
        n = len(self.markets)
        self.record("prices", step=step, source=self.name, import_price=buy, export_price=sell)
        return [PriceSignal(step, self.name, market=self.markets, buy_price=np.full(n, buy),
                            sell_price=np.full(n, sell),
                            buy_forecast=np.broadcast_to(forecast[:, 0], (n, len(forecast))),
                            sell_forecast=np.broadcast_to(forecast[:, 1], (n, len(forecast))))]

    def settle(self, step: int, inbox: list[Message]) -> PhaseOutput:
        grid_kwh, ids = self._metered(inbox)
        buy, sell = self.bill_prices(ids)
        wholesale = only(inbox, MarketData)[0].wholesale_price
        revenue = float(energy_bill(grid_kwh, buy, sell).sum())
        money = revenue - wholesale * float(grid_kwh.sum()) - self.extra_cost(step, inbox)
        return PhaseOutput(ledger={self.name: money})

    def bill_prices(self, households: np.ndarray) -> tuple[np.ndarray | float, ...]:
        """(import, export) price each customer's metered energy is billed at."""
        return self._prices

    def _metered(self, inbox: list[Message]) -> tuple[np.ndarray, np.ndarray]:
        """(grid kWh, household id) of this retailer's customers, from the meters."""
        meters = only(inbox, MeterBatch)
        mine = [self.customers[m.household] for m in meters]
        return (np.concatenate([m.grid_kwh[k] for m, k in zip(meters, mine)]),
                np.concatenate([m.household[k] for m, k in zip(meters, mine)]))

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
    the feeder's own loads draw. With `mahtm` settings (fee, gain, carbon_price) it is
    MAHTM's third layer instead (module docstring); `market` is every household's market,
    `wholesale` and `carbon` the run's series."""

    SUBSCRIBES = Retailer.SUBSCRIBES | {"upstream": ("meters",)}
    PUBLISHES = Retailer.PUBLISHES | {"upstream": ("upstream",)}

    def __init__(self, name: str, seed: int, n_markets: int, customers: np.ndarray,
                 dt_s: float, import_price: float, export_price: float,
                 peak_import_price: float | None, peak_hours: tuple[int, int],
                 hours: np.ndarray, forecast_steps: int,
                 mahtm: dict[str, float] | None = None, market: np.ndarray | None = None,
                 wholesale: np.ndarray | None = None, carbon: np.ndarray | None = None,
                 copies: int = 1) -> None:
        super().__init__(name, seed, n_markets, customers, dt_s, len(hours), forecast_steps)
        # copies of a scenario (cosim.scenario.build) pool their own microgrids only
        self.pool, self.pools = np.repeat(np.arange(copies), n_markets // copies), copies
        self.import_price, self.export_price = import_price, export_price
        self.peak_import_price, self.peak_hours = peak_import_price, peak_hours
        self.hours = np.asarray(hours)  # hour of day of each step
        self.layer3 = None
        if mahtm is not None:
            settings = dict(mahtm)
            self.carbon_price = settings.pop("carbon_price")
            self.layer3 = PoolMarket(**settings)
            self.market = np.asarray(market, dtype=np.int64)
            self.wholesale, self.carbon = np.asarray(wholesale), np.asarray(carbon)
            self._upstream: UpstreamPrices | None = None

    def prices(self, step: int) -> tuple[float, float]:
        if self.layer3 is not None:
            return grid_prices(float(self.wholesale[step]), float(self.carbon[step]),
                               self.carbon_price, self.export_price)
        start, end = self.peak_hours
        peak = self.peak_import_price is not None and start <= self.hours[step] < end
        return (self.peak_import_price if peak else self.import_price), self.export_price

    def upstream(self, step: int, inbox: list[Message]) -> list[Message]:
        """MAHTM layer 3: pool the microgrids' metered residuals, the rest to the grid."""
        if self.layer3 is None:
            return []
        grid_kwh, ids = self._metered(inbox)
        n, pool, pools = len(self.markets), self.pool, self.pools
        market = self.market[ids]
        imports = np.bincount(market, np.maximum(grid_kwh, 0.0), n)
        exports = np.bincount(market, np.maximum(-grid_kwh, 0.0), n)
        # one buy and one sell order per microgrid, all in one pool (one per copy)
        orders = Orders(np.r_[self.markets, self.markets], np.r_[pool, pool],
                        np.r_[imports, -exports], np.zeros(2 * n), pools)
        grid_buy, grid_sell = self._prices
        result = self.layer3.clear(orders, Upstream.flat(grid_buy, grid_sell, pools))
        # the pool matches pro rata, so every microgrid gets the same share of its imports
        # (exports) from it, at the pool's one posted buy (sell) price
        fill, price = result.filled_kwh, result.price

        def share(filled: np.ndarray, offered: np.ndarray) -> np.ndarray:
            total = np.bincount(pool, offered, pools)
            part = np.bincount(pool, filled, pools)
            return np.divide(part, total, out=np.zeros(pools), where=total > 0)[pool]

        def posted(filled: np.ndarray, prices: np.ndarray) -> np.ndarray:
            out = np.zeros(pools)
            out[pool[filled != 0]] = prices[filled != 0]
            return out[pool]

        bought, sold = share(fill[:n], imports), share(-fill[n:], exports)
        pool_buy, pool_sell = posted(fill[:n], price[:n]), posted(fill[n:], price[n:])
        self._upstream = UpstreamPrices(
            step, self.name, market=self.markets,
            import_price=bought * pool_buy + (1 - bought) * grid_buy,
            export_price=sold * pool_sell + (1 - sold) * grid_sell,
            import_grid_share=1 - bought, export_grid_share=1 - sold)
        self.record("upstream", step=step, market=self.markets, import_kwh=imports,
                    export_kwh=exports, pooled_import_kwh=result.filled_kwh[:n],
                    pooled_export_kwh=-result.filled_kwh[n:],
                    import_price=self._upstream.import_price,
                    export_price=self._upstream.export_price)
        return [self._upstream]

    def state_dict(self) -> dict[str, object]:
        state = super().state_dict()
        if self.layer3 is not None:
            state["layer3"] = self.layer3.state_dict()
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        super().load_state_dict(state)
        if self.layer3 is not None:
            self.layer3.load_state_dict(state["layer3"])

    def bill_prices(self, households: np.ndarray) -> tuple[np.ndarray | float, ...]:
        if self.layer3 is None:
            return self._prices
        market = self.market[households]
        return self._upstream.import_price[market], self._upstream.export_price[market]

    def extra_cost(self, step: int, inbox: list[Message]) -> float:
        grid = only(inbox, GridState)[0]
        all_households = sum(float(m.grid_kwh.sum()) for m in only(inbox, MeterBatch))
        other_kwh = grid.substation_kw * self.dt_h - all_households  # losses + feeder loads
        return only(inbox, MarketData)[0].wholesale_price * other_kwh


class Aggregator(Retailer):
    """Retails its portfolio at the day-ahead wholesale price plus a margin, both ways,
    and trades the portfolio's energy on the wholesale market (markets.wholesale): at the
    first step of each day it buys a day-ahead position for every step of the day, by
    persistence from its members' metered energy (`baseline_kwh`, their net load, where
    there is none yet), or as a Stackelberg leader the members' response its model
    expects; after each step the deviation settles at the imbalance price of the
    `real_time` series. The balancing market's share is booked as "balancing"."""

    SUBSCRIBES = Retailer.SUBSCRIBES | {"signal": ("telemetry",)}

    def __init__(self, name: str, seed: int, n_markets: int, customers: np.ndarray,
                 dt_s: float, wholesale: np.ndarray, margin: float,
                 forecast_steps: int, real_time: np.ndarray, baseline_kwh: np.ndarray,
                 steps_per_day: int, penalty: float = 0.0,
                 stackelberg: dict[str, object] | None = None,
                 members: HouseholdArrays | None = None, outside: np.ndarray | None = None,
                 peak: np.ndarray | None = None) -> None:
        super().__init__(name, seed, n_markets, customers, dt_s, len(wholesale), forecast_steps)
        # a Stackelberg leader: its members' model, their outside option (the
        # distributor's [steps, 2] prices) and the tariff's peak steps
        self.leader = None if stackelberg is None else StackelbergLeader(
            stackelberg, members, outside, peak, wholesale, dt_s / 3600.0)
        self.wholesale = np.asarray(wholesale, dtype=float)  # day-ahead, known in advance
        self.real_time = np.asarray(real_time, dtype=float)
        self.baseline_kwh = np.asarray(baseline_kwh, dtype=float)
        self.margin, self.penalty, self.steps_per_day = margin, penalty, steps_per_day
        self._actual: list[float] = []  # the portfolio's metered net, per step so far
        self._position = np.zeros(len(self.wholesale))  # day-ahead, per step of the run

    def prices(self, step: int) -> tuple[float, float]:
        w = float(self.wholesale[step])
        return w + self.margin, w - self.margin

    def signal(self, step: int, inbox: list[Message]) -> list[Message]:
        if step % self.steps_per_day == 0:
            steps = min(self.steps_per_day, len(self.wholesale) - step)
            day = slice(step, step + steps)
            if self.leader is not None:  # its model of the members forecasts the position
                self.table()[day], self._position[day] = self.leader.lead(
                    step, steps, only(inbox, MemberState))
            else:
                self._position[day] = persistence(
                    np.array(self._actual[:step]), self.baseline_kwh, step, steps,
                    self.steps_per_day)
        if self.leader is not None:
            self.leader.report(step, self)
        return super().signal(step, inbox)

    def settle(self, step: int, inbox: list[Message]) -> PhaseOutput:
        grid_kwh, _ = self._metered(inbox)
        actual = float(grid_kwh.sum())
        del self._actual[step:]
        self._actual.append(actual)
        deal = settle(self._position[step], actual, float(self.wholesale[step]),
                      float(self.real_time[step]), self.penalty)
        buy, sell = self._prices
        revenue = float(energy_bill(grid_kwh, buy, sell).sum())
        self.record("positions", step=step, aggregator=self.name,
                    position_kwh=deal.position_kwh, actual_kwh=actual,
                    day_ahead_price=deal.day_ahead_price,
                    real_time_price=float(self.real_time[step]),
                    imbalance_price=deal.imbalance_price, day_ahead_cost=deal.day_ahead_cost,
                    imbalance_cost=deal.imbalance_cost, retail_revenue=revenue)
        # the energy itself is the wholesale market's (booked at the day-ahead price by the
        # feed); what the imbalance price adds or takes away is the balancing market's
        return PhaseOutput(ledger={self.name: revenue - deal.total_cost,
                                   "balancing": deal.balancing_revenue})

    def state_dict(self) -> dict[str, object]:
        state = super().state_dict() | {"actual": list(self._actual),
                                        "position": self._position.copy(),
                                        "table": None if self._table is None
                                        else self._table.copy()}
        if self.leader is not None:
            state["leader"] = self.leader.state_dict()
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        super().load_state_dict(state)
        self._actual = list(state["actual"])
        self._position = np.array(state["position"])
        self._table = None if state["table"] is None else np.array(state["table"])
        if self.leader is not None:
            self.leader.load_state_dict(state["leader"])


class StackelbergLeader:
    """An aggregator's Stackelberg pricing (markets.stackelberg.iterate), once a day.

    At the first step of each day the leader models its members with their own devices
    and forecasts (perfect foresight of load, PV and car use, as the households' MPC has)
    from the state they reported at the end of the day before (the initial state on the
    first day), following `follower` (the self-consumption rule, or each member's MPC).
    Each member's outside option is its cost, so modelled, under the distributor's
    prices; participation shapes the leader's choice (`members_staying` is how many its
    model expects to accept), but members stay its customers for the whole run.
    Best-response iteration over the tariff family (markup and peak adder) from the day
    before's choice gives the day's tariff; every step reports the equilibrium gap
    of the tariff in force (the last round's leader and follower gains) and whether the
    iteration converged, in the `stackelberg` table. With `method = "bilevel"` (members
    with PV and a battery only) the day's tariff is the exact optimum of one MILP instead,
    checked against each member's own MPC (should no menu tariff keep every member, the
    leader falls back to the iteration, which lets the losers leave, and says so).
    Forecasts beyond the day show the wholesale-plus-margin prices until the next day is
    led.
    """

    def __init__(self, settings: dict[str, object], members: HouseholdArrays,
                 outside: np.ndarray, peak: np.ndarray, wholesale: np.ndarray,
                 dt_h: float) -> None:
        from agents.households import Households

        self.settings = dict(settings)
        self.members, self.dt_h = members, dt_h
        self.outside, self.peak = np.asarray(outside), np.asarray(peak, bool)
        self.wholesale = np.asarray(wholesale, dtype=float)
        self.households = Households.create(members.household.tolist(), **members.devices)
        self.series = members.series(dt_h)
        self.state = self.households.initial_state(dt_h, **members.initial)
        s = self.settings
        self.theta = np.array([s["markups"][0], s["peak_adders"][0]], dtype=float)
        self._day: dict[str, object] = {}

    def lead(self, step: int, steps: int, reports: list[MemberState]
             ) -> tuple[np.ndarray, np.ndarray]:
        """The day's [steps, 2] (buy, sell) tariff from step `step`, and the members' net
        energy the leader expects at it, kWh per step (its day-ahead position)."""
        from agents.households.response import mpc_follower, rule_follower
        from markets.stackelberg import (
            Leader,
            StackelbergConfig,
            StackelbergError,
            TariffFamily,
            iterate,
        )

        self._update_state(reports)
        s = self.settings
        forecast = self.series.window(step, steps)
        if s["follower"] == "mpc" or s["method"] == "bilevel":
            from agents.policies.mpc import MPC, MPCConfig

            mpc = MPC(self.households, self.dt_h, MPCConfig(**(self.members.mpc | {
                "horizon": steps})))
            follower = mpc_follower(mpc, self.state, forecast)
        else:
            follower = rule_follower(self.households, self.state, forecast)
        day = slice(step, step + steps)
        outside = follower(self.outside[day, 0], self.outside[day, 1]).cost
        leader = Leader(np.arange(self.households.size), self.wholesale[day], self.dt_h,
                        s["peak_price"], outside)
        family = TariffFamily.markup(self.wholesale[day], s["markups"], s["sell_discount"],
                                     s["peak_adders"], self.peak[day])
        config = StackelbergConfig(max_iterations=s["max_iterations"], damping=s["damping"],
                                   anticipate=s["anticipate"])
        method = s["method"]
        if method == "bilevel":
            try:
                return self._bilevel(leader, family, follower, forecast, config)
            except StackelbergError:
                # no menu tariff keeps every member: iterate lets those worse off leave
                method = "iterate (bilevel infeasible)"
        result = iterate(leader, family, follower, self.theta, config)
        self.theta = result.theta
        last = result.rounds[-1] if result.rounds else None
        self._day = dict(method=method, markup=float(result.theta[0]),
                         peak_adder=float(result.theta[1]),
                         converged=bool(result.converged), rounds=len(result.rounds),
                         leader_gain=last.leader_gain if last else 0.0,
                         follower_gain=last.follower_gain if last else 0.0,
                         expected_profit=last.profit if last else 0.0,
                         members_staying=int(result.members.sum()))
        return (np.stack([result.tariff.buy, result.tariff.sell], axis=1),
                result.net_kw.sum(0) * self.dt_h)

    def _bilevel(self, leader: object, family: object, follower: object, forecast: object,
                 config: object) -> tuple[np.ndarray, np.ndarray]:
        """The exact leader optimum for PV-and-battery members (markets.stackelberg.bilevel);
        the follower gap is how far a member's cost in the MILP's plan is from its own MPC's
        optimum at the chosen tariff."""
        from markets.stackelberg import BatteryFollowers, bilevel

        b = self.households.battery
        capacity = b.capacity_kwh.numpy()
        followers = BatteryFollowers(
            net_load_kw=(forecast.load_kw - forecast.pv_kw).numpy(),
            energy_kwh=self.state.battery_kwh.numpy(), min_kwh=b.soc_min.numpy() * capacity,
            max_kwh=b.soc_max.numpy() * capacity, power_kw=b.power_kw.numpy(),
            eta_charge=b.eta_charge.numpy(), eta_discharge=b.eta_discharge.numpy(),
            wear=b.degradation_cost.numpy())
        result = bilevel(leader, family, followers, config)
        self.theta = result.theta
        own = follower(result.tariff.buy, result.tariff.sell).cost
        self._day = dict(method="bilevel", markup=float(result.theta[0]),
                         peak_adder=float(result.theta[1]), converged=True, rounds=1,
                         leader_gain=0.0,
                         # the MILP's plans against each member's own MPC optimum: the
                         # gap where they agree, a model mismatch where they do not
                         follower_gain=float(np.abs(result.cost - own).max(initial=0.0)),
                         expected_profit=result.profit,
                         members_staying=int(leader.stays(own, 1e-9).sum()))
        return (np.stack([result.tariff.buy, result.tariff.sell], axis=1),
                result.net_kw.sum(0) * self.dt_h)

    def report(self, step: int, actor: Actor) -> None:
        actor.record("stackelberg", step=step, aggregator=actor.name, **self._day)

    def _update_state(self, reports: list[MemberState]) -> None:
        from agents.households import HouseholdState

        ids = self.members.household
        fields = {k: t.numpy().copy() for k, t in self.state._asdict().items()}
        for report in reports:
            where = np.searchsorted(ids, report.household).clip(0, len(ids) - 1)
            mine = ids[where] == report.household
            for k in fields:
                fields[k][where[mine]] = getattr(report, k)[mine]
        self.state = HouseholdState(**{k: torch.from_numpy(v) for k, v in fields.items()})

    def state_dict(self) -> dict[str, object]:
        return {"theta": self.theta.copy(), "day": dict(self._day),
                "state": {k: t.numpy().copy() for k, t in self.state._asdict().items()}}

    def load_state_dict(self, state: dict[str, object]) -> None:
        from agents.households import HouseholdState

        self.theta, self._day = np.array(state["theta"]), dict(state["day"])
        self.state = HouseholdState(**{k: torch.from_numpy(np.array(v))
                                       for k, v in state["state"].items()})
