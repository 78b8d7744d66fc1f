r"""Stackelberg retail pricing: a retailer (the leader) sets a tariff, households follow.

The leader sells to the households of its portfolio (`Leader.members`) at a retail tariff,
buy_t and sell_t (currency/kWh) over H steps of dt hours, and buys their net position on
the wholesale market at w_t. With the followers' net draw n_it (kW) and the set S of members
who stay, its profit (currency) is

    Pi = dt sum_{i in S} sum_t bill(n_it; buy_t, sell_t) - dt sum_t w_t N_t
         - pi_peak max(0, max_t N_t),
    bill(n; b, s) = b max(n, 0) + s min(n, 0),      N_t = sum_{i in S} n_it (kW),

pi_peak being a capacity charge in currency per kW of the portfolio's highest import. A member
stays only while the tariff costs it no more than its outside option (its cost under a
default tariff, `Leader.outside_cost`): C_i(tariff) <= C_i^out + tolerance.

Followers are callables `(buy [H], sell [H]) -> (net_kw [households, H], cost [households])`,
e.g. agents.households.response's MPC and rule-based followers; this module never imports
`agents` (DESIGN.md: markets and agents do not import each other). Three ways to lead:

1. `lead`: enumerate candidate tariffs, ask the followers for each, apply participation and
   book the profit; pick the best. Exact over the candidates, one follower call each.

2. `iterate`: best-response iteration on a parametrised tariff (`TariffFamily`). Each round
   the leader moves (a `damping` share of the way) to its best response over the family's
   menu against the followers' current response, and the followers re-optimise against the
   new tariff. The leader's model of the response is the current one plus, if
   `anticipate`, a first-order term from finite differences of the followers' net draw
   (n(theta') ~ n + J (theta' - theta)); a member is kept in the leader's model while its
   current plan at the new prices costs no more than its outside option (an upper bound on
   its re-optimised cost, exact to first order by the envelope theorem). Rounds stop when the
   tariff (currency/kWh) and the net draw (kW) both change by less than their tolerances;
   every round reports the equilibrium gap:
     leader_gain   = (profit of the leader's best response to the current responses)
                     - (current profit)  >= 0,
     follower_gain = max_i [(its previous plan's cost at the new tariff)
                            - (its re-optimised cost)]  >= 0,
   both zero at a fixed point. `converged=False` says when `max_iterations` ran out first
   (best-response dynamics can cycle: a leader that prices the step where the load is and
   batteries that move the load away).

3. `bilevel`: the exact leader optimum for battery followers whose problem is a linear
   program known to the leader (`BatteryFollowers`), as one mixed-integer linear program
   solved through cvxpy (HiGHS). The follower i (omitting i), t = 0..H-1, with n_t its load
   net of PV:

       min  C = dt sum_t (b_t m_t - s_t x_t) + kappa dt sum_t (c_t + d_t)
       s.t. m_t - x_t - c_t + d_t = n_t                                  (lambda_t)
            e_t - e_{t-1} - eta_c dt c_t + dt/eta_d d_t = 0, e_{-1} = E0  (nu_t)
            c_t <= P (alpha_t),  d_t <= P (beta_t),  e_t <= E_hi (g_hi_t),
            e_t >= E_lo (g_lo_t),  m_t <= M_t (mu_t),  x_t <= X_t (xi_t),  m, x, c, d >= 0

   with M_t = max(n_t + P, 0) and X_t = max(P - n_t, 0): with b_t >= s_t some optimal plan
   never imports and exports at once, so these bounds change no optimum, and they bound the
   products below. Its dual:

       max  D = sum_t [n_t lambda_t - P (alpha_t + beta_t) - E_hi g_hi_t + E_lo g_lo_t
                       - M_t mu_t - X_t xi_t] + E0 nu_0
       s.t. lambda_t - mu_t <= dt b_t,         -lambda_t - xi_t <= -dt s_t,
            -lambda_t - eta_c dt nu_t - alpha_t <= kappa dt,
            lambda_t + dt/eta_d nu_t - beta_t <= kappa dt,
            nu_t - nu_{t+1} - g_hi_t + g_lo_t = 0  (nu_H = 0),   alpha, beta, g, mu, xi >= 0.

   A plan is optimal iff it is feasible, some dual point is feasible and C <= D (weak
   duality makes it C = D). The leader's tariff is a `TariffFamily`: b = b0 + sum_j theta_j B_j,
   s = s0 + sum_j theta_j S_j with each theta_j from a finite menu v_j1..v_jL, picked by binaries
   z_jl with sum_l z_jl = 1, theta_j = sum_l v_jl z_jl. The dual constraints are then linear in
   z; the only nonlinear terms, theta_j m_t and theta_j x_t inside C and the leader's revenue,
   are sums of z_jl m_t, replaced exactly (z binary) by w_jlt with

       0 <= w_jlt <= M_t z_jl,      sum_l w_jlt = m_t          (likewise for x with X_t).

   The big-M values are the followers' physical bounds M_t, X_t, never a guess. The leader

       max  sum_i (C_i - wear_i) - dt sum_t w_t sum_i (m_it - x_it) - pi_peak P
       s.t. P >= sum_i (m_it - x_it),  P >= 0,  [D_i <= C_i^out + tolerance],  all the above,

   its revenue being the followers' bills, C_i less their wear. Where a follower has several
   optimal plans the program picks the one best for the leader (the optimistic bilevel
   solution). With an outside option every member must accept (a hard constraint); members
   walking away is `lead`'s business. Wear is linear here (an LP follower).

All three take their hyperparameters from one `StackelbergConfig`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import cvxpy as cp
import numpy as np

Follower = Callable[[np.ndarray, np.ndarray], Any]
"""(buy [H], sell [H]) currency/kWh -> (net_kw [households, H] kW, cost [households]
currency): any pair-like result, such as agents.households.response.Response."""


class StackelbergError(RuntimeError):
    """The leader's problem could not be solved; says which and why."""


