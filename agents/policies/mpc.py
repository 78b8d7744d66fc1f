"""Price-responsive model predictive control: each household's cheapest plan over a horizon.

For every household, a convex program over H steps of dt hours (perfect foresight of the
forecast it is given) with the devices of agents.devices:

    minimise  sum_t dt [ buy_t m_t - sell_t x_t                     energy bill
                         + c_bat (bc_t + bd_t) + c_ev (ec_t + ed_t)  wear
                         + alpha g_t + beta g_t^2                    generator
                         + c_comfort (under_t + over_t) ]            discomfort, K h
              + c_topup (top-up_t + reserve_t) + c_short short_t     EV soft limits
              - v_end (E_bat,H + E_ev,H)                             stored energy left
    s.t.      m_t - x_t = inflexible_t + f_t + bc_t - bd_t + ec_t - ed_t + p_t - y_t - g_t
              battery:  E_{t+1} = E_t + eta_c bc_t dt - bd_t dt / eta_d, E in [E_min, E_max],
                        bc, bd in [0, P]
              EV:       E_{t+1} = E_t + eta_c ec_t dt - ed_t dt / eta_d - trip_t + top-up_t,
                        0 <= E <= E_max, ec <= P_c home_t, ed <= P_d home_t,
                        E_{t+1} + reserve_t >= E_min home_t  (V2G keeps its reserve),
                        E_{t+1} + short_t >= E_target where the car leaves after step t
              house:    T_{t+1} = a T_t + (1 - a)(T_out,t + R gains_t + R COP_t p_t),
                        band_low_t - under_t <= T_{t+1} <= band_high_t + over_t, p in [0, P_hp]
              flexible: cumulative served between what has fallen due and what has arrived
              PV:       y_t in [available_t (uncurtailable) or 0, available_t]
              generator g_t in [g_min, g_max];   all of m, x, bc, bd, ec, ed, f, slacks >= 0

It is a linear program (a QP when a generator has a quadratic cost) solved by HiGHS (default)
or Clarabel. The bill needs buy >= sell at every step, or buying to sell would pay without
bound. Households are independent: they are grouped by the devices they own (a
battery-only home needs a far smaller program than one with everything), and each group is
cut into blocks of `households_per_problem` that share one program with block structure.
Each (block size, device mix) is compiled once with cvxpy parameters (DPP) and re-solved
with new data. Measured (`cosim bench households`): blocks of 1 to 8 solve alike, about
15 ms per household at a 96-step horizon on two cores; bigger blocks are slower, the solver's
work growing faster than the block. `MPC.act` takes the plan's first step and clips it to
the devices' exact limits, so the applied setpoints are always feasible.

What the LP cannot say exactly, and so relaxes: the device lets a car arriving below its
reserve stay there (the LP prices the gap as `reserve`), and charging and discharging in
the same step (never useful unless prices are negative) is allowed in the plan; only the
net power is applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cvxpy as cp
import numpy as np
import torch
from tqdm import tqdm

from agents.households.composition import Households, HouseholdState, Setpoints
from agents.households.dataset import HouseholdSeries

SOLVERS = ("HIGHS", "CLARABEL")


class MPCError(RuntimeError):
    """A plan could not be found; names the households and the solver status."""


@dataclass(frozen=True)
class MPCConfig:
    horizon: int = 96  # steps
    solver: str = "HIGHS"
    households_per_problem: int = 4  # 1 to 8 run alike, 32 and up slower (BENCHMARKS.md)
    discomfort_cost: float = 1.0  # currency per K h outside the comfort band
    ev_shortfall_cost: float = 1.0  # currency per kWh missing at departure
    ev_topup_cost: float = 0.5  # currency per kWh charged away from home or below reserve
    terminal_value: float = 0.0  # currency per kWh still stored at the end of the horizon
    progress: bool = False


class Plan(NamedTuple):
    """Optimal trajectories, numpy `[households, H]` (setpoints in kW, signs as in
    agents.devices), and each household's optimal objective value."""

    battery_kw: np.ndarray
    ev_kw: np.ndarray
    heat_pump_kw: np.ndarray
    flexible_kw: np.ndarray
    pv_kw: np.ndarray
    generator_kw: np.ndarray
    net_kw: np.ndarray
    indoor_c: np.ndarray  # at the end of each step
    cost: np.ndarray  # [households], currency

    def setpoints(self, t: int = 0) -> Setpoints:
        """The planned setpoints of step `t` as tensors."""
        return Setpoints(*(torch.as_tensor(a[:, t]) for a in self[:6]))


