"""The prosumer cooperative game: coalition LP against hand and brute-force costs, Shapley and
nucleolus against hand-solved games, core and superadditivity of the energy game, K-means."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from markets.cooperative import (
    CoalitionLP,
    CoopConfig,
    Prosumers,
    allocate,
    clustered_allocation,
    coalition_costs,
    coalition_values,
    core_violation,
    exact_allocation,
    grand_coalition,
    nucleolus,
    shapley_exact,
    shapley_monte_carlo,
    standalone_costs,
)


def _community(n: int, steps: int = 8, seed: int = 0, storage: float = 0.5,
               **overrides) -> Prosumers:
    """Random small community: demand 0.2-2 kWh, PV on some players, batteries on some."""
    rng = np.random.default_rng(seed)
    demand = rng.uniform(0.2, 2.0, (n, steps))
    pv = rng.uniform(0.0, 3.0, (n, steps)) * (rng.random((n, 1)) < 0.7)
    capacity = np.where(rng.random(n) < storage, rng.uniform(2.0, 8.0, n), 0.0)
    kwargs = dict(demand_kwh=demand, pv_kwh=pv, capacity_kwh=capacity, power_kw=0.5 * capacity,
                  buy=rng.uniform(0.2, 0.4, steps), sell=np.full(steps, 0.05), soc_min=0.1)
    kwargs.update(overrides)
    return Prosumers(**kwargs)


def _bits(mask: int, n: int) -> list[int]:
    return [i for i in range(n) if mask >> i & 1]


# ---------------------------------------------------------------- coalition cost LP


def _no_storage_cost(net: np.ndarray, buy: np.ndarray, sell: np.ndarray) -> float:
    return float(buy @ np.maximum(net, 0) - sell @ np.maximum(-net, 0))


def test_cost_without_storage_matches_the_meter_formula():
    p = _community(4, steps=12, seed=1, storage=0.0)
    lp = CoalitionLP(p)
    net = p.demand_kwh - p.pv_kwh
    for i in range(4):
        assert lp.cost(1 << i) == pytest.approx(_no_storage_cost(net[i], p.buy, p.sell), abs=1e-9)
    # a pair without storage saves the buy/sell spread on what one exports while the other imports
    for i, j in itertools.combinations(range(4), 2):
        matched = np.where(np.sign(net[i]) != np.sign(net[j]),
                           np.minimum(np.abs(net[i]), np.abs(net[j])), 0.0)
        saving = lp.cost(1 << i) + lp.cost(1 << j) - lp.cost(1 << i | 1 << j)
        assert saving == pytest.approx(float((p.buy - p.sell) @ matched), abs=1e-9)
    # the closed form every coalition gets without storage is the LP's optimum
    table = coalition_costs(p, progress=False)
    np.testing.assert_allclose(table[1:], [lp.cost(mask) for mask in range(1, 16)], atol=1e-9)


def test_storage_shifts_pv_surplus_with_its_losses():
    # 2 kWh surplus at t=0, 2 kWh demand at t=1; 0.9 each way: 2 * 0.9 * 0.9 = 1.62 kWh comes
    # back, so 0.38 kWh is bought at 0.30. Without the battery: buy 2 at 0.30, sell 2 at 0.05.
    p = Prosumers(demand_kwh=[[0.0, 2.0]], pv_kwh=[[2.0, 0.0]], capacity_kwh=[10.0],
                  power_kw=[4.0], buy=[0.30, 0.30], sell=[0.05, 0.05], eta_charge=0.9,
                  eta_discharge=0.9, soc_initial=0.0, soc_min=0.0)
    assert CoalitionLP(p).cost(1) == pytest.approx(0.38 * 0.30, abs=1e-9)
    bare = Prosumers(**{**_fields(p), "capacity_kwh": [0.0]})
    assert CoalitionLP(bare).cost(1) == pytest.approx(2 * 0.30 - 2 * 0.05, abs=1e-9)
    # half-hour steps at 2 kW move at most 1 kWh per step: 1 kWh charged (0.9 stored), 0.81 kWh
    # back, so 1.19 kWh bought and 1 kWh of surplus sold
    half = Prosumers(**{**_fields(p), "dt_h": 0.5, "power_kw": [2.0]})
    assert CoalitionLP(half).cost(1) == pytest.approx(1.19 * 0.30 - 1.0 * 0.05, abs=1e-9)


def _fields(p: Prosumers) -> dict:
    return {name: getattr(p, name) for name in p.__dataclass_fields__}


def test_problem_is_dpp_and_standalone_lp_matches_singletons():
    p = _community(5, seed=2)
    lp = CoalitionLP(p)
    assert lp.problem.is_dpp()
    alone, net = standalone_costs(p)
    assert alone == pytest.approx([lp.cost(1 << i) for i in range(5)], abs=1e-8)
    assert net.shape == (5, 8)
    grand = grand_coalition(p)
    assert grand.cost == pytest.approx(lp.cost(31), abs=1e-8)
    # the members' net profiles add up to what the shared meter sees
    assert grand.net_kwh.shape == (5, 8)
    meter = grand.net_kwh.sum(axis=0)
    assert _no_storage_cost(meter, p.buy, p.sell) == pytest.approx(grand.cost, abs=1e-8)


@pytest.mark.parametrize("seed", range(3))
def test_energy_game_is_superadditive(seed):
    n = 4
    v = coalition_values(_community(n, seed=seed), progress=False)
    assert v[0] == 0.0
    assert np.all(v[1 << np.arange(n)] == pytest.approx(0.0, abs=1e-9))
    for s, t in itertools.product(range(1 << n), repeat=2):
        if s & t == 0:
            assert v[s | t] >= v[s] + v[t] - 1e-8


def test_aggregating_like_batteries_is_exact():
    # same efficiencies, SoC limits and C-rate: one big battery is the members' batteries
    p = _community(4, seed=3, storage=1.0)
    costs = coalition_costs(p, progress=False)
    merged = p.aggregate(np.array([0, 0, 1, 1]))
    assert merged.n == 2
    assert CoalitionLP(merged).cost(1) == pytest.approx(costs[0b0011], abs=1e-8)
    assert CoalitionLP(merged).cost(3) == pytest.approx(costs[0b1111], abs=1e-8)


# ---------------------------------------------------------------- allocations on hand-solved games


def _table(n: int, v: dict[tuple[int, ...], float]) -> np.ndarray:
    values = np.zeros(1 << n)
    for members, value in v.items():
        values[sum(1 << i for i in members)] = value
    return values


# v(1) = v(2) = v(3) = 0, v(12) = 4, v(13) = 6, v(23) = 8, v(123) = 12 (players 1..3 as 0..2).
# Shapley, with weights 1/3 (|S| = 0 or 2) and 1/6 (|S| = 1):
#   phi_1 = 1/6 (v12 - v2) + 1/6 (v13 - v3) + 1/3 (v123 - v23) = 4/6 + 6/6 + 4/3  = 3
#   phi_2 = 1/6 (4) + 1/6 (8) + 1/3 (12 - 6)                  = 2/3 + 4/3 + 2   = 4
#   phi_3 = 1/6 (6) + 1/6 (8) + 1/3 (12 - 4)                  = 1 + 4/3 + 8/3   = 5
# Nucleolus: the pair excesses are v(ij) - (12 - x_k) = x_3 - 8, x_2 - 6, x_1 - 4 and add up to
# sum(x) - 18 = -6, so the largest is at least -2, reached only when all three equal -2:
# x = (2, 4, 6) (singleton excesses -2, -4, -6 do not exceed it).
THREE = _table(3, {(0, 1): 4, (0, 2): 6, (1, 2): 8, (0, 1, 2): 12})

# Glove game: player 0 holds a left glove, 1 and 2 right gloves; a pair is worth 1.
# Core = {(1, 0, 0)} (x_0 + x_1 >= 1 and x_0 + x_2 >= 1 with sum 1), hence the nucleolus.
# Shapley: player 0 adds 1 when it joins after at least one right glove (4 of 6 orders): 2/3.
GLOVES = _table(3, {(0, 1): 1, (0, 2): 1, (0, 1, 2): 1})


def test_shapley_on_hand_solved_games():
    assert shapley_exact(THREE, 3) == pytest.approx([3, 4, 5])
    assert shapley_exact(GLOVES, 3) == pytest.approx([2 / 3, 1 / 6, 1 / 6])


def test_nucleolus_on_hand_solved_games():
    assert nucleolus(THREE, 3) == pytest.approx([2, 4, 6], abs=1e-9)
    assert nucleolus(GLOVES, 3) == pytest.approx([1, 0, 0], abs=1e-9)
    assert _nucleolus_by_tight_sets(THREE, 3) == pytest.approx([2, 4, 6], abs=1e-9)
    assert core_violation(np.array([2.0, 4, 6]), THREE, 3) == pytest.approx(-2.0)
    assert core_violation(np.array([3.0, 4, 5]), THREE, 3) == pytest.approx(-1.0)
    assert core_violation(shapley_exact(GLOVES, 3), GLOVES, 3) == pytest.approx(1 / 6)


def _square_game(weights: np.ndarray) -> np.ndarray:
    n = len(weights)
    return np.array([weights[_bits(m, n)].sum() ** 2 for m in range(1 << n)])


def test_shapley_efficiency_symmetry_and_dummy():
    # v(S) = (sum of weights in S)^2: players 0 and 1 are symmetric, player 3 is a dummy
    weights = np.array([1.0, 1.0, 2.0, 0.0, 3.0])
    values = _square_game(weights)
    phi = shapley_exact(values, 5)
    assert phi.sum() == pytest.approx(values[-1])
    assert phi[0] == pytest.approx(phi[1])
    assert phi[3] == pytest.approx(0.0, abs=1e-12)
    # for this game phi_i = w_i * sum(w) (each pair term w_i w_j is split equally)
    assert phi == pytest.approx(weights * weights.sum())


@pytest.fixture(scope="module")
def energy_game():
    p = _community(6, seed=4)
    return p, coalition_values(p, progress=False)


def test_monte_carlo_shapley_close_to_exact(energy_game):
    _, values = energy_game
    calls = []

    def value(mask: int) -> float:
        calls.append(mask)
        return values[mask]

    exact = shapley_exact(values, 6)
    estimate = shapley_monte_carlo(value, 6, 3000, np.random.default_rng(0))
    assert estimate.sum() == pytest.approx(values[-1])
    assert np.abs(estimate - exact).max() <= 0.05 * np.abs(exact).max()
    assert len(calls) == len(set(calls)) <= 63  # each coalition evaluated once
    again = shapley_monte_carlo(lambda m: values[m], 6, 3000, np.random.default_rng(0))
    assert again == pytest.approx(estimate)  # seeded


def _sorted_excesses(x: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    excess = [values[m] - x[_bits(m, n)].sum() for m in range(1, (1 << n) - 1)]
    return np.sort(excess)[::-1]


def _assert_lexicographic_minimum(x: np.ndarray, values: np.ndarray, n: int, seed: int) -> None:
    """No nearby imputation has a lexicographically smaller (sorted, descending) excess
    vector."""
    rng = np.random.default_rng(seed)
    singles = values[1 << np.arange(n)]
    mine = _sorted_excesses(x, values, n)
    for _ in range(300):
        step = rng.normal(size=n) * rng.choice([1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
        y = x + step - step.mean()
        if np.any(y < singles):
            continue
        theirs = _sorted_excesses(y, values, n)
        first = np.flatnonzero(np.abs(mine - theirs) > 1e-9)
        assert len(first) == 0 or mine[first[0]] < theirs[first[0]]


def test_nucleolus_is_in_the_core_and_lexicographically_minimal(energy_game):
    _, values = energy_game
    n = 6
    x = nucleolus(values, n)
    assert x.sum() == pytest.approx(values[-1], abs=1e-9)
    assert core_violation(x, values, n) <= 1e-8  # the energy game is balanced
    assert x == pytest.approx(_nucleolus_by_tight_sets(values, n), abs=1e-7)
    _assert_lexicographic_minimum(x, values, n, seed=0)


def _nucleolus_by_tight_sets(values: np.ndarray, n: int) -> np.ndarray:
    """Independent reference (scipy, no duals): at each stage minimise the largest free excess
    eps*, then fix every free coalition whose excess cannot go below eps* while all free
    excesses stay within eps* (one LP per coalition), until the fixed rows determine x."""
    from scipy.optimize import linprog

    rows = np.array([[m >> i & 1 for i in range(n)] for m in range(1 << n)], dtype=float)
    full = (1 << n) - 1
    free = list(range(1, full))
    fixed: list[tuple[int, float]] = []
    x_bounds = [(values[1 << i], None) for i in range(n)]  # imputations: x_i >= v({i})
    while True:
        a_eq = np.array([np.r_[np.ones(n), 0.0]] + [np.r_[rows[s], 0.0] for s, _ in fixed])
        b_eq = np.array([values[full]] + [values[s] - e for s, e in fixed])
        a_ub = np.array([np.r_[-rows[s], -1.0] for s in free])  # v(S) - x(S) <= eps
        b_ub = -values[free]
        eps = linprog(np.r_[np.zeros(n), 1.0], a_ub, b_ub, a_eq, b_eq,
                      x_bounds + [(None, None)], method="highs").x[-1]
        tight = []
        for s in free:
            most = -linprog(-np.r_[rows[s], 0.0], a_ub, b_ub, a_eq, b_eq,
                            x_bounds + [(eps, eps)], method="highs").fun
            if values[s] - most >= eps - 1e-9:  # x(S) cannot rise: tight in every optimum
                tight.append(s)
        fixed += [(s, eps) for s in tight]
        free = [s for s in free if s not in tight]
        a_fin = np.array([np.ones(n)] + [rows[s] for s, _ in fixed])
        if not free or np.linalg.matrix_rank(a_fin) == n:
            b_fin = np.array([values[full]] + [values[s] - e for s, e in fixed])
            return np.linalg.lstsq(a_fin, b_fin, rcond=None)[0]


@pytest.mark.parametrize("seed", range(4))
def test_nucleolus_of_random_games_matches_a_tight_set_reference(seed):
    # random games, with empty cores too: the nucleolus is over the imputations
    n = 4
    rng = np.random.default_rng(seed)
    values = rng.uniform(-1.0, 3.0, 1 << n)
    values[0] = 0.0
    values[-1] = max(values[-1], values[1 << np.arange(n)].sum() + 0.5)  # imputations exist
    x = nucleolus(values, n)
    assert x.sum() == pytest.approx(values[-1], abs=1e-9)
    assert np.all(x >= values[1 << np.arange(n)] - 1e-9)
    assert x == pytest.approx(_nucleolus_by_tight_sets(values, n), abs=1e-7)
    _assert_lexicographic_minimum(x, values, n, seed)


# ---------------------------------------------------------------- K-means path


def test_kmeans_with_one_cluster_per_player_reproduces_the_exact_allocation():
    p = _community(5, seed=5)
    exact = exact_allocation(p, CoopConfig(allocation="nucleolus"))
    for allocation, reference in (("nucleolus", exact.payoff),
                                  ("shapley", shapley_exact(exact.game_values, 5))):
        clustered = clustered_allocation(p, CoopConfig(clusters=5, allocation=allocation))
        assert sorted(clustered.labels) == list(range(5))
        assert clustered.payoff == pytest.approx(reference, abs=1e-7)
        assert clustered.grand_cost == pytest.approx(exact.grand_cost, abs=1e-8)


@pytest.mark.parametrize("split", ["potential", "cost", "equal"])
def test_clustered_payoffs_add_up_to_the_community_savings(split):
    p = _community(14, seed=6)
    config = CoopConfig(clusters=3, split=split)
    result = allocate(p, config)  # 14 > exact_limit: the K-means path
    assert result.method == "nucleolus" and len(result.game_payoff) == 3
    assert result.payoff.sum() == pytest.approx(result.standalone.sum() - result.grand_cost,
                                                abs=1e-7)
    assert core_violation(result.game_payoff, result.game_values, 3) <= 1e-7
    sampled = allocate(p, CoopConfig(clusters=3, exact_limit=2, mc_samples=20, split=split))
    assert sampled.method == "shapley-mc" and sampled.game_values is None
    assert sampled.payoff.sum() == pytest.approx(result.payoff.sum(), abs=1e-7)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("field, value, message", [
    ("demand_kwh", np.full((3, 8), np.nan), "demand_kwh must be finite"),
    ("demand_kwh", -np.ones((3, 8)), "demand_kwh must be >= 0"),
    ("pv_kwh", np.ones((3, 7)), r"pv_kwh must have shape \(3, 8\)"),
    ("capacity_kwh", np.array([1.0, -1.0, 0.0]), "capacity_kwh must be >= 0"),
    ("power_kw", np.ones(4), r"power_kw must be a scalar or have shape \(3,\)"),
    ("sell", np.full(8, 0.5), "sell must not exceed buy"),
    ("buy", np.ones(5), r"buy must be a scalar or have shape \(8,\)"),
    ("eta_charge", 1.5, r"eta_charge must be in \(0, 1\]"),
    ("soc_initial", 0.05, "soc_initial must lie in"),
    ("soc_max", np.nan, "soc_max must be finite"),
    ("dt_h", 0.0, "dt_h must be"),
])
def test_bad_input_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        _community(3, **{field: value})


def test_refuses_too_many_players_and_bad_tables():
    with pytest.raises(ValueError, match="n = 17 > 16"):
        coalition_values(_community(17, steps=2), progress=False)
    with pytest.raises(ValueError, match="values must have shape"):
        shapley_exact(np.zeros(7), 3)
    with pytest.raises(ValueError, match="no imputation"):
        nucleolus(_table(2, {(0,): 1, (1,): 1, (0, 1): 1}), 2)
    with pytest.raises(ValueError, match="split must be"):
        CoopConfig(split="proportional")
    p = _community(3)
    with pytest.raises(ValueError, match="every cluster non-empty"):
        p.aggregate(np.array([0, 2, 2]))
    with pytest.raises(ValueError, match="labels must be integers"):
        p.aggregate(np.array([0.0, 1.0, 1.0]))
