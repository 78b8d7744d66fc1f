"""The PettingZoo and RLlib environments over the real step."""

from __future__ import annotations

import numpy as np
import pytest

from agents.households import ACTIONS, FIELDS
from cosim.envs import EnvError, MultiAgentEnv, ParallelEnv, RewardConfig
from cosim.simulation import Simulation

from .conftest import small, synthetic_profiles


def _config(**changes):
    return small(run={"steps": 4}, households={"count": 20, "shard_size": 10},
                 markets={"households_per_market": 10}, **changes)


@pytest.fixture(scope="module")
def profiles():
    return synthetic_profiles(homes=30)


def test_parallel_env_passes_pettingzoos_api_test(profiles):
    from pettingzoo.test import parallel_api_test

    env = ParallelEnv(_config(), profiles=profiles)
    parallel_api_test(env, num_cycles=10)
    env.close()


def test_rllib_env_passes_rllibs_checker(profiles):
    from ray.rllib.utils.pre_checks.env import check_multiagent_environments

    env = MultiAgentEnv(_config(), profiles=profiles)
    check_multiagent_environments(env)
    obs, _ = env.reset()
    assert set(obs["household_3"]) == {"obs", "agent"} and obs["household_3"]["agent"] == 3
    env.close()


def test_an_episode_is_the_simulation_with_the_same_actions(profiles):
    """The environment adds nothing to the step: its observations and costs are the
    simulation's own for the same actions, and the reward is minus the priced costs."""
    config = _config()
    reward = RewardConfig(discomfort_cost=2.0, shortfall_cost=3.0, carbon_price=0.1)
    env = ParallelEnv(config, reward, profiles=profiles)
    external = config.model_copy(update={"households": config.households.model_copy(
        update={"policy": "external"})})
    sim = Simulation.from_config(external, record=False, profiles=profiles)
    rng = np.random.default_rng(0)
    obs, _ = env.reset()
    np.testing.assert_array_equal(np.stack([obs[a] for a in env.possible_agents]),
                                  sim.reset())
    for t in range(config.run.steps):
        act = np.column_stack([rng.uniform(-1, 1, (20, 2)), rng.uniform(0, 1, (20, 4))])
        obs, rewards, terms, truncs, infos = env.step(
            {a: act[k] for k, a in enumerate(env.possible_agents)})
        result = sim.step(act)
        c = result.costs
        cost = (c.bill + c.operating_cost + 2.0 * c.discomfort_kh
                + 3.0 * c.ev_shortfall_kwh + 0.1 * c.emissions_kg)
        np.testing.assert_allclose([rewards[a] for a in env.possible_agents], -cost,
                                   rtol=0, atol=1e-12)
        assert infos["household_0"]["converged"] == result.grid.converged
        assert all(truncs.values()) == result.done and not any(terms.values())
        if not result.done:
            np.testing.assert_array_equal(np.stack([obs[a] for a in env.possible_agents]),
                                          result.observations)
    assert env.agents == []
    env.close()
    sim.close()


def test_network_shares_in_the_reward(profiles):
    """Voltage, losses and violations enter as documented: the voltage term from the
    agent's own next observation, the network terms shared equally."""
    shares = RewardConfig(voltage_penalty=100.0, losses_share=1.0, violation_penalty=0.5,
                          overload_penalty=2.0)
    plain, shared = (ParallelEnv(_config(grid={"feeder": "ieee13", "vmax_pu": 1.0}), r,
                                 profiles=profiles) for r in (RewardConfig(), shares))
    plain.reset()
    shared.reset()
    wholesale, vmin = shared._core.wholesale, shared._core.vmin
    act = {a: np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0]) for a in plain.possible_agents}
    for t in range(3):
        _, base, *_ = plain.step(act)
        obs, rewarded, _, _, infos = shared.step(act)
        info = infos["household_0"]
        for k, a in enumerate(shared.possible_agents):
            v = 1.0 + 0.05 * obs[a][FIELDS.index("voltage")]  # the field's documented scale
            assert 0.9 < v < 1.1
            extra = 100.0 * (max(v - 1.0, 0) + max(vmin - v, 0)) + (
                info["losses_kwh"] * wholesale[t] + 0.5 * info["violations"]
                + 2.0 * info["overloaded_lines"]) / 20
            assert rewarded[a] == pytest.approx(base[a] - extra, abs=1e-12)
    assert info["violations"] > 0  # the tight limit made the terms bite
    plain.close()
    shared.close()