@dataclass(frozen=True)
class StackelbergConfig:
    """Hyperparameters of `lead`, `iterate` and `bilevel`. There is no big-M: `bilevel`
    takes its bounds from the followers' data (module docstring, item 3)."""

    participation_tolerance: float = 1e-9  # currency a member accepts above its outside option
    tariff_tolerance: float = 1e-6  # currency/kWh: the tariff counts as settled below this
    net_tolerance: float = 1e-6  # kW: the followers' draw counts as settled below this
    max_iterations: int = 50
    damping: float = 1.0  # share of the way to its best response the leader moves per round
    anticipate: bool = True  # the leader's best response uses the followers' price slope
    difference_step: float = 1e-3  # step of each tariff parameter for that slope
    max_menu: int = 200_000  # menu rows the leader may enumerate per best response
    solver: str = "HIGHS"  # cvxpy solver for `bilevel` (it needs a MILP solver)
    mip_gap: float = 1e-9  # relative optimality gap of the MILP (HiGHS `mip_rel_gap`)

    def __post_init__(self) -> None:
        if not 0 < self.damping <= 1:
            raise ValueError(f"stackelberg: damping {self.damping} must lie in (0, 1]")
        if self.max_iterations < 1 or self.max_menu < 1:
            raise ValueError("stackelberg: max_iterations and max_menu must be >= 1")
        if min(self.participation_tolerance, self.tariff_tolerance, self.net_tolerance,
               self.mip_gap) < 0 or self.difference_step <= 0:
            raise ValueError("stackelberg: tolerances must be >= 0, difference_step > 0")


class Tariff(NamedTuple):
    """A retail tariff over the horizon."""

    buy: np.ndarray  # [H] retail price members pay, currency/kWh
    sell: np.ndarray  # [H] retail price members earn, currency/kWh


def _bill(energy_kwh: np.ndarray, buy: np.ndarray, sell: np.ndarray) -> np.ndarray:
    """Currency owed for `energy_kwh` (+ imported at `buy`, - exported at `sell`).

    The same formula as agents.households.bill.energy_bill, restated because markets may not
    import agents (DESIGN.md layering); tests/markets/test_stackelberg.py checks the leader's
    books against energy_bill."""
    return np.clip(energy_kwh, 0, None) * buy + np.clip(energy_kwh, None, 0) * sell


