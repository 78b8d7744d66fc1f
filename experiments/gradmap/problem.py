"""GradMAP's problem: agents on a feeder over days of inputs, and its differentiable rollout.

A scenario file (experiments/configs/gradmap_*.toml) gives the agents - households owning
one device each - their feeder connections, profiles, prices and limits, exactly as
`cosim run` builds them (`cosim.scenario.build`). `Problem.build` runs the scenario's
profile source for `days` consecutive days from `run.start` and cuts them into scenarios of
`run.steps` steps: the first `train_days` for training, the rest held out.

`rollout` plays policies over a batch of those days, all agents and days at once, on the
same code the co-simulation's household shards run - the local observation
(`agents.households.observe`, with the agent's own voltage of the step before), the
devices' feasible setpoints and dynamics (`Households.from_action`, `step`), the
connection sums and the batched three-phase power flow with its implicit gradient - so a
policy trained here deploys unchanged with `policy = "bank"`. Everything is a torch tensor
of shape [days, ...]: a loss over the result differentiates back to the actions and the
policy parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from agents.households import HouseholdInputs, Households, observe
from cosim.config import ScenarioConfig
from cosim.profiles import load_profiles
from cosim.scenario import ProfileData, build
from grid import PowerFlow, load_feeder


@dataclass(frozen=True)
class Problem:
    """Agents, their days of inputs `[days, agents, steps]`, prices `[days, steps]` and
    the power flow. Units: kW, kWh, currency/kWh, p.u."""

    config: ScenarioConfig
    households: Households
    load_kw: torch.Tensor  # [days, agents, steps] appliance demand
    pv_kw: torch.Tensor  # [days, agents, steps] PV available
    outdoor_c: torch.Tensor  # [days, steps]
    hour: torch.Tensor  # [days, steps] local clock hour at each step's start
    weekend: torch.Tensor  # [days, steps]
    buy_price: torch.Tensor  # [days, steps] the agents' retail import price (observed)
    sell_price: torch.Tensor  # [days, steps]
    energy_price: torch.Tensor  # [days, steps] wholesale: the system's cost of energy
    connection: torch.Tensor  # [agents] index into the power flow's connections
    conn_base_v: torch.Tensor  # [connections] V, for the voltage each agent observes
    pf: PowerFlow
    initial: dict[str, float]
    tan_phi: float
    train_days: int

    @property
    def n_agents(self) -> int:
        return self.households.size

    @property
    def steps(self) -> int:
        return int(self.load_kw.shape[-1])

    @property
    def dt_h(self) -> float:
        return self.config.run.dt_s / 3600.0

    @classmethod
    def build(cls, config: ScenarioConfig, days: int = 12, train_days: int = 8,
              profiles: ProfileData | None = None) -> Problem:
        """The scenario's agents over `days` days from run.start (the first `train_days`
        for training). `profiles` replaces the scenario's profile source (tests)."""
        if not 0 < train_days <= days:
            raise ValueError(f"train_days = {train_days}: must be in 1..days ({days})")
        if config.households.ev.share > 0 or any(h.ev_kwh > 0 for h in config.households.homes):
            raise ValueError("households.ev: GradMAP's problem has no car trips (its devices "
                             "are batteries, heat pumps and generators); set ev.share = 0")
        run = config.run
        steps = run.steps
        hh = config.households
        whole = config.model_copy(update={
            "run": run.model_copy(update={"steps": steps * days}),
            # one shard and one market: the agents in household order, nothing else differs
            # for the physics (a market moves money, not power, for policy-set setpoints)
            "households": hh.model_copy(update={"shard_size": hh.count}),
            "markets": config.markets.model_copy(update={"households_per_market": hh.count})})
        scenario = build(whole, profiles if profiles is not None else load_profiles(whole))
        specs = {s.name: s for s in scenario.actors}
        homes = next(s for s in scenario.actors if s.name.startswith("shard-")).kwargs["homes"]
        if not (homes.household == np.arange(hh.count)).all():
            raise RuntimeError("the scenario did not put every agent in one shard, in order")
        distributor = specs["distributor"]
        table = distributor.cls(distributor.name, **distributor.kwargs).table()  # [steps, 2]
        grid = specs["grid"].kwargs
        feeder = load_feeder(grid["feeder"], vmin_pu=grid["vmin_pu"], vmax_pu=grid["vmax_pu"],
                             controls_load_scale=grid["controls_load_scale"])

        def by_day(x: np.ndarray) -> torch.Tensor:  # [..., days * steps] -> [days, ..., steps]
            x = torch.tensor(np.asarray(x, dtype=float))
            return x.reshape(*x.shape[:-1], days, steps).movedim(-2, 0).contiguous()

        return cls(
            config=config, households=Households.create(range(hh.count), **homes.devices),
            load_kw=by_day(homes.load_kw), pv_kw=by_day(homes.pv_kw),
            outdoor_c=by_day(homes.outdoor_c), hour=by_day(homes.hour),
            weekend=by_day(homes.weekend), buy_price=by_day(table[:, 0]),
            sell_price=by_day(table[:, 1]),
            energy_price=by_day(specs["feed"].kwargs["wholesale_price"]),
            connection=torch.as_tensor(homes.connection, dtype=torch.long),
            conn_base_v=torch.as_tensor(feeder.connection_bases_v(scenario.connections)),
            pf=PowerFlow(feeder, scenario.connections, tol=grid["tol"]),
            initial=dict(homes.initial), tan_phi=float(np.tan(np.arccos(hh.power_factor))),
            train_days=train_days)

    @property
    def device(self) -> torch.device:
        return self.load_kw.device

    def to(self, device: str | torch.device) -> Problem:
        """The same problem on `device` (a GPU: the rollout, power flow and policies run
        there; the power flow is rebuilt for it)."""
        if torch.device(device) == self.device:
            return self
        pf = self.pf
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved, households=self.households.to(device),
                       pf=PowerFlow(pf.feeder, pf.connection_names, device=device, tol=pf.tol))

    def inputs(self, days: torch.Tensor, t: int) -> HouseholdInputs:
        """Step t's inputs of the given days: per agent `[days, agents]`, shared `[days, 1]`."""
        zero = torch.zeros_like(self.load_kw[days, :, t])
        return HouseholdInputs(
            load_kw=self.load_kw[days, :, t], pv_kw=self.pv_kw[days, :, t], ev_at_home=zero,
            ev_trip_kwh=zero, ev_steps_left=torch.full_like(zero, float("inf")),
            outdoor_c=self.outdoor_c[days, t, None], hour=self.hour[days, t, None],
            weekend=self.weekend[days, t, None])


