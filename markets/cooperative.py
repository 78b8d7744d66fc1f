"""Prosumer cooperative game: pooled metering, Shapley / nucleolus payoffs, K-means scaling.

After Han, Morstyn and McCulloch (IEEE TPWRS 2019; PowerTech 2019 / IEEE TSG 2021). A coalition
S of prosumers shares one meter, so one member's export offsets another's import at the buy
price instead of the (lower) sell price. Its cost is the LP

    C(S) = min  sum_t buy_t m+_t - sell_t m-_t                                   (currency)
    s.t.   m+_t - m-_t = sum_{i in S} (d_it - g_it + (c_it - b_it) dt),  m+, m- >= 0   (kWh)
           e_i,t+1 = e_it + (eta_c,i c_it - b_it / eta_d,i) dt                      (kWh)
           soc_min,i cap_i <= e_it <= soc_max,i cap_i,  e_i0 = soc_initial,i cap_i,
           e_iT >= e_i0,  0 <= c_it, b_it <= power_i                                 (kW)

and the game is the savings game v(S) = sum_{i in S} C({i}) - C(S), which is superadditive
and balanced (non-empty core).

Speed. The LP is built once in cvxpy with a membership-mask Parameter; every bound that
depends on membership is `constant * mask` (DPP-affine), so cvxpy canonicalises once and each
coalition re-solve only maps the new mask into the solver's data (`problem.is_dpp()` holds).
Players without storage get no storage variables at all, and HiGHS runs without presolve
(it costs more than it saves on these small LPs). Measured on 2 shared AMD EPYC cores (cvxpy
1.9.3 + HiGHS, T = 24 hourly steps, 12 players, 3 with batteries; `experiments.coop_scaling`
data): about 6.5 ms of CPU per coalition solve (7-10 ms wall under load), so the 4,095
coalitions of 12 players take 27-36 s in one process; rebuilding the Problem for every
coalition instead costs about 27 ms per solve.

The LP does not forbid charging and discharging in the same step; with sell >= 0 nothing gains
from it, and with a negative sell price it acts as the curtailment the model otherwise lacks.

K-means path (for many players). Solve the grand coalition once, cluster the members' resulting
net profiles (kWh per step) with K-means, treat each cluster as one aggregated player, allocate
the K-player game (2^K LPs instead of 2^n), and split each cluster's payoff among its members
(`SplitRule`). Aggregating storage is exact when members share efficiencies, state-of-charge
limits and power/capacity ratio, and otherwise a relaxation; the cluster game's grand value uses
the real grand-coalition cost so that payoffs always add up to what the community saves.

Payoffs (`x`) are savings against standing alone, in currency over the horizon: a member pays
C({i}) - x_i.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

MAX_PLAYERS = 16  # 2^16 coalition LPs is the most that is sensible to enumerate

SplitRule = Literal["potential", "cost", "equal"]
Allocation = Literal["nucleolus", "shapley"]


@dataclass(frozen=True)
class CoopConfig:
    """Hyperparameters of the cooperative-game allocation, all in one place.

    solver: cvxpy solver name for every LP (HiGHS: fast LP simplex with duals).
    clusters: K, the number of K-means clusters (players of the clustered game).
    exact_limit: up to this many players `allocate` uses the exact n-player game.
    mc_samples: permutations for Monte Carlo Shapley when a game is above `exact_limit`.
    allocation: "nucleolus" or "shapley" (exact) for games up to `exact_limit` players; a
        cluster game above it (clusters > exact_limit) uses Monte Carlo Shapley.
    split: how a cluster's payoff is shared among its members (`split_payoff`).
    seed: K-means and Monte Carlo seed.
    progress: show tqdm bars while enumerating coalitions.
    """

    solver: str = cp.HIGHS
    clusters: int = 8
    exact_limit: int = 12
    mc_samples: int = 500
    allocation: Allocation = "nucleolus"
    split: SplitRule = "potential"
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        if self.clusters < 1:
            raise ValueError(f"clusters must be >= 1, got {self.clusters}")
        if not 1 <= self.exact_limit <= MAX_PLAYERS:
            raise ValueError(f"exact_limit must be in 1..{MAX_PLAYERS}, got {self.exact_limit}")
        if self.mc_samples < 1:
            raise ValueError(f"mc_samples must be >= 1, got {self.mc_samples}")
        if self.allocation not in ("nucleolus", "shapley"):
            raise ValueError(f"allocation must be 'nucleolus' or 'shapley', "
                             f"got {self.allocation!r}")
        if self.split not in ("potential", "cost", "equal"):
            raise ValueError(f"split must be 'potential', 'cost' or 'equal', got {self.split!r}")


def _per_player(name: str, value: float | np.ndarray, n: int) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return arr


@dataclass(frozen=True, eq=False)
class Prosumers:
    """n prosumers over T steps of `dt_h` hours, with optional storage and a shared tariff.

    demand_kwh, pv_kwh: [n, T] kWh per step, >= 0.
    capacity_kwh: [n] storage energy capacity, kWh (0 = no storage).
    power_kw: [n] storage charge and discharge power limit, kW (0 = no storage).
    eta_charge, eta_discharge: scalar or [n], efficiencies in (0, 1].
    soc_initial, soc_min, soc_max: scalar or [n], fractions of capacity in [0, 1] with
        soc_min <= soc_initial <= soc_max; the horizon must end with at least the initial energy.
    buy, sell: [T] import and export prices, currency/kWh, buy >= sell at every step.
    dt_h: step length, hours.

    Scalars are broadcast to [n] arrays on construction.
    """

    demand_kwh: np.ndarray
    pv_kwh: np.ndarray
    capacity_kwh: np.ndarray
    power_kw: np.ndarray
    buy: np.ndarray
    sell: np.ndarray
    eta_charge: float | np.ndarray = 0.95
    eta_discharge: float | np.ndarray = 0.95
    soc_initial: float | np.ndarray = 0.5
    soc_min: float | np.ndarray = 0.0
    soc_max: float | np.ndarray = 1.0
    dt_h: float = 1.0

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        demand = np.asarray(self.demand_kwh, dtype=float)
        if demand.ndim != 2 or demand.shape[0] < 1 or demand.shape[1] < 1:
            raise ValueError(f"demand_kwh must have shape [n, T] with n, T >= 1, "
                             f"got {demand.shape}")
        n, steps = demand.shape
        for name in ("demand_kwh", "pv_kwh"):
            arr = np.asarray(getattr(self, name), dtype=float)
            if arr.shape != (n, steps):
                raise ValueError(f"{name} must have shape ({n}, {steps}), got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} must be finite (no NaN or inf)")
            if np.any(arr < 0):
                raise ValueError(f"{name} must be >= 0")
            put(name, arr)
        for name in ("buy", "sell"):
            arr = np.asarray(getattr(self, name), dtype=float)
            if arr.ndim == 0:
                arr = np.full(steps, float(arr))
            if arr.shape != (steps,):
                raise ValueError(f"{name} must be a scalar or have shape ({steps},), "
                                 f"got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} must be finite (no NaN or inf)")
            put(name, arr)
        if np.any(self.sell > self.buy):
            t = int(np.argmax(self.sell > self.buy))
            raise ValueError(f"sell must not exceed buy (step {t}: sell {self.sell[t]} > "
                             f"buy {self.buy[t]}); otherwise buying to resell is unbounded")
        for name in ("capacity_kwh", "power_kw"):
            arr = _per_player(name, getattr(self, name), n)
            if np.any(arr < 0):
                raise ValueError(f"{name} must be >= 0")
            put(name, arr)
        for name in ("eta_charge", "eta_discharge"):
            arr = _per_player(name, getattr(self, name), n)
            if np.any((arr <= 0) | (arr > 1)):
                raise ValueError(f"{name} must be in (0, 1]")
            put(name, arr)
        for name in ("soc_initial", "soc_min", "soc_max"):
            arr = _per_player(name, getattr(self, name), n)
            if np.any((arr < 0) | (arr > 1)):
                raise ValueError(f"{name} must be a fraction in [0, 1]")
            put(name, arr)
        if np.any(self.soc_min > self.soc_initial) or np.any(self.soc_initial > self.soc_max):
            raise ValueError("soc_initial must lie in [soc_min, soc_max] for every player")
        if not (math.isfinite(self.dt_h) and self.dt_h > 0):
            raise ValueError(f"dt_h must be a finite number > 0, got {self.dt_h}")

    @property
    def n(self) -> int:
        """Number of players."""
        return self.demand_kwh.shape[0]

    @property
    def steps(self) -> int:
        """Number of time steps T."""
        return self.demand_kwh.shape[1]

    @property
    def has_storage(self) -> np.ndarray:
        """[n] bool: the player can store energy (capacity and power both > 0)."""
        return (self.capacity_kwh > 0) & (self.power_kw > 0)

    def aggregate(self, labels: np.ndarray) -> Prosumers:
        """Merge players into len(unique(labels)) players: label k becomes player k.

        Demand, PV, storage capacity and power add up (only over members that have storage,
        so a capacity without power cannot pair with another member's power). Efficiencies and
        state-of-charge fractions are capacity-weighted means, which keeps the aggregated
        initial, minimum and maximum energies equal to the sums of the members'.
        labels: int [n] in [0, K), every cluster non-empty.
        """
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        if labels.shape != (self.n,):
            raise ValueError(f"labels must have shape ({self.n},), got {labels.shape}")
        k = int(labels.max()) + 1
        if labels.min() < 0 or np.any(np.bincount(labels, minlength=k) == 0):
            raise ValueError("labels must be in [0, K) with every cluster non-empty")
        onehot = sp.csr_array((np.ones(self.n), (labels, np.arange(self.n))), shape=(k, self.n))
        cap = np.where(self.has_storage, self.capacity_kwh, 0.0)
        power = np.where(self.has_storage, self.power_kw, 0.0)
        cap_k = onehot @ cap
        weight = np.where(cap_k > 0, cap_k, 1.0)
        # capacity-weighted mean; clusters without storage get the unweighted mean
        plain = onehot @ np.ones(self.n)

        def mean(x: np.ndarray) -> np.ndarray:
            return np.where(cap_k > 0, (onehot @ (cap * x)) / weight, (onehot @ x) / plain)

        return Prosumers(
            demand_kwh=onehot @ self.demand_kwh, pv_kwh=onehot @ self.pv_kwh,
            capacity_kwh=cap_k, power_kw=onehot @ power, buy=self.buy, sell=self.sell,
            eta_charge=mean(self.eta_charge), eta_discharge=mean(self.eta_discharge),
            soc_initial=mean(self.soc_initial), soc_min=mean(self.soc_min),
            soc_max=mean(self.soc_max), dt_h=self.dt_h,
        )


# --------------------------------------------------------------------------------------------
# Coalition cost LP
# --------------------------------------------------------------------------------------------


def _mask_vector(mask: int, n: int) -> np.ndarray:
    return ((mask >> np.arange(n)) & 1).astype(float)


def _storage(p: Prosumers, s: np.ndarray, member: cp.Expression | np.ndarray
             ) -> tuple[cp.Variable, cp.Variable, cp.Variable, list[cp.Constraint]]:
    """Charge (kW), discharge (kW) and energy (kWh) variables [len(s), T(+1)] of the storage
    players `s`, with their constraints; every bound is scaled by member[i] (a 0/1 mask,
    possibly a Parameter), so a non-member's storage is pinned at zero.

    Each bound is a constant sparse matrix times `member`, which keeps it DPP-affine.
    """
    n, steps, dt, ns = p.n, p.steps, p.dt_h, len(s)
    select = sp.csr_array((np.ones(ns), (np.arange(ns), s)), shape=(ns, n))
    # row (j, t) picks player s[j]
    pick = sp.csr_array((np.ones(ns * steps), (np.arange(ns * steps), np.repeat(s, steps))),
                        shape=(ns * steps, n))

    def per_step(scale: np.ndarray) -> cp.Expression:
        scaled = sp.diags_array(np.repeat(scale, steps)) @ pick
        return cp.reshape(scaled @ member, (ns, steps), order="C")

    cap = p.capacity_kwh[s]
    charge = cp.Variable((ns, steps), nonneg=True)
    discharge = cp.Variable((ns, steps), nonneg=True)
    e = cp.Variable((ns, steps + 1))
    eta_c = np.repeat(p.eta_charge[s, None], steps, axis=1)
    inv_eta_d = np.repeat(1.0 / p.eta_discharge[s, None], steps, axis=1)
    constraints = [
        charge <= per_step(p.power_kw[s]),
        discharge <= per_step(p.power_kw[s]),
        e[:, 1:] == e[:, :-1] + dt * (cp.multiply(eta_c, charge)
                                      - cp.multiply(inv_eta_d, discharge)),
        e[:, 1:] >= per_step(p.soc_min[s] * cap),
        e[:, 1:] <= per_step(p.soc_max[s] * cap),
        e[:, 0] == (sp.diags_array(p.soc_initial[s] * cap) @ select) @ member,
        e[:, steps] >= e[:, 0],
    ]
    return charge, discharge, e, constraints


class CoalitionLP:
    """The coalition cost LP of `Prosumers`, built once and re-solved per coalition.

    `cost(mask)` sets the membership Parameter (bit i of `mask` = player i is a member) and
    re-solves; cvxpy's DPP cache makes each re-solve skip canonicalisation.
    """

    def __init__(self, prosumers: Prosumers, solver: str = cp.HIGHS,
                 mask: np.ndarray | None = None) -> None:
        """mask: fixed [n] 0/1 membership to build a plain (parameter-free) problem once,
        e.g. the grand coalition of 1,000 players; None builds the parametric problem."""
        p = prosumers
        self.prosumers, self.solver = p, solver
        n, steps, dt = p.n, p.steps, p.dt_h
        self.storage = np.flatnonzero(p.has_storage)
        ns = len(self.storage)
        self.parametric = mask is None
        self.mask = cp.Parameter(n, nonneg=True) if mask is None else np.asarray(mask, float)
        member = self.mask
        self.import_kwh = cp.Variable(steps, nonneg=True)
        self.export_kwh = cp.Variable(steps, nonneg=True)
        net = (p.demand_kwh - p.pv_kwh).T @ member  # [T] kWh, members' net load before storage
        constraints: list[cp.Constraint] = []
        if ns:
            self.charge_kw, self.discharge_kw, self.energy_kwh, constraints = _storage(
                p, self.storage, member)
            net = net + dt * cp.sum(self.charge_kw - self.discharge_kw, axis=0)
        constraints.append(self.import_kwh - self.export_kwh == net)
        objective = p.buy @ self.import_kwh - p.sell @ self.export_kwh
        self.problem = cp.Problem(cp.Minimize(objective), constraints)
        if mask is None and not self.problem.is_dpp():
            raise RuntimeError("coalition LP is not DPP; every re-solve would recompile")

    def _solve(self) -> float:
        # HiGHS presolve costs more than it saves on these small re-solves (5.5 vs 7.3 ms)
        options = {"presolve": "off"} if self.solver == cp.HIGHS and self.parametric else {}
        self.problem.solve(solver=self.solver, **options)
        if self.problem.status != cp.OPTIMAL:
            raise RuntimeError(f"coalition LP ended {self.problem.status}")
        return float(self.problem.value)

    def cost(self, mask: int) -> float:
        """C(S), currency over the horizon, for coalition bitmask `mask` (0 gives 0)."""
        if mask == 0:
            return 0.0
        if not self.parametric:
            raise RuntimeError("this CoalitionLP was built for one fixed coalition")
        self.mask.value = _mask_vector(mask, self.prosumers.n)
        return self._solve()

    def member_net_kwh(self) -> np.ndarray:
        """[n, T] kWh per step at the last solution: d - g + (c - b) dt of every player
        (non-members' rows are meaningless)."""
        p = self.prosumers
        net = p.demand_kwh - p.pv_kwh
        if len(self.storage):
            net = net.copy()
            net[self.storage] += p.dt_h * (self.charge_kw.value - self.discharge_kw.value)
        return net


@dataclass(frozen=True, eq=False)
class GrandCoalition:
    """Grand-coalition optimum: its cost (currency) and every member's net profile
    d - g + (c - b) dt (kWh per step, [n, T]) with charge / discharge (kW, [n, T], 0 without
    storage)."""

    cost: float
    net_kwh: np.ndarray
    charge_kw: np.ndarray
    discharge_kw: np.ndarray


def grand_coalition(prosumers: Prosumers, solver: str = cp.HIGHS) -> GrandCoalition:
    """Solve C(N) once (no parameters) and return the members' dispatch."""
    if not prosumers.has_storage.any():  # nothing to dispatch: the shared meter's bill
        net = prosumers.demand_kwh - prosumers.pv_kwh
        total = net.sum(0)
        cost = float(np.maximum(total, 0) @ prosumers.buy - np.maximum(-total, 0)
                     @ prosumers.sell)
        return GrandCoalition(cost, net, np.zeros_like(net), np.zeros_like(net))
    lp = CoalitionLP(prosumers, solver, mask=np.ones(prosumers.n))
    cost = lp._solve()
    charge = np.zeros((prosumers.n, prosumers.steps))
    discharge = np.zeros_like(charge)
    if len(lp.storage):
        charge[lp.storage] = lp.charge_kw.value
        discharge[lp.storage] = lp.discharge_kw.value
    return GrandCoalition(cost, lp.member_net_kwh(), charge, discharge)


def standalone_costs(prosumers: Prosumers, solver: str = cp.HIGHS) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """C({i}) for every player with one LP (currency, [n]), and each player's optimal
    standalone net import (kWh per step, [n, T]; negative = export).

    The n standalone problems share no constraint, so one LP with a meter per player solves all
    of them at once; each player's part of the optimum is that player's own optimum.
    """
    p = prosumers
    n, steps, dt = p.n, p.steps, p.dt_h
    if not p.has_storage.any():  # each player's own meter bill
        net = p.demand_kwh - p.pv_kwh
        return np.maximum(net, 0) @ p.buy - np.maximum(-net, 0) @ p.sell, net
    imp = cp.Variable((n, steps), nonneg=True)
    exp = cp.Variable((n, steps), nonneg=True)
    net: cp.Expression | np.ndarray = p.demand_kwh - p.pv_kwh
    s = np.flatnonzero(p.has_storage)
    constraints: list[cp.Constraint] = []
    if len(s):
        c, b, _, constraints = _storage(p, s, np.ones(n))
        pick = sp.csr_array((np.ones(len(s)), (s, np.arange(len(s)))), shape=(n, len(s)))
        net = net + dt * (pick @ (c - b))
    constraints.append(imp - exp == net)
    cost_i = imp @ p.buy - exp @ p.sell
    problem = cp.Problem(cp.Minimize(cp.sum(cost_i)), constraints)
    problem.solve(solver=solver)
    if problem.status != cp.OPTIMAL:
        raise RuntimeError(f"standalone LP ended {problem.status}")
    return np.asarray(cost_i.value, dtype=float), imp.value - exp.value


def coalition_values(prosumers: Prosumers, progress: bool = True,
                     solver: str = cp.HIGHS) -> np.ndarray:
    """v(S) = sum_{i in S} C({i}) - C(S) for every coalition, currency, [2^n] by bitmask
    (bit i set = player i in S; v[0] = 0). Refuses n > 16 (2^n LPs)."""
    return _savings(coalition_costs(prosumers, progress, solver), prosumers.n)


def coalition_costs(prosumers: Prosumers, progress: bool = True,
                    solver: str = cp.HIGHS) -> np.ndarray:
    """C(S) for every coalition, currency, [2^n] by bitmask (C of the empty set = 0), from one
    parametric LP re-solved 2^n - 1 times (in closed form when nobody has storage). Refuses
    n > 16."""
    n = prosumers.n
    if n > MAX_PLAYERS:
        raise ValueError(f"coalition_costs enumerates 2^n coalitions; n = {n} > {MAX_PLAYERS} "
                         f"players is too many: cluster them (clustered_allocation) or sample "
                         f"(shapley_monte_carlo)")
    if not prosumers.has_storage.any():
        # without storage the LP's optimum is the shared meter's bill of the members' summed
        # net (m+ and m- take its two sides): every coalition at once, no solver needed
        members = (np.arange(1 << n)[:, None] >> np.arange(n)) & 1
        net = members @ (prosumers.demand_kwh - prosumers.pv_kwh)
        return np.maximum(net, 0.0) @ prosumers.buy - np.maximum(-net, 0.0) @ prosumers.sell
    lp = CoalitionLP(prosumers, solver)
    cost = np.zeros(1 << n)
    for mask in tqdm(range(1, 1 << n), desc=f"coalitions of {n}", disable=not progress,
                     leave=False):
        cost[mask] = lp.cost(mask)
    return cost


def _savings(cost: np.ndarray, n: int) -> np.ndarray:
    masks = np.arange(1 << n)
    bits = (masks[:, None] >> np.arange(n)) & 1  # [2^n, n]
    singles = cost[1 << np.arange(n)]
    return bits @ singles - cost


# --------------------------------------------------------------------------------------------
# Allocations
# --------------------------------------------------------------------------------------------


def _check_table(values: np.ndarray, n: int) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.shape != (1 << n,):
        raise ValueError(f"values must have shape (2**{n},) = ({1 << n},), got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("values must be finite")
    return values


def shapley_exact(values: np.ndarray, n: int) -> np.ndarray:
    """Exact Shapley value [n] of the game given as a bitmask table `values` [2^n]:
    phi_i = sum_{S not containing i} |S|! (n - |S| - 1)! / n! (v(S + i) - v(S))."""
    values = _check_table(values, n)
    masks = np.arange(1 << n)
    size = np.bitwise_count(masks)
    weight = np.array([math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)
                       for s in range(n)])
    phi = np.empty(n)
    for i in range(n):
        without = masks[(masks >> i) & 1 == 0]
        phi[i] = weight[size[without]] @ (values[without | (1 << i)] - values[without])
    return phi


def shapley_monte_carlo(value_fn: Callable[[int], float], n: int, samples: int,
                        rng: np.random.Generator) -> np.ndarray:
    """Shapley value [n] estimated from `samples` random orders of the players.

    value_fn(mask) gives v(S) for a bitmask (v(0) must be 0); it is called at most once per
    coalition (results cached). Every order's marginal contributions add up to v(N), so the
    estimate is exactly efficient.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    cache: dict[int, float] = {0: 0.0}

    def v(mask: int) -> float:
        if mask not in cache:
            cache[mask] = float(value_fn(mask))
        return cache[mask]

    total = np.zeros(n)
    for _ in range(samples):
        mask, before = 0, 0.0
        for i in rng.permutation(n):
            mask |= 1 << int(i)
            after = v(mask)
            total[i] += after - before
            before = after
    return total / samples


def _coalition_matrix(n: int) -> np.ndarray:
    masks = np.arange(1 << n)
    return ((masks[:, None] >> np.arange(n)) & 1).astype(float)


def nucleolus(values: np.ndarray, n: int, solver: str = cp.HIGHS, tol: float = 1e-9
              ) -> np.ndarray:
    """Nucleolus [n] of the game `values` [2^n] (bitmask table), over the imputations.

    A sequence of LPs: minimise the largest excess e(S, x) = v(S) - x(S) over the coalitions
    not yet fixed; coalitions whose constraint has a positive dual are tight in every optimum,
    so their excess is fixed at that level; coalitions whose indicator lies in the span of the
    fixed ones (and of N) have a determined excess and drop out. Each stage adds at least one
    independent row, so at most n - 1 stages are needed before x is unique.
    """
    values = _check_table(values, n)
    full = (1 << n) - 1
    singles = values[1 << np.arange(n)]
    scale = max(1.0, float(np.max(np.abs(values))))
    if singles.sum() > values[full] + 1e-9 * scale:
        raise ValueError("the game has no imputation: sum of v({i}) exceeds v(N)")
    if n == 1:
        return np.array([values[full]])
    rows = _coalition_matrix(n)
    free = np.arange(1, full)  # proper non-empty coalitions
    basis = np.ones((1, n)) / math.sqrt(n)  # orthonormal rows spanning N and fixed coalitions
    fixed_rows: list[np.ndarray] = []
    fixed_rhs: list[float] = []
    x = cp.Variable(n)
    eps = cp.Variable()
    while True:
        constraints = [cp.sum(x) == values[full], x >= singles]
        if fixed_rows:
            constraints.append(np.array(fixed_rows) @ x == np.array(fixed_rhs))
        excess = rows[free] @ x + eps >= values[free]  # v(S) - x(S) <= eps
        constraints.append(excess)
        problem = cp.Problem(cp.Minimize(eps), constraints)
        problem.solve(solver=solver)
        if problem.status != cp.OPTIMAL:
            raise RuntimeError(f"nucleolus stage LP ended {problem.status}")
        dual = np.asarray(excess.dual_value, dtype=float)
        level = float(eps.value)
        order = np.argsort(-dual)  # largest multipliers first: the most clearly tight
        # the free multipliers add up to 1 (eps's coefficient), so the largest is positive;
        # keeping it even below tol guarantees progress
        count = max(1, int(np.sum(dual > tol * max(1.0, float(dual.max())))))
        tight = free[order[:count]]
        for s in tight:
            residual = rows[s] - (basis @ rows[s]) @ basis
            norm = np.linalg.norm(residual)
            if norm > 1e-9:  # independent of what is fixed so far
                basis = np.vstack([basis, residual / norm])
                fixed_rows.append(rows[s])
                fixed_rhs.append(values[s] - level)
        if len(basis) >= n:
            break
        projected = rows[free] - (rows[free] @ basis.T) @ basis
        free = free[np.linalg.norm(projected, axis=1) > 1e-9]
        if len(free) == 0:
            break
    if len(basis) < n:  # no free coalition left to pin x down further
        return np.asarray(x.value, dtype=float)
    # x is the unique solution of efficiency plus the n - 1 independent fixed excesses; solving
    # that square system is more precise than the last LP's iterate
    a = np.vstack([np.ones(n), np.array(fixed_rows)])
    return np.linalg.solve(a, np.concatenate([[values[full]], fixed_rhs]))


def core_violation(x: np.ndarray, values: np.ndarray, n: int) -> float:
    """max over proper non-empty coalitions S of the excess v(S) - x(S), currency (for n = 1,
    the grand coalition's).

    <= 0 (up to solver tolerance) means no coalition could do better on its own, so an
    efficient x (x(N) = v(N), not checked here) is in the core; how far below 0 tells how
    stable it is.
    """
    values = _check_table(values, n)
    x = np.asarray(x, dtype=float)
    if x.shape != (n,):
        raise ValueError(f"x must have shape ({n},), got {x.shape}")
    proper = slice(1, -1) if n > 1 else slice(1, None)
    return float(np.max(values[proper] - _coalition_matrix(n)[proper] @ x))


# --------------------------------------------------------------------------------------------
# K-means scaling
# --------------------------------------------------------------------------------------------


def cluster(prosumers_profiles: np.ndarray, k: int, seed: int) -> np.ndarray:
    """K-means labels [n] in [0, k) of the players' profiles [n, T] (e.g. grand-coalition net
    kWh per step), with n_init=10 restarts seeded by `seed`."""
    from sklearn.cluster import KMeans

    profiles = np.asarray(prosumers_profiles, dtype=float)
    if profiles.ndim != 2:
        raise ValueError(f"prosumers_profiles must have shape [n, T], got {profiles.shape}")
    if not 1 <= k <= profiles.shape[0]:
        raise ValueError(f"k must be in 1..{profiles.shape[0]} (number of players), got {k}")
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(profiles)
    # KMeans may leave a cluster empty when profiles repeat; renumber to 0..K'-1
    return np.unique(labels, return_inverse=True)[1]


def split_payoff(cluster_payoff: np.ndarray, labels: np.ndarray, standalone: np.ndarray,
                 standalone_net_kwh: np.ndarray, spread: np.ndarray, rule: SplitRule
                 ) -> np.ndarray:
    """Members' payoffs [n] (currency) from their clusters' payoffs [K].

    rule "potential" (default): in proportion to each member's sharing potential
        sum_t (buy_t - sell_t) |net_it|, the money its standalone imports and exports lose to
        the buy/sell spread; only that spread can be saved by pooling, and a kWh matched inside
        the community saves it once. Members with no exchange get nothing. On the synthetic
        communities of `experiments.coop_scaling` (10 players, 4 seeds, K = 3, 5, 7) it stays
        closest to the exact nucleolus: mean |deviation| 0.22 / 0.12 / 0.04 of the largest
        payoff, against 0.28 / 0.14 / 0.05 for "cost" and 0.24 / 0.14 / 0.06 for "equal".
    rule "cost": in proportion to |C({i})|, the size of each member's standalone bill (a net
        exporter's negative cost counts by its size).
    rule "equal": equal shares.
    A cluster whose weights are all zero splits equally. `spread` = buy - sell, [T].
    """
    labels = np.asarray(labels)
    k = len(cluster_payoff)
    if rule == "potential":
        weight = np.abs(standalone_net_kwh) @ spread
    elif rule == "cost":
        weight = np.abs(standalone)
    elif rule == "equal":
        weight = np.ones(len(labels))
    else:
        raise ValueError(f"rule must be 'potential', 'cost' or 'equal', got {rule!r}")
    total = np.bincount(labels, weights=weight, minlength=k)
    size = np.bincount(labels, minlength=k)
    share = np.where(total[labels] > 0, weight / np.where(total > 0, total, 1.0)[labels],
                     1.0 / size[labels])
    return cluster_payoff[labels] * share


@dataclass(frozen=True, eq=False)
class CoopResult:
    """An allocation of the community's savings.

    payoff: [n] savings per member, currency (member pays standalone[i] - payoff[i]).
    standalone: [n] C({i}), currency. grand_cost: C(N), currency.
    labels: [n] cluster of each member (arange(n) for the exact game).
    game_values: [2^K] bitmask table of the game that was allocated (None if sampled).
    game_payoff: [K] payoffs in that game (clusters' total savings for the clustered path
        exclude what members save inside their own cluster).
    method: "nucleolus", "shapley" or "shapley-mc"; seconds: wall time per phase.
    """

    payoff: np.ndarray
    standalone: np.ndarray
    grand_cost: float
    labels: np.ndarray
    game_values: np.ndarray | None
    game_payoff: np.ndarray
    method: str
    seconds: dict[str, float] = field(default_factory=dict)


def _allocate_table(values: np.ndarray, n: int, config: CoopConfig) -> np.ndarray:
    if config.allocation == "nucleolus":
        return nucleolus(values, n, config.solver)
    return shapley_exact(values, n)


def exact_allocation(prosumers: Prosumers, config: CoopConfig = CoopConfig()) -> CoopResult:
    """Enumerate all 2^n coalitions and allocate with `config.allocation`."""
    n = prosumers.n
    t0 = time.perf_counter()
    costs = coalition_costs(prosumers, config.progress, config.solver)
    values = _savings(costs, n)
    t1 = time.perf_counter()
    x = _allocate_table(values, n, config)
    t2 = time.perf_counter()
    standalone = costs[1 << np.arange(n)]
    grand_cost = float(costs[-1])
    return CoopResult(x, standalone, grand_cost, np.arange(n), values, x, config.allocation,
                      {"coalitions": t1 - t0, "allocation": t2 - t1})


def clustered_allocation(prosumers: Prosumers, config: CoopConfig = CoopConfig()
                         ) -> CoopResult:
    """The K-means path: grand coalition, cluster net profiles, allocate the K-player game of
    aggregated clusters, split each cluster's payoff among its members (`config.split`).

    A cluster's payoff to split is its payoff x_k in the cluster game plus what its members
    save by pooling among themselves (sum of their C({i}) minus the aggregated cluster's
    standalone cost), so the members' payoffs add up to v(N) = sum_i C({i}) - C(N).
    """
    p = prosumers
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    grand = grand_coalition(p, config.solver)
    standalone, standalone_net = standalone_costs(p, config.solver)
    seconds["grand+standalone"] = time.perf_counter() - t
    t = time.perf_counter()
    labels = cluster(grand.net_kwh, min(config.clusters, p.n), config.seed)
    clusters = p.aggregate(labels)
    k = clusters.n
    seconds["cluster"] = time.perf_counter() - t
    t = time.perf_counter()
    if k <= config.exact_limit:
        costs = coalition_costs(clusters, config.progress, config.solver)
        agg_standalone = costs[1 << np.arange(k)]
        # the real grand cost, not the aggregated one, so that the payoffs add up to v(N)
        costs[-1] = grand.cost
        values = _savings(costs, k)
        seconds["coalitions"] = time.perf_counter() - t
        t = time.perf_counter()
        x_k = _allocate_table(values, k, config)
        method = config.allocation
    else:
        agg_standalone, _ = standalone_costs(clusters, config.solver)
        grand_value = float(agg_standalone.sum() - grand.cost)
        lp = CoalitionLP(clusters, config.solver)
        full = (1 << k) - 1
        bits = np.arange(k)

        def value(mask: int) -> float:
            if mask == full:
                return grand_value
            members = ((mask >> bits) & 1).astype(bool)
            return float(agg_standalone[members].sum() - lp.cost(mask))

        values = None
        x_k = shapley_monte_carlo(value, k, config.mc_samples, np.random.default_rng(config.seed))
        seconds["coalitions"] = time.perf_counter() - t
        t = time.perf_counter()
        method = "shapley-mc"
    inside = np.bincount(labels, weights=standalone, minlength=k) - agg_standalone
    payoff = split_payoff(x_k + inside, labels, standalone, standalone_net, p.buy - p.sell,
                          config.split)
    seconds["allocation"] = time.perf_counter() - t
    return CoopResult(payoff, standalone, grand.cost, labels, values, x_k, method, seconds)


def allocate(prosumers: Prosumers, config: CoopConfig = CoopConfig()) -> CoopResult:
    """Exact game up to `config.exact_limit` players, the K-means path above it."""
    if prosumers.n <= config.exact_limit:
        return exact_allocation(prosumers, config)
    return clustered_allocation(prosumers, config)


__all__ = [
    "MAX_PLAYERS", "Allocation", "CoalitionLP", "CoopConfig", "CoopResult", "GrandCoalition",
    "Prosumers", "SplitRule", "allocate", "cluster", "clustered_allocation", "coalition_values",
    "core_violation", "coalition_costs", "exact_allocation", "grand_coalition", "nucleolus",
    "shapley_exact", "shapley_monte_carlo", "split_payoff", "standalone_costs",
]