@dataclass(frozen=True)
class Leader:
    """The leader's economics: its portfolio, the wholesale price it settles at, its
    capacity charge and its members' outside options."""

    members: np.ndarray  # household indices in the portfolio
    wholesale: np.ndarray  # [H] currency/kWh
    dt_h: float  # hours per step
    peak_price: float = 0.0  # currency per kW of the portfolio's peak import
    outside_cost: np.ndarray | None = None  # [households] currency; None: nobody leaves

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", np.asarray(self.members, dtype=np.int64))
        object.__setattr__(self, "wholesale", np.asarray(self.wholesale, float))
        if self.outside_cost is not None:
            object.__setattr__(self, "outside_cost", np.asarray(self.outside_cost, float))
        if self.dt_h <= 0:
            raise ValueError(f"leader: dt_h {self.dt_h} must be > 0")

    def stays(self, cost: np.ndarray, tolerance: float) -> np.ndarray:
        """[households] bool: members whose `cost` (currency) is within `tolerance` of their
        outside option."""
        cost = np.asarray(cost, float)
        mine = np.zeros(len(cost), bool)
        mine[self.members] = True
        if self.outside_cost is None:
            return mine
        return mine & (cost <= self.outside_cost + tolerance)

    def profit(self, tariff: Tariff, net_kw: np.ndarray, stay: np.ndarray) -> float:
        """Currency: payments of the households `stay` ([households] bool) for their net draw
        `net_kw` ([households, H] kW), less the wholesale cost of their net position, less
        the peak charge (module docstring)."""
        net = np.asarray(net_kw, float)
        return float(self._profits(np.asarray(tariff.buy, float), np.asarray(tariff.sell, float),
                                   net * np.asarray(stay, bool)[:, None]))

    def _profits(self, buy: np.ndarray, sell: np.ndarray, net_kw: np.ndarray) -> np.ndarray:
        """Profit for a batch: buy, sell `[..., H]`, the staying households' net draw
        `[..., households, H]` (zero rows for those who left)."""
        pay = _bill(net_kw * self.dt_h, buy[..., None, :], sell[..., None, :]).sum((-1, -2))
        position = net_kw.sum(-2)
        peak = np.maximum(position.max(-1), 0.0)
        return pay - (position * self.wholesale).sum(-1) * self.dt_h - self.peak_price * peak