@dataclass
class Trajectory:
    """A rollout over days `[days, steps, ...]`: what the agents saw and did and what it
    cost, and what the network did; differentiable with respect to the actions."""

    observations: torch.Tensor  # [days, steps, agents, fields]
    actions: torch.Tensor  # [days, steps, agents, actions] raw, as the policy gave them
    vmag_pu: torch.Tensor  # [days, steps, nodes]
    line_loading: torch.Tensor  # [days, steps, lines] current / rating (NaN: unrated)
    substation_kw: torch.Tensor  # [days, steps]
    operating_cost: torch.Tensor  # [days, steps, agents] wear and fuel, currency
    discomfort_kh: torch.Tensor  # [days, steps, agents]
    converged: torch.Tensor  # [days, steps] bool


def rollout(problem: Problem, policy: Callable[[torch.Tensor], torch.Tensor],
            days: torch.Tensor | list[int],
            actions: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> Trajectory:
    """Play `policy` (observations `[days, agents, fields]` to raw actions) over `days`.
    `actions(t, a)`, when given, may replace step t's actions (GradMAP makes them leaves to
    collect the gradient with respect to each action)."""
    p, hh, dt_h = problem, problem.households, problem.dt_h
    days = torch.as_tensor(days, dtype=torch.long, device=p.device)
    n_days, n_conn = len(days), p.pf.n_connections
    state = hh.initial_state(dt_h, (n_days,), **p.initial)
    voltage = torch.ones(n_days, p.n_agents, dtype=torch.float64, device=p.device)
    warm = None
    out: dict[str, list] = {k: [] for k in ("obs", "act", "v", "load", "sub", "op", "disc",
                                            "conv")}
    for t in range(p.steps):
        x = p.inputs(days, t)
        obs = observe(hh, state, x, p.buy_price[days, t, None], p.sell_price[days, t, None],
                      voltage, dt_h)
        a = policy(obs)
        if actions is not None:
            a = actions(t, a)
        sp = hh.from_action(a, state, x, dt_h)
        net = hh.net_kw(sp, x)
        served = hh.flexible_load.inflexible_kw(x.load_kw) + sp.flexible_kw
        q = (served + sp.heat_pump_kw) * p.tan_phi
        inject_p = net.new_zeros(n_days, n_conn).index_add(1, p.connection, -net)
        inject_q = q.new_zeros(n_days, n_conn).index_add(1, p.connection, -q)
        # warm-started from the last step where it converged, as the grid actor does
        res = p.pf.solve(inject_p, inject_q, load_scale=p.config.grid.feeder_load_scale,
                         initial=warm)
        warm = res
        seen = res.connection_voltages.abs() / p.conn_base_v
        # a household keeps its last voltage through a step that did not converge
        voltage = torch.where(res.converged[:, None], seen[:, p.connection], voltage)
        nxt = hh.step(state, sp, x, dt_h)
        # line loading from squared currents: the result's |i| has an infinite derivative on
        # a conductor carrying nothing, which turns a zero gradient into NaN
        # (an unrated line reads NaN, as in the co-simulation's records)
        i, amps = res.line_currents, p.pf.line_amps
        rated = torch.isfinite(amps)
        loading = torch.sqrt(torch.clamp((i.real.square() + i.imag.square()).amax(-1)
                                         / torch.where(rated, amps, 1.0).square(), min=1e-30))
        loading = torch.where(rated, loading, torch.nan)
        for key, value in (("obs", obs), ("act", a), ("v", res.vmag_pu), ("load", loading),
                           ("sub", res.substation_power.real), ("op", hh.operating_cost(sp, dt_h)),
                           ("disc", hh.discomfort_kh(nxt, x, dt_h)), ("conv", res.converged)):
            out[key].append(value)
        state = nxt
    stack = {k: torch.stack(v, dim=1) for k, v in out.items()}
    return Trajectory(stack["obs"], stack["act"], stack["v"], stack["load"], stack["sub"],
                      stack["op"], stack["disc"], stack["conv"])

