"""RLlib training on the policy bank: the algorithms, checkpoints, deployment, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from agents.households import ACTIONS, FIELDS, SIGNED_ACTIONS
from agents.policies.bank import PolicyBank
from cosim.cli import main
from cosim.envs import MultiAgentEnv, ParallelEnv
from cosim.simulation import Simulation
from experiments.rl.runner import StackedEnvRunner
from experiments.rl.train import (
    MODULE_ID,
    TrainConfig,
    algorithm_config,
    bank_return,
    load_bank,
    train,
)
from tests.cosim.conftest import small, synthetic_profiles

SHIPPED = Path(__file__).parents[2] / "experiments" / "configs"


def _config(steps: int = 8):
    return small(run={"steps": steps}, households={"count": 10, "shard_size": 10},
                 markets={"households_per_market": 10})


@pytest.fixture(scope="module")
def profiles():
    return synthetic_profiles(homes=30)


@pytest.fixture(scope="module")
def trained(ray_cluster, profiles, tmp_path_factory):
    """A short IPPO run: 12 iterations of 4 episodes of 10 households x 8 steps."""
    out = tmp_path_factory.mktemp("ippo")
    return train(_config(), TrainConfig(algo="ippo", iterations=12, episodes=4,
                                        checkpoint_every=6, seed=3),
                 out, profiles=profiles, progress=False)


def test_short_ippo_beats_random_and_its_own_start(trained, profiles):
    """The trained policies' deterministic actions earn more than uniformly random actions
    and than the untrained bank (the same seed's initial weights)."""
    config = _config()
    learned = bank_return(config, PolicyBank.load(trained.bank), profiles=profiles)
    random = np.mean([bank_return(config, None, profiles=profiles, seed=s) for s in range(3)])
    start = bank_return(config, PolicyBank(10, len(FIELDS), len(ACTIONS),
                                           squash=SIGNED_ACTIONS, seed=3), profiles=profiles)
    assert learned > random + 0.25 * abs(random)
    assert learned > start + 0.1 * abs(start)
    table = trained.training
    assert list(table.iteration) == list(range(1, 13))
    assert (np.diff(table.agent_steps) == 4 * 10 * 8).all()  # whole episodes, agent steps
    assert (table.learn_s > 0).all() and (table.sample_s > 0).all()


def test_checkpoint_round_trip_gives_rllibs_own_deterministic_actions(trained, profiles):
    """The module restored from the checkpoint by RLlib, acting as RLlib acts in
    evaluation (distribution mode, mapped onto the action space's bounds), gives exactly
    the actions of the exported bank: the numbers `cosim run` will apply."""
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModule
    from ray.rllib.utils.spaces.space_utils import unsquash_action

    path = trained.checkpoint / "learner_group" / "learner" / "rl_module" / MODULE_ID
    module = RLModule.from_checkpoint(path)
    env = MultiAgentEnv(_config(), profiles=profiles)
    obs, _ = env.reset()
    agents = env.possible_agents
    x = torch.as_tensor(np.stack([obs[a]["obs"] for a in agents]))
    batch = {Columns.OBS: {"obs": x, "agent": torch.arange(len(agents))}}
    with torch.no_grad():
        logits = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
    dist = module.get_inference_action_dist_cls().from_logits(logits).to_deterministic()
    rllib = unsquash_action(dist.sample().numpy(), env._core.action_space)
    bank = PolicyBank.load(trained.bank)
    np.testing.assert_allclose(rllib, bank(x).detach().numpy(), rtol=0, atol=1e-6)
    assert torch.equal(load_bank(trained.checkpoint)(x), bank(x))
    env.close()


def test_the_deployed_bank_reproduces_the_evaluated_actions(trained, profiles, tmp_path):
    """A co-simulation with every household on the bank (its own shard-side observation,
    its own slice of the bank) books exactly what the environment books when the same
    bank's actions are passed in from outside, step by step."""
    config = _config()
    env = ParallelEnv(config, profiles=profiles)
    bank = PolicyBank.load(trained.bank)
    sim = Simulation.from_config(config.everyone("bank", trained.bank), record=False,
                                 profiles=profiles)
    obs, _ = env.reset()
    sim.reset()
    for _ in range(config.run.steps):
        x = np.stack([obs[a] for a in env.possible_agents])
        act = bank(torch.as_tensor(x)).detach().numpy()
        obs, rewards, *_ = env.step({a: act[k] for k, a in enumerate(env.possible_agents)})
        deployed = sim.step()
        np.testing.assert_allclose(-deployed.costs.bill - deployed.costs.operating_cost
                                   - 0.5 * deployed.costs.discomfort_kh
                                   - 0.5 * deployed.costs.ev_shortfall_kwh,
                                   [rewards[a] for a in env.possible_agents], atol=1e-9)
    env.close()
    sim.close()


@pytest.mark.parametrize("algo", ["ppo-shared", "a2c", "mappo"])
def test_each_algorithm_trains_and_exports_a_bank(algo, ray_cluster, profiles, tmp_path):
    outcome = train(_config(4), TrainConfig(algo=algo, iterations=2, episodes=2),
                    tmp_path, profiles=profiles, progress=False)
    assert np.isfinite(outcome.training[["policy_loss", "vf_loss"]].to_numpy()).all()
    bank = PolicyBank.load(outcome.bank, fields=FIELDS, actions=ACTIONS)
    assert bank.n_agents == 10
    shared = all(torch.equal(w[0], w[k]) for w in bank.weights for k in range(10))
    assert shared == (algo != "mappo")  # mappo keeps one policy per household


def test_a2c_is_one_pass_over_one_minibatch_and_mappo_sees_the_global_state(ray_cluster,
                                                                              profiles):
    a2c = algorithm_config(_config(4), TrainConfig(algo="a2c", episodes=2), profiles=profiles)
    assert (a2c.num_epochs, a2c.minibatch_size, a2c.train_batch_size_per_learner,
            a2c.lambda_) == (1, 80, 80, 1.0)
    mappo = algorithm_config(_config(4), TrainConfig(algo="mappo"), profiles=profiles)
    spec = mappo.rl_module_spec.rl_module_specs[MODULE_ID]
    assert spec.model_config["critic"] == "central"
    assert "state" in spec.observation_space.spaces


def _same(a, b) -> None:
    """Equal nested data: dicts key by key, arrays exactly (dtype included)."""
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _same(a[k], b[k])
    else:
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("algo", ["ippo", "mappo"])
def test_the_array_runner_records_what_rllibs_runner_records(algo, ray_cluster, profiles):
    """Same seed and module, acting deterministically: the stacked runner records the
    episodes RLlib's own `MultiAgentEnvRunner` records, which RLlib's learner connector
    turns into the same train batch (values, advantages and targets included); exploring,
    it draws the same Gaussian noise from the same generator, row by row (RLlib orders
    the rows by its set of agent ids, so each draw lands on another household)."""
    import copy

    from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner

    config = algorithm_config(_config(4), TrainConfig(algo=algo, seed=7), profiles=profiles)
    algo_ = config.build_algo()
    assert type(algo_.env_runner) is StackedEnvRunner
    learner = algo_.learner_group._learner
    episodes, metrics, noise = [], [], []
    for cls in (StackedEnvRunner, MultiAgentEnvRunner):
        runner = cls(config=config)  # seeds torch's generator, as every env runner does
        for explore in (True, False):
            (episode,) = runner.sample(explore=explore)
            if explore:  # the first step's standard normal draws, one row per household
                z = np.stack([(e.actions[0] - e.extra_model_outputs["action_dist_inputs"][0][:6])
                              / np.exp(e.extra_model_outputs["action_dist_inputs"][0][6:])
                              for e in episode.agent_episodes.values()])
                noise.append(z[np.lexsort(z.T[::-1])])
            metrics.append(runner.get_metrics())  # the last: of the deterministic one
        episodes.append(episode)
        runner.stop()
    np.testing.assert_allclose(*noise, rtol=0, atol=1e-5)
    assert np.abs(noise[0]).max() > 0.5
    ours, theirs = episodes
    assert len(ours) == len(theirs) == 4 and ours.agent_steps() == theirs.agent_steps() == 40
    assert (ours.is_truncated, ours.is_terminated) == (theirs.is_truncated,
                                                       theirs.is_terminated) == (True, True)
    assert list(ours.agent_episodes) == list(theirs.agent_episodes)
    for aid, a in theirs.agent_episodes.items():
        b = ours.agent_episodes[aid]
        assert (b.agent_id, b.module_id, b.t) == (aid, MODULE_ID, 4)
        assert (a.is_truncated, a.is_terminated) == (b.is_truncated, b.is_terminated)
        _same(a.observations.data, b.observations.data)
        _same(a.actions.data, b.actions.data)
        _same(a.rewards.data, b.rewards.data)
        _same({k: v.data for k, v in a.extra_model_outputs.items()},
              {k: v.data for k, v in b.extra_model_outputs.items()})
        assert a.infos.data == b.infos.data
        assert ours.env_t_to_agent_t[aid].data == theirs.env_t_to_agent_t[aid].data
    batches = [learner._learner_connector(rl_module=learner.module, batch={},
                                          episodes=[copy.deepcopy(e)], shared_data={},
                                          metrics=learner.metrics)
               for e in (ours, theirs)]
    assert {"advantages", "value_targets", "action_logp"} <= set(batches[0][MODULE_ID])
    _same(*batches)
    # RLlib's episode metrics, without one entry per household
    def peek(stats):
        return ({k: peek(v) for k, v in stats.items()} if isinstance(stats, dict)
                else stats.peek())

    ours, theirs = peek(metrics[1]), peek(metrics[3])
    for key in ("episode_return_mean", "episode_len_mean", "num_env_steps_sampled",
                "num_episodes", "num_module_steps_sampled", "module_episode_returns_mean"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-12)
    assert sum(ours["num_agent_steps_sampled"].values()) == 40 == sum(
        theirs["num_agent_steps_sampled"].values())
    assert not ours.get("agent_episode_returns_mean")
    algo_.stop()


def test_training_with_two_ray_env_runners(ray_cluster, profiles, tmp_path):
    """IPPO sampled by two Ray env runners on the two-node cluster."""
    outcome = train(_config(4), TrainConfig(iterations=2, episodes=2, env_runners=2),
                    tmp_path, profiles=profiles, progress=False)
    assert list(outcome.training.agent_steps) == [80, 160]
    assert np.isfinite(outcome.training.episode_return).all()


def _microgrid(tmp_path: Path, steps: int = 4) -> Path:
    """The shipped six-home microgrid, `steps` long, as a file in tmp_path."""
    text = (SHIPPED / "mahtm_microgrid.toml").read_text()
    text = text.replace('generator = "profiles/mahtm.toml"',
                        f'generator = "{SHIPPED / "profiles" / "mahtm.toml"}"')
    text = text.replace("steps = 24\n", f"steps = {steps}\n")
    path = tmp_path / "microgrid.toml"
    path.write_text(text)
    return path


def test_train_then_evaluate_from_the_command_line(ray_cluster, tmp_path, capsys):
    config = _microgrid(tmp_path)
    out = tmp_path / "train"
    assert main(["train", str(config), "--algo", "ppo-shared", "--iterations", "2",
                 "--hidden", "16", "--reward", "carbon_price=0.1", "--out", str(out),
                 "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "ppo-shared on mahtm_microgrid: 2 iterations" in said
    assert (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_parquet(out / "training.parquet")
    assert list(table.columns[:3]) == ["algo", "iteration", "agent_steps"]
    run = tmp_path / "run"
    assert main(["evaluate", str(out / "checkpoint"), str(config), "--out", str(run),
                 "--no-progress"]) == 0
    homes = pd.read_parquet(run / "homes.parquet")
    assert set(homes["policy"]) == {"bank"}
    assert len(pd.read_parquet(run / "households")) == 6 * 4
    assert torch.equal(PolicyBank.load(run / "bank.pt").weights[0],
                       PolicyBank.load(out / "bank.pt").weights[0])


def test_bad_training_input_is_exit_code_2(trained, tmp_path, capsys):
    config = _microgrid(tmp_path)
    assert main(["train", str(config), "--reward", "volts=3"]) == 2
    assert "--reward volts=3: expected TERM=PRICE" in capsys.readouterr().err
    assert main(["train", str(config), "--reward", "carbon_price=-1"]) == 2
    assert "carbon_price = -1.0 must be a finite number >= 0" in capsys.readouterr().err
    assert main(["train", str(config), "--episodes", "3", "--copies", "2"]) == 2
    assert "episodes (3) must be a multiple of copies" in capsys.readouterr().err
    assert main(["train", str(config), "--algo", "gradmap", "--copies", "2"]) == 2
    assert "--copies: gradmap batches its own days" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "none.toml")]) == 2
    assert "none.toml: scenario file not found" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nowhere"), str(config)]) == 2
    assert "nowhere: not a checkpoint of `cosim train`" in capsys.readouterr().err
    assert main(["evaluate", str(trained.checkpoint), str(config)]) == 2
    assert "trained for 10 households, " in capsys.readouterr().err


def test_the_same_seed_trains_the_same_policies(ray_cluster, profiles, tmp_path):
    runs = [train(_config(4), TrainConfig(iterations=2, episodes=2, seed=11), tmp_path / k,
                  profiles=profiles, progress=False) for k in "ab"]
    a, b = (PolicyBank.load(r.bank) for r in runs)
    assert all(torch.equal(x, y) for x, y in zip(a.weights, b.weights))
    np.testing.assert_array_equal(runs[0].training.episode_return,
                                  runs[1].training.episode_return)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ippo", "ppo-shared", "a2c", "mappo"])
def test_every_algorithm_learns_to_beat_random(algo, ray_cluster, profiles, tmp_path):
    """Longer runs (about a minute each): every algorithm's deterministic policies earn more
    than random actions, and more than where they started."""
    config = _config()
    outcome = train(config, TrainConfig(algo=algo, iterations=25, episodes=4, seed=5,
                                        lr=1e-3 if algo == "a2c" else 3e-4),
                    tmp_path, profiles=profiles, progress=False)
    learned = bank_return(config, PolicyBank.load(outcome.bank), profiles=profiles)
    random = np.mean([bank_return(config, None, profiles=profiles, seed=s) for s in range(3)])
    assert learned > random + 0.25 * abs(random)
    first, last = outcome.training.return_per_household.iloc[[0, -1]]
    assert last > first


def test_copies_sample_every_copy_for_the_same_policies(ray_cluster, profiles, tmp_path):
    """With copies = 2 one env episode is two episodes of the scenario: household k of
    each copy acts for agent k (acting deterministically from the same start, both copies
    act alike), the iteration's batch is the same agent steps as without copies, and the
    bank has one policy per household of the scenario."""
    settings = TrainConfig(iterations=2, episodes=2, copies=2, seed=11)
    scenario = small(run={"steps": 4}, households={"count": 10, "shard_size": 10},
                     markets={"households_per_market": 10},
                     aggregators={"count": 0})  # (copies refuse aggregators)
    config = algorithm_config(scenario, settings, profiles=profiles)
    assert config.train_batch_size_per_learner == 2 * 4 * 10
    runner = StackedEnvRunner(config=config)
    (episode,) = runner.sample(explore=False)
    assert episode.agent_steps() == 80 and len(episode) == 4
    agents = episode.agent_episodes
    for k in range(10):
        first, second = agents[f"household_{k}"], agents[f"household_{10 + k}"]
        assert set(first.observations.data["agent"]) == {k}
        assert set(second.observations.data["agent"]) == {k}
        # alike to float32's last bits: the same policy on the same observation in another
        # row of the batched matmul can round differently (BLAS blocks rows by the CPU's
        # vector width; seen on AMD EPYC, 3e-8)
        np.testing.assert_allclose(first.actions.data, second.actions.data, rtol=0,
                                   atol=1e-6)
    runner.stop()
    outcome = train(scenario, settings, tmp_path, profiles=profiles, progress=False)
    table = outcome.training
    assert np.isfinite(table[["policy_loss", "vf_loss"]].to_numpy()).all()
    # the env episode's return sums both copies: per household, it is over 20 of them
    np.testing.assert_allclose(table.return_per_household, table.episode_return / 20)
    assert PolicyBank.load(outcome.bank).n_agents == 10
    with pytest.raises(ValueError, match="multiple of copies"):
        TrainConfig(episodes=3, copies=2)
    with pytest.raises(ValueError, match="central critic"):
        TrainConfig(algo="mappo", episodes=2, copies=2)