@dataclass(frozen=True)
class TariffFamily:
    """Tariffs affine in parameters theta [J]: buy = base_buy + theta @ buy_weights, sell =
    base_sell + theta @ sell_weights (currency/kWh); the leader's menu lets each theta_j take
    the values `levels[j]` (the menu is their product)."""

    base_buy: np.ndarray  # [H] currency/kWh
    base_sell: np.ndarray  # [H] currency/kWh
    buy_weights: np.ndarray  # [J, H] buy price per unit of theta_j
    sell_weights: np.ndarray  # [J, H]
    levels: tuple[np.ndarray, ...] = field(default=())  # J arrays of allowed theta_j

    def __post_init__(self) -> None:
        for name in ("base_buy", "base_sell", "buy_weights", "sell_weights"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), float))
        object.__setattr__(self, "levels", tuple(np.atleast_1d(np.asarray(v, float))
                                                 for v in self.levels))
        h = self.base_buy.shape[-1]
        j = len(self.levels)
        if (self.base_sell.shape != (h,) or self.buy_weights.shape != (j, h)
                or self.sell_weights.shape != (j, h)):
            raise ValueError(f"tariff family: bases must be [H={h}] and weights [J={j}, H]; got "
                             f"{self.base_sell.shape}, {self.buy_weights.shape}, "
                             f"{self.sell_weights.shape}")
        if any(len(v) == 0 for v in self.levels):
            raise ValueError("tariff family: every parameter needs at least one level")

    @classmethod
    def markup(cls, wholesale: np.ndarray, markups: Sequence[float], sell_discount: float,
               peak_adders: Sequence[float] = (0.0,),
               peak_hours: np.ndarray | None = None) -> TariffFamily:
        """theta = (markup, peak adder): buy at wholesale + markup (+ the adder in
        `peak_hours`, a [H] bool mask), sell at wholesale - `sell_discount`."""
        w = np.asarray(wholesale, float)
        peak = np.zeros_like(w) if peak_hours is None else np.asarray(peak_hours, bool) * 1.0
        return cls(w, w - sell_discount, np.stack([np.ones_like(w), peak]),
                   np.zeros((2, len(w))), (np.asarray(markups), np.asarray(peak_adders)))

    @classmethod
    def per_step(cls, base_buy: np.ndarray, base_sell: np.ndarray,
                 levels: np.ndarray) -> TariffFamily:
        """theta_t = the buy markup of step t, from `levels` ([L], or [H, L] per step)."""
        b = np.asarray(base_buy, float)
        lv = np.broadcast_to(np.asarray(levels, float), (len(b), np.shape(levels)[-1]))
        return cls(b, base_sell, np.eye(len(b)), np.zeros((len(b), len(b))), tuple(lv))

    @property
    def size(self) -> int:
        return len(self.levels)

    def tariff(self, theta: np.ndarray) -> Tariff:
        """The tariff at parameters `theta` [J] (on the menu or not)."""
        buy, sell = self.prices(np.asarray(theta, float)[None])
        return Tariff(buy[0], sell[0])

    def prices(self, thetas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(buy, sell) `[K, H]` currency/kWh for parameter rows `thetas` `[K, J]`."""
        return (self.base_buy + thetas @ self.buy_weights,
                self.base_sell + thetas @ self.sell_weights)

    def menu(self, limit: int | None = None) -> np.ndarray:
        """Every combination of levels, `[K, J]`; an error past `limit` rows."""
        k = int(np.prod([len(v) for v in self.levels]))
        if limit is not None and k > limit:
            raise ValueError(f"tariff family: the menu has {k} rows, more than the {limit} "
                             f"allowed (StackelbergConfig.max_menu); use `bilevel` or fewer "
                             f"levels")
        return np.array(list(itertools.product(*self.levels)), float).reshape(k, self.size)

    def candidates(self) -> list[Tariff]:
        """The menu's tariffs, in `menu()` order."""
        buy, sell = self.prices(self.menu())
        return [Tariff(b, s) for b, s in zip(buy, sell)]


def _respond(follower: Follower, tariff: Tariff) -> tuple[np.ndarray, np.ndarray]:
    net, cost = follower(tariff.buy, tariff.sell)
    return np.asarray(net, float), np.asarray(cost, float)


# -- 1. candidate tariffs -------------------------------------------------------------------

class Leadership(NamedTuple):
    """The chosen candidate (index and tariff), and per candidate: profit (currency),
    members who stay `[candidates, households]` and the followers' response."""

    best: int
    tariff: Tariff
    profit: np.ndarray
    members: np.ndarray
    responses: list[Any]


def lead(leader: Leader, candidates: Sequence[Tariff], follower: Follower,
         config: StackelbergConfig = StackelbergConfig()) -> Leadership:
    """Pick the candidate tariff (prices in currency/kWh) with the highest profit given the
    followers' best responses, one `follower` call per candidate, and their outside
    options (module docstring, item 1)."""
    if not candidates:
        raise ValueError("stackelberg: no candidate tariffs to choose from")
    profits, joined, responses = [], [], []
    for c in candidates:
        r = follower(c.buy, c.sell)
        net, cost = np.asarray(r[0], float), np.asarray(r[1], float)
        stay = leader.stays(cost, config.participation_tolerance)
        profits.append(leader.profit(c, net, stay))
        joined.append(stay)
        responses.append(r)
    profit = np.array(profits)
    best = int(np.argmax(profit))
    return Leadership(best, candidates[best], profit, np.array(joined), responses)


# -- 2. best-response iteration ---------------------------------------------------------------

class Round(NamedTuple):
    """One round of `iterate`: the leader's parameters and profit after the followers
    responded, the equilibrium gap (currency) and how much the round changed."""

    iteration: int
    theta: np.ndarray  # [J]
    profit: float  # currency
    leader_gain: float  # its best deviation against the current responses
    follower_gain: float  # the largest saving a member got by re-optimising
    tariff_change: float  # currency/kWh, largest over steps and both prices
    net_change: float  # kW, largest over members and steps


class Iteration(NamedTuple):
    """Where `iterate` stopped. `converged` is False when `max_iterations` ran out first."""

    converged: bool
    theta: np.ndarray  # [J]
    tariff: Tariff
    net_kw: np.ndarray  # [households, H] the followers' last response
    cost: np.ndarray  # [households] currency
    members: np.ndarray  # [households] bool, who stays
    rounds: list[Round]

    @property
    def gap(self) -> float:
        """The last round's equilibrium gap, currency: leader's plus followers' gain."""
        last = self.rounds[-1]
        return last.leader_gain + last.follower_gain


def _best_response(leader: Leader, family: TariffFamily, follower: Follower, menu: np.ndarray,
                   theta: np.ndarray, net: np.ndarray, cost: np.ndarray,
                   config: StackelbergConfig) -> tuple[np.ndarray, float]:
    """The leader's best parameters over `menu` (or staying at `theta`) against the
    followers' response (net, cost) to `theta`, and the profit it gains by moving there."""
    mine, dt = leader.members, leader.dt_h
    now = family.tariff(theta)
    n0 = net[mine]
    slope = np.zeros((family.size, *n0.shape))
    if config.anticipate:
        for j in range(family.size):
            if len(family.levels[j]) > 1:  # a parameter the menu cannot move needs no slope
                step = np.zeros(family.size)
                step[j] = config.difference_step
                moved, _ = _respond(follower, family.tariff(theta + step))
                slope[j] = (moved[mine] - n0) / config.difference_step
    bill_now = _bill(n0 * dt, now.buy, now.sell).sum(-1)
    outside = None if leader.outside_cost is None else leader.outside_cost[mine]
    current = leader.profit(now, net, leader.stays(cost, config.participation_tolerance))
    best, best_profit = theta, current
    chunk = max(1, 2**22 // max(n0.size, 1))  # menu rows per batch: bounded memory
    for start in range(0, len(menu), chunk):
        rows = menu[start:start + chunk]
        buy, sell = family.prices(rows)
        guess = n0 + np.einsum("kj,jmh->kmh", rows - theta, slope)
        if outside is None:
            stay = np.ones((len(rows), len(mine)), bool)
        else:  # the current plan at the new prices bounds each member's cost from above
            kept = cost[mine] + _bill(n0 * dt, buy[:, None], sell[:, None]).sum(-1) - bill_now
            stay = kept <= outside + config.participation_tolerance
        profits = leader._profits(buy, sell, guess * stay[..., None])
        k = int(np.argmax(profits))
        if profits[k] > best_profit:
            best, best_profit = rows[k], float(profits[k])
    return np.asarray(best, float), best_profit - current


def iterate(leader: Leader, family: TariffFamily, follower: Follower, theta0: np.ndarray,
            config: StackelbergConfig = StackelbergConfig()) -> Iteration:
    """Best-response iteration from parameters `theta0` [J] of `family` (module docstring,
    item 2): one `follower` call per round, plus one per parameter the menu moves when the
    leader anticipates. Tolerances: `config.tariff_tolerance` (currency/kWh) and
    `config.net_tolerance` (kW)."""
    menu = family.menu(config.max_menu)
    mine, dt = leader.members, leader.dt_h
    theta = np.asarray(theta0, float).reshape(family.size)
    tariff = family.tariff(theta)
    net, cost = _respond(follower, tariff)
    target, _ = _best_response(leader, family, follower, menu, theta, net, cost, config)
    rounds: list[Round] = []
    converged = False
    for k in range(1, config.max_iterations + 1):
        theta = theta + config.damping * (target - theta)
        new = family.tariff(theta)
        new_net, new_cost = _respond(follower, new)
        # the old plan's cost at the new prices: only the bill changes with the tariff
        kept = cost[mine] + (_bill(net[mine] * dt, new.buy, new.sell)
                             - _bill(net[mine] * dt, tariff.buy, tariff.sell)).sum(-1)
        follower_gain = float(np.max(kept - new_cost[mine])) if len(mine) else 0.0
        tariff_change = float(max(np.abs(new.buy - tariff.buy).max(),
                                  np.abs(new.sell - tariff.sell).max()))
        net_change = float(np.abs(new_net[mine] - net[mine]).max(initial=0.0))
        tariff, net, cost = new, new_net, new_cost
        target, leader_gain = _best_response(leader, family, follower, menu, theta, net, cost,
                                             config)
        stay = leader.stays(cost, config.participation_tolerance)
        rounds.append(Round(k, theta.copy(), leader.profit(tariff, net, stay), leader_gain,
                            follower_gain, tariff_change, net_change))
        if tariff_change <= config.tariff_tolerance and net_change <= config.net_tolerance:
            converged = True
            break
    stay = leader.stays(cost, config.participation_tolerance)
    return Iteration(converged, theta, tariff, net, cost, stay, rounds)


# -- 3. bilevel program for battery followers -------------------------------------------------

@dataclass(frozen=True)
class BatteryFollowers:
    """The leader's model of households with a battery that minimise their bill plus wear
    over the horizon with perfect foresight (the lower level of `bilevel`). Parameters are
    `[households]` (scalars broadcast); the load is `[households, H]`."""

    net_load_kw: np.ndarray  # [households, H] load less PV, kW
    energy_kwh: np.ndarray  # stored at the start, kWh
    min_kwh: np.ndarray  # lowest stored energy allowed, kWh
    max_kwh: np.ndarray  # highest, kWh
    power_kw: np.ndarray  # charge and discharge rating, kW
    eta_charge: np.ndarray | float = 0.95  # fraction of charging energy stored
    eta_discharge: np.ndarray | float = 0.95  # fraction of stored energy delivered
    wear: np.ndarray | float = 0.0  # currency per kWh of throughput

    def __post_init__(self) -> None:
        load = np.asarray(self.net_load_kw, float)
        if load.ndim != 2:
            raise ValueError(f"battery followers: net_load_kw must be [households, H], "
                             f"got shape {load.shape}")
        object.__setattr__(self, "net_load_kw", load)
        for name in ("energy_kwh", "min_kwh", "max_kwh", "power_kw", "eta_charge",
                     "eta_discharge", "wear"):
            value = np.broadcast_to(np.asarray(getattr(self, name), float), (len(load),))
            object.__setattr__(self, name, value)
        bad = ((self.min_kwh > self.energy_kwh) | (self.energy_kwh > self.max_kwh)
               | (self.power_kw < 0) | (self.eta_charge <= 0) | (self.eta_discharge <= 0)
               | (self.wear < 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"battery follower {i}: needs min_kwh <= energy_kwh <= max_kwh, "
                             f"power_kw >= 0, efficiencies > 0 and wear >= 0")


class Bilevel(NamedTuple):
    """The leader's exact optimum over the family's menu and the members' plans there."""

    theta: np.ndarray  # [J] the chosen levels
    tariff: Tariff
    profit: float  # currency
    net_kw: np.ndarray  # [members, H]
    battery_kw: np.ndarray  # [members, H] charging positive
    cost: np.ndarray  # [members] currency, each member's optimal cost (bill + wear)


def bilevel(leader: Leader, family: TariffFamily, followers: BatteryFollowers,
            config: StackelbergConfig = StackelbergConfig()) -> Bilevel:
    """Solve the leader's problem exactly as one MILP (module docstring, item 3): the best
    tariff of `family`'s menu when the members' plans are optimal for their LP. The rows of
    `followers` are households, of which `leader.members` are modelled. Raises
    `StackelbergError` when the solver finds no optimum (e.g. no menu tariff meets every
    member's outside option)."""
    mine = leader.members
    n = followers.net_load_kw[mine]
    m_count, horizon = n.shape
    if family.base_buy.shape != (horizon,):
        raise ValueError(f"bilevel: the tariff has {family.base_buy.shape[0]} steps, the "
                         f"followers {horizon}")
    low = [(w[:, None] * v[None]).min(1) for w, v in zip(family.buy_weights, family.levels)]
    high = [(w[:, None] * v[None]).max(1) for w, v in zip(family.sell_weights, family.levels)]
    gap = family.base_buy + sum(low, 0.0) - family.base_sell - sum(high, 0.0)
    if (gap < -1e-12).any():
        raise ValueError(f"bilevel: the menu allows a sell price above the buy price at step "
                         f"{int(np.argmin(gap))}; followers would trade without bound")
    dt = leader.dt_h

    def col(x: np.ndarray) -> np.ndarray:  # [members] as [members, H]
        return np.broadcast_to(x[mine][:, None], n.shape)

    power, e_lo, e_hi = col(followers.power_kw), col(followers.min_kwh), col(followers.max_kwh)
    charge, discharge = col(followers.eta_charge) * dt, dt / col(followers.eta_discharge)
    kappa = col(followers.wear) * dt
    m_max, x_max = np.maximum(n + power, 0.0), np.maximum(power - n, 0.0)

    # the follower's primal
    imp, exp = cp.Variable(n.shape, nonneg=True), cp.Variable(n.shape, nonneg=True)
    c, d = cp.Variable(n.shape, nonneg=True), cp.Variable(n.shape, nonneg=True)
    e = cp.Variable(n.shape)  # stored energy at the end of each step, kWh
    start = followers.energy_kwh[mine][:, None]
    before = cp.hstack([start, e[:, :-1]]) if horizon > 1 else start
    cons = [imp - exp - c + d == n,
            e == before + cp.multiply(charge, c) - cp.multiply(discharge, d),
            c <= power, d <= power, e <= e_hi, e >= e_lo, imp <= m_max, exp <= x_max]

    # the leader's menu: one level per parameter; prices affine in the binaries
    choice = [cp.Variable(len(v), boolean=True) for v in family.levels]
    cons += [cp.sum(z) == 1 for z in choice]
    theta = [v @ z for v, z in zip(family.levels, choice)]
    buy = family.base_buy + sum((t * w for t, w in zip(theta, family.buy_weights)), 0.0)
    sell = family.base_sell + sum((t * w for t, w in zip(theta, family.sell_weights)), 0.0)
    rows = np.ones((m_count, 1))

    def grid(price: cp.Expression) -> cp.Expression:  # [H] as [members, H]
        return rows @ cp.reshape(price, (1, horizon), order="C")

    # bill = dt sum_t (b_t m_t - s_t x_t); theta_j m_t is linearised level by level
    bill = cp.sum(cp.multiply(dt * family.base_buy[None], imp)
                  - cp.multiply(dt * family.base_sell[None], exp), axis=1)
    for weights, sign, q, bound in ((family.buy_weights, 1.0, imp, m_max),
                                    (family.sell_weights, -1.0, exp, x_max)):
        for v, z, w in zip(family.levels, choice, weights):
            steps = np.flatnonzero(w)
            if len(steps) == 0:
                continue
            parts = [cp.Variable((m_count, len(steps)), nonneg=True) for _ in v]
            cons += [sum(parts) == q[:, steps]]
            cons += [p <= bound[:, steps] * z[k] for k, p in enumerate(parts)]
            bill = bill + sign * sum(cp.sum(cp.multiply(level * dt * w[steps][None], p), axis=1)
                                     for level, p in zip(v, parts))
    primal = bill + cp.sum(cp.multiply(kappa, c + d), axis=1)

    # the follower's dual, and strong duality
    lam, nu = cp.Variable(n.shape), cp.Variable(n.shape)
    alpha, beta, g_hi, g_lo, mu, xi = (cp.Variable(n.shape, nonneg=True) for _ in range(6))
    end = np.zeros((m_count, 1))
    after = cp.hstack([nu[:, 1:], end]) if horizon > 1 else end
    cons += [lam - mu <= dt * grid(buy), -lam - xi <= -dt * grid(sell),
             -lam - cp.multiply(charge, nu) - alpha <= kappa,
             lam + cp.multiply(discharge, nu) - beta <= kappa,
             nu - after - g_hi + g_lo == 0]
    dual = (cp.sum(cp.multiply(n, lam) - cp.multiply(power, alpha + beta)
                   - cp.multiply(e_hi, g_hi) + cp.multiply(e_lo, g_lo)
                   - cp.multiply(m_max, mu) - cp.multiply(x_max, xi), axis=1)
            + cp.multiply(followers.energy_kwh[mine], nu[:, 0]))
    cons.append(primal <= dual)
    if leader.outside_cost is not None:
        cons.append(dual <= leader.outside_cost[mine] + config.participation_tolerance)

    position = cp.sum(imp - exp, axis=0)
    peak = cp.Variable(nonneg=True)
    cons.append(peak >= position)
    profit = (cp.sum(bill) - dt * leader.wholesale @ position - leader.peak_price * peak)
    problem = cp.Problem(cp.Maximize(profit), cons)
    options = {"mip_rel_gap": config.mip_gap} if config.solver.upper() == "HIGHS" else {}
    problem.solve(solver=config.solver.upper(), **options)
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise StackelbergError(f"bilevel: solver {config.solver} returned {problem.status}"
                               + (" (a member's outside option no menu tariff meets?)"
                                  if leader.outside_cost is not None else ""))
    picked = np.array([v[int(np.argmax(z.value))] for v, z in zip(family.levels, choice)])
    return Bilevel(picked, family.tariff(picked), float(problem.value), imp.value - exp.value,
                   c.value - d.value, np.asarray(primal.value, float))