def test_bad_actions_name_the_agent_and_the_step(profiles):
    env = ParallelEnv(_config(), profiles=profiles)
    env.reset()
    good = {a: np.zeros(len(ACTIONS)) for a in env.possible_agents}
    with pytest.raises(EnvError, match=r"step 0: agent 'household_4': battery action 1.5 "
                                       r"outside \[-1, 1\]"):
        env.step(good | {"household_4": np.array([1.5, 0, 0, 0, 0, 0])})
    with pytest.raises(EnvError, match=r"step 0: agent 'household_2': .* not finite"):
        env.step(good | {"household_2": np.array([np.nan, 0, 0, 0, 0, 0])})
    with pytest.raises(EnvError, match=r"step 0: unknown agent 'household_99'"):
        env.step(good | {"household_99": np.zeros(6)})
    with pytest.raises(EnvError, match=r"step 0: no action for agent 'household_0'"):
        env.step({a: v for a, v in good.items() if a != "household_0"})
    with pytest.raises(EnvError, match=r"step 0: agent 'household_1': action of shape \(3,\)"):
        env.step(good | {"household_1": np.zeros(3)})
    env.step(good)  # the failed calls ran nothing: step 0 runs now
    assert env._core.step_index == 1
    with pytest.raises(ValueError, match="discomfort_cost"):
        RewardConfig(discomfort_cost=-1.0)
    env.close()


def test_line_loading_in_the_step_result_is_the_recorded_lines(profiles, tmp_path):
    """The step's highest loading and overloaded lines are those of the `lines` table."""
    import pandas as pd

    from cosim.backends import LocalBackend
    from cosim.scenario import build

    config = _config()
    sim = Simulation(build(config, profiles), LocalBackend(), tmp_path)
    sim.reset()
    results = [sim.step() for _ in range(config.run.steps)]
    sim.close()
    lines = pd.read_parquet(tmp_path / "lines")
    by_step = lines.groupby("step").loading
    for r in results:
        assert r.grid.max_line_loading == pytest.approx(by_step.max()[r.step], abs=0)
        assert r.grid.overloaded_lines == int((by_step.get_group(r.step) > 1.0).sum())
    assert max(r.grid.max_line_loading for r in results) > 0


def test_the_global_state_summarises_every_household_and_the_last_step(profiles):
    """What a centralised critic sees: every household's observation summarised, and the
    network's last step as `infos` reported it; the same in both environments."""
    rllib = MultiAgentEnv(_config(), profiles=profiles, global_state=True)
    zoo = ParallelEnv(_config(), profiles=profiles)
    obs, _ = rllib.reset()
    zoo.reset()
    act = {a: np.array([0.5, 0.0, 0.3, 0.2, 1.0, 0.0]) for a in rllib.possible_agents}
    info = None
    for _ in range(2):
        x = np.stack([obs[a]["obs"] for a in rllib.possible_agents])
        state = obs["household_0"]["state"]
        assert rllib.observation_spaces["household_0"].contains(obs["household_0"])
        np.testing.assert_allclose(state[:16], x.mean(0), rtol=1e-6)
        np.testing.assert_allclose(state[16:32], x.std(0), rtol=1e-5, atol=1e-7)
        v = x[:, FIELDS.index("voltage")]
        np.testing.assert_allclose(state[32:34], [v.min(), v.max()], rtol=1e-6)
        if info is None:
            assert (state[34:] == 0).all()
        else:
            np.testing.assert_allclose(state[34:], [info["max_line_loading"],
                                                    info["losses_kwh"] / 20,
                                                    info["substation_kwh"] / 20], rtol=1e-6)
        np.testing.assert_array_equal(zoo.state(), state)
        obs, _, _, _, infos = rllib.step(act)
        zoo.step(act)
        info = infos["household_0"]
    rllib.close()
    zoo.close()


