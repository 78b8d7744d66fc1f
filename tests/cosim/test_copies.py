"""Independent copies of a scenario stepped as one batch (`Simulation.from_config(copies=N)`):
each copy is checked against a simulation of its own, driven the same way."""

from __future__ import annotations

import numpy as np
import pytest

from cosim.config import ConfigError
from cosim.envs import MultiAgentEnv, RewardConfig
from cosim.scenario import _market_groups, _shard_bounds
from cosim.simulation import Simulation

from .conftest import small, synthetic_profiles

COPIES = 3


def _config(**changes):
    """IEEE 13, 30 households in 3 double-auction markets, no aggregator (copies refuse
    one), every household driven from outside."""
    sections = dict(run={"steps": 6}, aggregators={"count": 0},
                    households={"count": 30, "shard_size": 10, "policy": "external"},
                    markets={"households_per_market": 10})
    for name, values in changes.items():
        sections[name] = sections.get(name, {}) | values
    return small(**sections)


@pytest.fixture(scope="module")
def profiles():
    return synthetic_profiles(homes=30)


def _actions(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.column_stack([rng.uniform(-1, 1, (n, 2)), rng.uniform(0, 1, (n, 4))])


def _alone(config, profiles, actions: list[np.ndarray]) -> list:
    """The step results of one copy simulated on its own."""
    sim = Simulation.from_config(config, record=False, profiles=profiles)
    sim.reset()
    out = [sim.step(a) for a in actions]
    sim.close()
    return out


def _check_copy(together: list, alone: list, copy: int, n: int, markets: int) -> None:
    rows = slice(copy * n, (copy + 1) * n)
    for both, one in zip(together, alone):
        for name in one.costs._fields:
            np.testing.assert_allclose(getattr(both.costs, name)[rows],
                                       getattr(one.costs, name), rtol=1e-9, atol=1e-9,
                                       err_msg=f"step {one.step} copy {copy}: {name}")
        if one.observations is not None:
            np.testing.assert_allclose(both.observations[rows], one.observations,
                                       rtol=1e-9, atol=1e-9)
        cut = slice(copy * markets, (copy + 1) * markets)
        np.testing.assert_array_equal(both.markets["market"][cut] - copy * markets,
                                      one.markets["market"])
        for name in ("price", "volume_kwh", "unmatched_demand_kwh", "unmatched_supply_kwh"):
            np.testing.assert_allclose(both.markets[name][cut], one.markets[name],
                                       rtol=1e-9, atol=1e-9)
        # the batch iterates until every copy has converged, so a copy may take more
        # iterations than alone: its solution agrees to the solver's tolerance, and
        # losses (a difference of large powers) to about 1e-8 of the substation's
        g, single = both.copies, one.grid
        assert bool(g.converged[copy]) == single.converged
        assert int(g.violations[copy]) == single.violations
        for name in ("v_min_pu", "v_max_pu", "losses_kwh", "substation_kwh",
                     "max_line_loading"):
            np.testing.assert_allclose(getattr(g, name)[copy], getattr(single, name),
                                       rtol=1e-7, atol=1e-7, err_msg=name)


def test_each_copy_is_the_scenario_driven_alone(profiles):
    """Three copies with different actions: each one's costs, observations, markets and
    power flow are those of a simulation of its own with its actions; the copies do
    differ, and the step's totals are the copies' sums."""
    config = _config()
    n, rng = config.households.count, np.random.default_rng(4)
    together = Simulation.from_config(config, record=False, profiles=profiles,
                                      copies=COPIES)
    assert together.n_households == COPIES * n and together.copies == COPIES
    table = together.households
    np.testing.assert_array_equal(table["copy"], np.repeat(np.arange(COPIES), n))
    first = together.reset()
    actions = [[_actions(rng, n) for _ in range(config.run.steps)] for _ in range(COPIES)]
    results = [together.step(np.concatenate([a[t] for a in actions]))
               for t in range(config.run.steps)]
    together.close()
    markets = len(results[0].markets["market"]) // COPIES
    for copy in range(COPIES):
        np.testing.assert_array_equal(first[copy * n:(copy + 1) * n], first[:n])
        _check_copy(results, _alone(config, profiles, actions[copy]), copy, n, markets)
    bills = results[-1].costs.bill.reshape(COPIES, n)
    assert np.abs(bills[0] - bills[1]).max() > 1e-3  # the copies were driven apart
    last = results[-1]
    assert last.grid.substation_kwh == pytest.approx(last.copies.substation_kwh.sum(),
                                                     rel=1e-12)
    assert last.grid.violations == last.copies.violations.sum()
    assert last.grid.v_min_pu == last.copies.v_min_pu.min()


def test_mahtm_pools_the_microgrids_of_each_copy_apart(profiles):
    """MAHTM's third layer pools the microgrids' residuals: with copies, each copy's own
    microgrids only (a pool across copies would move every copy's prices)."""
    config = _config(markets={"mechanism": "mahtm", "households_per_market": 10})
    n, rng = config.households.count, np.random.default_rng(5)
    together = Simulation.from_config(config, record=False, profiles=profiles, copies=2)
    together.reset()
    actions = [[_actions(rng, n) for _ in range(config.run.steps)] for _ in range(2)]
    results = [together.step(np.concatenate([a[t] for a in actions]))
               for t in range(config.run.steps)]
    together.close()
    for copy in range(2):
        _check_copy(results, _alone(config, profiles, actions[copy]), copy, n,
                    len(results[0].markets["market"]) // 2)


def test_the_rl_environment_over_copies_gives_each_copy_its_own_rewards(profiles):
    """Agents of every copy; the network's shares (losses, violations) of each copy go to
    its own households: the rewards are those of an environment per copy."""
    config = _config(households={"policy": "rule"})
    reward = RewardConfig(losses_share=1.0, violation_penalty=0.01, voltage_penalty=1.0)
    n, rng = config.households.count, np.random.default_rng(6)
    env = MultiAgentEnv(config, reward, profiles=profiles, copies=2)
    assert len(env.possible_agents) == 2 * n
    alone = [MultiAgentEnv(config, reward, profiles=profiles) for _ in range(2)]
    env.reset_arrays()
    for e in alone:
        e.reset_arrays()
    done = False
    while not done:
        acts = [_actions(rng, n) for _ in range(2)]
        obs, rewards, done, _ = env.step_arrays(np.concatenate(acts))
        for copy, e in enumerate(alone):
            obs1, rewards1, _, _ = e.step_arrays(acts[copy])
            rows = slice(copy * n, (copy + 1) * n)
            np.testing.assert_allclose(rewards[rows], rewards1, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(obs[rows], obs1, rtol=1e-9, atol=1e-9)
    for e in [env, *alone]:
        e.close()
    with pytest.raises(ValueError, match="global_state"):
        MultiAgentEnv(config, reward, profiles=profiles, copies=2, global_state=True)


def test_copies_on_ray_are_the_local_copies(profiles, ray_cluster):
    config = _config()
    n, rng = config.households.count, np.random.default_rng(7)
    actions = [_actions(rng, 2 * n) for _ in range(config.run.steps)]
    out = []
    for backend in ("local", "ray"):
        sim = Simulation.from_config(config, backend, record=False, profiles=profiles,
                                     copies=2)
        sim.reset()
        out.append(np.array([sim.step(a).costs.bill for a in actions]))
        sim.close()
    np.testing.assert_array_equal(out[0], out[1])


def test_what_copies_refuse(profiles):
    config = _config()
    with pytest.raises(ValueError, match="copies must be"):
        Simulation.from_config(config, record=False, profiles=profiles, copies=0)
    with pytest.raises(ValueError, match="without records"):
        Simulation.from_config(config, record=True, profiles=profiles, copies=2)
    with pytest.raises(ConfigError, match="aggregators.count"):
        Simulation.from_config(small(aggregators={"count": 1}), record=False,
                               profiles=profiles, copies=2)
    with pytest.raises(ConfigError, match="grid.controls"):
        Simulation.from_config(_config(grid={"controls": "opendss"}), record=False,
                               profiles=profiles, copies=2)


def test_copies_are_dealt_to_shards_whole_or_cut_alike():
    # 4 copies of 30 households in markets of 10: two shards of two whole copies each
    assert _shard_bounds(120, 60, 10, copies=4) == [(0, 60), (60, 120)]
    # a copy larger than a shard: every copy cut as the scenario alone would be
    one = _shard_bounds(30, 20, 10)
    assert _shard_bounds(60, 20, 10, copies=2) == one + [(a + 30, b + 30) for a, b in one]
    # 25 households in markets of 10 cut into shards of 10: markets never straddle copies
    bounds = _shard_bounds(50, 10, 10, copies=2)
    assert bounds == [(0, 10), (10, 20), (20, 25), (25, 35), (35, 45), (45, 50)]
    assert _market_groups(bounds, 10, 25) == [[0], [1], [2], [3], [4], [5]]
    # shards smaller than markets share them, within a copy only
    bounds = _shard_bounds(40, 5, 10, copies=2)
    assert _market_groups(bounds, 10, 20) == [[0, 1], [2, 3], [4, 5], [6, 7]]