def _due_and_arrived(households: Households, backlog: np.ndarray, arriving: np.ndarray,
                     dt_h: float) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative flexible energy (kWh, [households, H]) that must have been served by the end of
    each step, and that is available by then."""
    m, horizon = arriving.shape
    window = households.flexible_load.window_steps(dt_h).numpy()
    due = np.zeros((m, horizon))
    rows = np.arange(m)
    # backlog entry j arrived j + 1 steps ago: due at step window - j - 1
    for j in range(backlog.shape[1]):
        at = window - j - 1
        ok = (at >= 0) & (at < horizon)
        np.add.at(due, (rows[ok], at[ok]), backlog[ok, j])
        late = at < 0  # overdue already (never, from a feasible past): due now
        np.add.at(due, (rows[late], np.zeros(late.sum(), int)), backlog[late, j])
    for t in range(horizon):
        at = t + window
        ok = at < horizon
        np.add.at(due, (rows[ok], at[ok]), arriving[ok, t])
    available = backlog.sum(1, keepdims=True) + np.cumsum(arriving, axis=1)
    return np.cumsum(due, axis=1), available


PARTS = ("battery", "ev", "heat_pump", "flexible", "pv", "generator", "quadratic")


def _parts(households: Households) -> np.ndarray:
    """[households, len(PARTS)] bool: which parts of the program each household needs."""
    b, ev, g = households.battery, households.ev, households.generator
    return np.stack([
        (b.capacity_kwh * b.power_kw).numpy() > 0,
        (ev.capacity_kwh > 0).numpy(),
        (households.heat_pump.power_kw > 0).numpy(),
        (households.flexible_load.share > 0).numpy(),
        (households.pv.inverter_kw > 0).numpy(),
        (g.max_kw > 0).numpy(),
        ((g.max_kw > 0) & (g.cost_quadratic > 0)).numpy(),
    ], axis=1)


class _Program:
    """One compiled program for blocks of m households over H steps, with only the device
    parts they own (a battery-only home needs a much smaller program than a home with
    everything)."""

    def __init__(self, m: int, horizon: int, dt_h: float, parts: frozenset[str],
                 cfg: MPCConfig) -> None:
        shape, H = (m, horizon), horizon
        par: dict[str, cp.Parameter] = {}
        var: dict[str, cp.Variable] = {}

        def p(name: str, nonneg: bool = False, size: tuple[int, ...] = shape) -> cp.Parameter:
            par[name] = cp.Parameter(size, name=name, nonneg=nonneg)
            return par[name]

        def x(name: str, size: tuple[int, ...] = shape, nonneg: bool = True) -> cp.Variable:
            var[name] = cp.Variable(size, name=name, nonneg=nonneg)
            return var[name]

        net = p("inflexible")
        cost = cp.sum(cp.multiply(p("buy"), x("imp")) - cp.multiply(p("sell"), x("exp")),
                      axis=1) * dt_h
        cons = []
        if "battery" in parts:
            bc, bd, eb = x("bc"), x("bd"), x("eb", (m, H + 1), nonneg=False)
            net = net + bc - bd
            cons += [eb[:, :1] == p("eb0", size=(m, 1)),
                     eb[:, 1:] == (eb[:, :-1] + cp.multiply(p("bat_in", nonneg=True), bc)
                                   - cp.multiply(p("bat_out", nonneg=True), bd)),
                     eb[:, 1:] >= p("eb_min"), eb[:, 1:] <= p("eb_max"),
                     bc <= p("bat_kw"), bd <= par["bat_kw"]]
            cost = cost + dt_h * cp.sum(cp.multiply(p("bat_wear", nonneg=True), bc + bd), axis=1)
            cost = cost - cfg.terminal_value * eb[:, H]
        if "ev" in parts:
            ec, ed, ee = x("ec"), x("ed"), x("ee", (m, H + 1))
            topup, reserve, short = x("topup"), x("reserve"), x("short")
            net = net + ec - ed
            cons += [ee[:, :1] == p("ee0", size=(m, 1)),
                     ee[:, 1:] == (ee[:, :-1] + cp.multiply(p("ev_in", nonneg=True), ec)
                                   - cp.multiply(p("ev_out", nonneg=True), ed)
                                   - p("trip") + topup),
                     ee[:, 1:] <= p("ee_max"),
                     ec <= p("ev_charge_kw"), ed <= p("ev_discharge_kw"),
                     ee[:, 1:] + reserve >= p("ev_reserve"),
                     ee[:, 1:] + short >= p("ev_target")]
            cost = (cost + dt_h * cp.sum(cp.multiply(p("ev_wear", nonneg=True), ec + ed), axis=1)
                    + cfg.ev_topup_cost * cp.sum(topup + reserve, axis=1)
                    + cfg.ev_shortfall_cost * cp.sum(short, axis=1)
                    - cfg.terminal_value * ee[:, H])
        if "heat_pump" in parts:
            hp, temp = x("hp"), x("temp", (m, H + 1), nonneg=False)
            under, over = x("under"), x("over")
            net = net + hp
            cons += [temp[:, :1] == p("t0", size=(m, 1)),
                     temp[:, 1:] == (cp.multiply(p("decay"), temp[:, :-1]) + p("drift")
                                     + cp.multiply(p("gain"), hp)),
                     temp[:, 1:] + under >= p("band_low"),
                     temp[:, 1:] - over <= p("band_high"),
                     hp <= p("hp_kw")]
            cost = cost + dt_h * cfg.discomfort_cost * cp.sum(under + over, axis=1)
        if "flexible" in parts:
            served = cp.cumsum(x("flex"), axis=1)
            net = net + var["flex"]
            cons += [served >= p("flex_due"), served <= p("flex_available")]
        if "pv" in parts:
            net = net - x("pv")
            cons += [var["pv"] >= p("pv_low"), var["pv"] <= p("pv_high")]
        if "generator" in parts:
            gen = x("gen")
            net = net - gen
            cons += [gen >= p("gen_min"), gen <= p("gen_max")]
            cost = cost + dt_h * cp.sum(cp.multiply(p("gen_linear"), gen), axis=1)
            if "quadratic" in parts:
                cost = cost + dt_h * cp.sum(
                    cp.multiply(p("gen_quadratic", nonneg=True), cp.square(gen)), axis=1)
        cons.append(var["imp"] - var["exp"] == net)
        self.per_household = cost
        self.problem = cp.Problem(cp.Minimize(cp.sum(cost)), cons)
        self.par, self.var = par, var


class MPC:
    """Receding-horizon planner for `households` (see the module docstring); the solvers
    run on the CPU, so the households' tensors must be there."""

    def __init__(self, households: Households, dt_h: float, config: MPCConfig = MPCConfig()):
        if config.solver.upper() not in SOLVERS:
            raise ValueError(f"MPC solver {config.solver!r}: choose one of {SOLVERS}")
        if config.horizon < 1 or config.households_per_problem < 0:
            raise ValueError("MPC horizon must be >= 1 and households_per_problem >= 0")
        self.households, self.dt_h, self.config = households, dt_h, config
        self._parts = _parts(households)
        self._programs: dict[tuple[int, int, frozenset[str]], _Program] = {}

    def _program(self, m: int, horizon: int, parts: frozenset[str]) -> _Program:
        key = (m, horizon, parts)
        if key not in self._programs:
            self._programs[key] = _Program(m, horizon, self.dt_h, parts, self.config)
        return self._programs[key]

    def blocks(self) -> list[tuple[frozenset[str], np.ndarray]]:
        """(device parts, household indices) of each program solved per plan: households
        grouped by the devices they own, cut into blocks of `households_per_problem`."""
        signature, group = np.unique(self._parts, axis=0, return_inverse=True)
        size = self.config.households_per_problem or self.households.size
        out = []
        for g, row in enumerate(signature):
            members = np.flatnonzero(group.ravel() == g)
            parts = frozenset(name for name, on in zip(PARTS, row) if on)
            out += [(parts, members[i: i + size]) for i in range(0, len(members), size)]
        return out

    def plan(self, state: HouseholdState, forecast: HouseholdSeries, buy_price: object,
             sell_price: object) -> Plan:
        """Optimal plans from `state` (unbatched) over the first `horizon` steps of
        `forecast`, at prices (currency/kWh): scalars, `[H]` or `[households, H]`."""
        hh = self.households
        n = hh.size
        horizon = min(self.config.horizon, forecast.steps)
        f = forecast.window(0, horizon)

        def price(x: object) -> np.ndarray:
            a = np.asarray(x, float)
            return np.broadcast_to(a[..., :horizon] if a.ndim else a, (n, horizon))

        buy, sell = price(buy_price), price(sell_price)
        if (buy < sell - 1e-12).any():
            k, t = np.argwhere(buy < sell - 1e-12)[0]
            raise MPCError(f"household {hh.ids[k]}, step {t}: buy price {buy[k, t]} below "
                           f"sell price {sell[k, t]}; buying to sell would pay without bound")
        out = {name: np.zeros((n, horizon)) for name in Plan._fields[:-1]}
        cost = np.zeros(n)
        everyone = self._data(state, f, buy, sell)
        for parts, idx in tqdm(self.blocks(), desc="mpc", disable=not self.config.progress):
            prog = self._program(len(idx), horizon, parts)
            data = {name: value[idx] for name, value in everyone.items()}
            for name, parameter in prog.par.items():
                parameter.value = np.ascontiguousarray(data[name], dtype=float)
            prog.problem.solve(solver=self.config.solver.upper())
            if prog.problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
                raise MPCError(f"households {hh.ids[idx[0]]}..{hh.ids[idx[-1]]}: solver "
                               f"{self.config.solver} returned {prog.problem.status}")
            v = {name: x.value for name, x in prog.var.items()}
            if "battery" in parts:
                out["battery_kw"][idx] = v["bc"] - v["bd"]
            if "ev" in parts:
                out["ev_kw"][idx] = v["ec"] - v["ed"]
            if "heat_pump" in parts:
                out["heat_pump_kw"][idx] = v["hp"]
                out["indoor_c"][idx] = v["temp"][:, 1:]
            else:  # the house drifts with the weather
                temp = data["t0"][:, 0]
                for t in range(horizon):
                    temp = data["decay"][:, t] * temp + data["drift"][:, t]
                    out["indoor_c"][idx, t] = temp
            if "flexible" in parts:
                out["flexible_kw"][idx] = v["flex"]
            if "pv" in parts:
                out["pv_kw"][idx] = v["pv"]
            if "generator" in parts:
                out["generator_kw"][idx] = v["gen"]
            out["net_kw"][idx] = v["imp"] - v["exp"]
            cost[idx] = prog.per_household.value
        return Plan(**out, cost=cost)

    def act(self, state: HouseholdState, forecast: HouseholdSeries, buy_price: object,
            sell_price: object) -> Setpoints:
        """The first step of the plan, clipped to the devices' exact limits."""
        wanted = self.plan(state, forecast, buy_price, sell_price).setpoints(0)
        return self.households.clip(wanted, state, forecast.at(0), self.dt_h)

    def _data(self, state: HouseholdState, f: HouseholdSeries, buy: np.ndarray,
              sell: np.ndarray) -> dict[str, np.ndarray]:
        """Values of every program parameter for all households, `[households, H]`
        (initial states `[households, 1]`); each block takes its rows."""
        hh, dt = self.households, self.dt_h
        n, horizon = hh.size, f.steps

        def col(t: torch.Tensor) -> np.ndarray:  # a [households] parameter as [n, H]
            return np.broadcast_to(t.detach().numpy()[:, None], (n, horizon))

        def series(t: torch.Tensor) -> np.ndarray:  # [households, H] or [H] as [n, H]
            return np.broadcast_to(t.detach().numpy(), (n, horizon))

        def per_step(t: torch.Tensor) -> torch.Tensor:  # [H, households], as devices take it
            return torch.broadcast_to(t, (n, horizon)).T

        b, ev, heat, pv, gen = hh.battery, hh.ev, hh.heat_pump, hh.pv, hh.generator
        e_min, e_max = (x.numpy() for x in b.energy_bounds())
        ev_min, ev_max = (x.numpy() for x in ev.energy_bounds())
        home = series(f.ev_at_home)
        leaves = (series(f.ev_steps_left) == 1) & (home > 0)
        r = heat.resistance_k_per_kw.numpy()[:, None]
        decay = np.exp(-dt / (r * heat.capacitance_kwh_per_k.numpy()[:, None]))
        low, high = heat.band((f.hour + dt)[:, None])
        load = series(f.load_kw)
        share = hh.flexible_load.share.numpy()[:, None]
        due, available = _due_and_arrived(hh, state.backlog_kwh.detach().numpy(),
                                          share * load * dt, dt)
        pv_high = pv.available(per_step(f.pv_kw)).numpy().T
        return {
            "inflexible": (1 - share) * load, "buy": buy, "sell": sell,
            "eb0": np.clip(state.battery_kwh.detach().numpy(), e_min, e_max)[:, None],
            "bat_in": col(b.eta_charge) * dt, "bat_out": dt / col(b.eta_discharge),
            "eb_min": col(b.energy_bounds()[0]), "eb_max": col(b.energy_bounds()[1]),
            "bat_kw": col(b.power_kw), "bat_wear": col(b.degradation_cost),
            "ee0": np.clip(state.ev_kwh.detach().numpy(), 0, ev_max)[:, None],
            "ev_in": col(ev.eta_charge) * dt, "ev_out": dt / col(ev.eta_discharge),
            "trip": series(f.ev_trip_kwh), "ee_max": col(ev.energy_bounds()[1]),
            "ev_charge_kw": col(ev.charge_kw) * home,
            "ev_discharge_kw": col(ev.discharge_kw) * home,
            "ev_reserve": ev_min[:, None] * home,
            "ev_target": np.where(leaves, ev.target_kwh().numpy()[:, None], 0.0),
            "ev_wear": col(ev.degradation_cost),
            "t0": state.indoor_c.detach().numpy()[:, None],
            "decay": np.broadcast_to(decay, (n, horizon)),
            "drift": (1 - decay) * (series(f.outdoor_c) + r * series(f.gains_kw)),
            "gain": (1 - decay) * r * heat.coefficient(per_step(f.outdoor_c)).numpy().T,
            "band_low": low.numpy().T, "band_high": high.numpy().T,
            "hp_kw": col(heat.power_kw),
            "flex_due": due, "flex_available": available,
            "pv_low": pv_high * (col(pv.curtailable) == 0), "pv_high": pv_high,
            "gen_min": col(gen.min_kw), "gen_max": col(gen.max_kw),
            "gen_linear": col(gen.cost_linear), "gen_quadratic": col(gen.cost_quadratic),
        }