def test_the_array_step_is_the_dict_step(profiles):
    """`step_arrays` (every household's actions as one array) gives what `step` gives for
    the same actions, state included, and checks actions as `step` does."""
    by_dict = MultiAgentEnv(_config(), profiles=profiles, global_state=True)
    by_array = MultiAgentEnv(_config(), profiles=profiles, global_state=True)
    agents = by_dict.possible_agents
    obs, _ = by_dict.reset()
    x = by_array.reset_arrays()
    rng = np.random.default_rng(1)
    done = False
    while not done:
        np.testing.assert_array_equal(x, np.stack([obs[a]["obs"] for a in agents]))
        np.testing.assert_array_equal(by_array.state(), obs[agents[0]]["state"])
        act = np.column_stack([rng.uniform(-1, 1, (20, 2)), rng.uniform(0, 1, (20, 4))])
        obs, rewards, _, truncs, infos = by_dict.step({a: act[k] for k, a in enumerate(agents)})
        x, r, done, info = by_array.step_arrays(act)
        np.testing.assert_array_equal(r, [rewards[a] for a in agents])
        assert done == truncs["__all__"] and info == infos[agents[0]]
    assert by_array.agents == [] == by_dict.agents
    with pytest.raises(EnvError, match="the episode is over"):
        by_array.step_arrays(act)
    by_array.reset_arrays()
    bad = np.zeros((20, len(ACTIONS)))
    bad[4, 0] = 1.5
    with pytest.raises(EnvError, match=r"step 0: agent 'household_4': battery action 1.5 "
                                       r"outside \[-1, 1\]"):
        by_array.step_arrays(bad)
    bad[2, 1] = np.nan
    with pytest.raises(EnvError, match=r"step 0: agent 'household_2': .* not finite"):
        by_array.step_arrays(bad)
    with pytest.raises(EnvError, match=r"step 0: actions of shape \(19, 6\), expected "
                                       r"\(20, 6\)"):
        by_array.step_arrays(np.zeros((19, len(ACTIONS))))
    by_array.step_arrays(np.zeros((20, len(ACTIONS))))  # the failed calls ran nothing
    assert by_array._core.step_index == 1
    by_dict.close()
    by_array.close()


def test_what_if_gives_the_rewards_a_second_environment_gets_and_moves_nothing(profiles):
    """`what_if_arrays` against an independent reference: a second environment stepped
    with the same actions up to the step and then with the other actions. The first
    environment, after its counterfactuals, then goes on exactly as one that never had
    any (observations and rewards to the last bit)."""
    config = _config()
    env, twin, plain = (MultiAgentEnv(config, RewardConfig(voltage_penalty=5.0),
                                      profiles=profiles) for _ in range(3))
    rng = np.random.default_rng(3)
    low = np.array([-1.0, -1.0, 0.0, 0.0, 0.0, 0.0])
    acts = [rng.uniform(low, 1.0, (20, len(ACTIONS))) for _ in range(config.run.steps)]
    other = [rng.uniform(low, 1.0, (20, len(ACTIONS))) for _ in range(config.run.steps)]
    env.reset_arrays(), plain.reset_arrays()
    differed = False
    for t in range(config.run.steps):
        guess = env.what_if_arrays(other[t])
        both = env.what_if_arrays(np.stack([acts[t], other[t]]))  # one snapshot for two
        np.testing.assert_array_equal(both[1], guess)
        twin.reset_arrays()
        for s in range(t):
            twin.step_arrays(acts[s])
        np.testing.assert_array_equal(guess, twin.step_arrays(other[t])[1])
        mine, theirs = env.step_arrays(acts[t]), plain.step_arrays(acts[t])
        np.testing.assert_array_equal(mine[0], theirs[0])
        np.testing.assert_array_equal(mine[1], theirs[1])
        np.testing.assert_array_equal(env.state(), plain.state())
        np.testing.assert_array_equal(both[0], mine[1])
        differed |= not np.array_equal(guess, mine[1])
    assert differed  # the other actions mattered, so coming back was tested
    with pytest.raises(EnvError, match="episode is over"):
        env.what_if_arrays(acts[0])
    for e in (env, twin, plain):
        e.close()


def test_a_recording_simulation_cannot_step_back(profiles, tmp_path):
    sim = Simulation.from_config(_config(), out=tmp_path / "run", profiles=profiles)
    sim.reset()
    with pytest.raises(RuntimeError, match="record=False"):
        sim.snapshot()
    sim.close()
