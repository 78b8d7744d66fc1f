"""Train household policies with RLlib's PPO learner on the real step (`cosim train`).

    from experiments.rl.train import TrainConfig, train
    outcome = train("experiments/configs/lv_55.toml", TrainConfig(algo="ippo", iterations=50),
                    out="runs/train-lv55")

Six algorithms, all on the one `BankModule` (experiments.rl.module) and RLlib's PPO
learner, chosen by name:

    ippo        independent PPO: one policy and one value network per household (stacked)
    ppo-shared  one policy and one value network shared by every household (MAHTM's setting)
    a2c         advantage actor-critic, shared as ppo-shared: one pass over each batch as a
                single minibatch (at the sampling policy PPO's clipped ratio is 1, so its
                gradient is the policy gradient with the advantage), lambda = 1 (n-step
                returns) and no KL term. RLlib 2.60 has no A2C of its own.
    pg          policy gradient (REINFORCE), shared as ppo-shared: the a2c update with no
                critic, so the advantage is the return to go (RLlib standardises it over
                the batch, a constant baseline and scale). RLlib 2.60 has no PG of its own.
    mappo       independent policies with one centralised value function over the global
                state and the agent's observation (MAPPO-style; the actors stay local)
    mappo-shared  mappo with one policy shared by every household (MAHTM's setting with a
                centralised critic)

Whatever the algorithm, the result is a policy bank with one policy per household
(`bank.pt`, the format `cosim run` loads with `policy = "bank"`); the RLlib checkpoint holds
the same module, its optimiser and the sampling state.

Batch sizes count agent steps (one household for one step): an iteration samples
`episodes` whole episodes of the scenario, households x steps agent steps each (with
`copies`, `episodes / copies` episodes of the env, each stepping that many copies of the
scenario as one batch: the same data, sampled in fewer, larger steps). Every
algorithm samples with `experiments.rl.runner.StackedEnvRunner`, RLlib's multi-agent env
runner stepping all households at once in arrays (samples from the module's own
distribution and episodes as RLlib's own runner records them, without its work per
agent), locally or as Ray actors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from agents.households import ACTIONS, FIELDS
from agents.policies.bank import PolicyBank
from cosim.config import ScenarioConfig, load_config
from cosim.envs import BID_ACTIONS, MultiAgentEnv, RewardConfig
from cosim.scenario import ProfileData
from experiments.rl.module import MODULE_ID, BankModule
from experiments.rl.runner import StackedEnvRunner

ENV_NAME = "gridedge-households"
# name: (one policy per household?, critic)
ALGOS = {"ippo": (True, "own"), "ppo-shared": (False, "own"), "a2c": (False, "own"),
         "pg": (False, "none"), "mappo": (True, "central"), "mappo-shared": (False, "central")}
ONE_PASS = ("a2c", "pg")  # one pass over each batch as a single minibatch, lambda = 1


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the scenario and the reward."""

    algo: str = "ippo"
    iterations: int = 20
    episodes: int = 1  # whole episodes sampled per iteration
    minibatches: int = 4  # per epoch (a2c, pg: always 1)
    epochs: int = 4  # passes over each batch (a2c, pg: always 1)
    lr: float = 3e-4
    gamma: float = 0.99
    lambda_: float = 0.95  # GAE (a2c, pg: 1)
    clip_param: float = 0.2
    vf_clip_param: float = 100.0  # currency; rewards are bills, not unit-scaled
    entropy_coeff: float = 0.0
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    log_std: float = -0.5  # initial, in RLlib's normalised action range [-1, 1]
    seed: int = 0
    env_runners: int = 0  # 0: sample in this process; n: n Ray actors
    checkpoint_every: int = 10  # iterations (and always after the last)
    # true: the households learn their local market bids only (cosim.envs, bidding=True),
    # their devices on the self-consumption rule; the bank then has one output, the bid
    bidding: bool = False
    # independent copies of the scenario per env runner, stepped as one
    # (`Simulation.from_config(copies=)`): an episode of the env is `copies` episodes of
    # the scenario, household k of each copy acting (and learning) for agent k
    copies: int = 1

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"algo {self.algo!r}: choose one of {list(ALGOS)}")
        for name in ("iterations", "episodes", "minibatches", "epochs", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)} must be at least 1")
        if self.env_runners < 0 or not self.hidden or min(self.hidden) < 1:
            raise ValueError("env_runners must be >= 0 and hidden widths positive")
        if self.copies < 1 or self.episodes % self.copies:
            raise ValueError(f"copies = {self.copies}: episodes ({self.episodes}) must be a "
                             "multiple of copies, each env episode being `copies` of them")
        if self.copies > 1 and ALGOS[self.algo][1] == "central":
            raise ValueError(f"copies = {self.copies}: {self.algo}'s central critic sees "
                             "one scenario's state; train it without copies")


@dataclass
class Outcome:
    """What a training run left: the RLlib checkpoint, the deployable bank and the
    per-iteration table (also written as `training.parquet` and `training.png`)."""

    checkpoint: Path
    bank: Path
    training: pd.DataFrame = field(repr=False)


def scenario(config: str | Path | ScenarioConfig) -> ScenarioConfig:
    return config if isinstance(config, ScenarioConfig) else load_config(config)


def algorithm_config(config: ScenarioConfig, train: TrainConfig,
                     reward: RewardConfig = RewardConfig(),
                     profiles: ProfileData | None = None) -> Any:
    """RLlib's PPOConfig for `train.algo` on the scenario's households (module docstring)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.tune.registry import register_env

    independent, critic = ALGOS[train.algo]
    central = critic == "central"

    def make(_: dict) -> MultiAgentEnv:  # pickled by value, with what it closes over
        return MultiAgentEnv(config, reward, profiles=profiles, global_state=central,
                             bidding=train.bidding, copies=train.copies)

    register_env(ENV_NAME, make)
    probe = make({})  # the spaces, and a bad scenario fails here, before any Ray actor
    n, steps = probe._core.per_copy, probe._core.sim.total  # n: agents of the bank
    obs_space, act_space = probe.observation_spaces[probe.possible_agents[0]], \
        probe._core.action_space
    probe.close()
    one_pass = train.algo in ONE_PASS
    batch = train.episodes * steps * n
    minibatch = batch if one_pass else max(1, batch // train.minibatches)
    module = RLModuleSpec(module_class=BankModule, observation_space=obs_space,
                          action_space=act_space, model_config={
                              "n_agents": n, "actors": n if independent else 1,
                              "critic": critic, "hidden": list(train.hidden),
                              "activation": train.activation, "seed": train.seed,
                              "log_std": train.log_std})
    return (PPOConfig()
            .environment(ENV_NAME)
            .env_runners(env_runner_cls=StackedEnvRunner, num_env_runners=train.env_runners,
                         num_cpus_per_env_runner=1, rollout_fragment_length=steps,
                         batch_mode="complete_episodes")
            .multi_agent(policies={MODULE_ID}, count_steps_by="agent_steps",
                         policy_mapping_fn=lambda agent, *args, **kwargs: MODULE_ID)
            .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={MODULE_ID: module}))
            .training(train_batch_size_per_learner=batch, minibatch_size=minibatch,
                      num_epochs=1 if one_pass else train.epochs, lr=train.lr, gamma=train.gamma,
                      lambda_=1.0 if one_pass else train.lambda_, use_critic=critic != "none",
                      clip_param=train.clip_param, vf_clip_param=train.vf_clip_param,
                      entropy_coeff=train.entropy_coeff, use_kl_loss=False)
            .debugging(seed=train.seed))


def train(config: str | Path | ScenarioConfig, train: TrainConfig, out: str | Path,
          reward: RewardConfig = RewardConfig(), profiles: ProfileData | None = None,
          progress: bool = True, budget_s: float | None = None,
          on_iteration: Callable[[int, PolicyBank], dict[str, float]] | None = None
          ) -> Outcome:
    """Train, checkpointing to `out/checkpoint`; write `out/bank.pt`, `training.parquet`
    and `training.png`. Ray must be initialised (the CLI does it).

    With `budget_s`, stop before an iteration that would take the training past that many
    seconds at its mean pace so far (after at least two). `on_iteration(iteration, bank)`,
    when given, is called after every iteration with the current deployable bank; the
    columns it returns join that iteration's row (an evaluation: its time is not counted
    in the row's times)."""
    config = scenario(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rllib = algorithm_config(config, train, reward, profiles)
    households = rllib.rl_module_spec.rl_module_specs[MODULE_ID].model_config["n_agents"]
    algo = rllib.build_algo()
    checkpoint = out / "checkpoint"
    rows = []
    timer = algo.learner_group.update = _LearnTimer(algo.learner_group.update)
    try:
        bar = tqdm(range(1, train.iterations + 1), desc=f"{train.algo} {config.run.name}",
                   unit="iter", disable=not progress)
        for it in bar:
            spent = sum(r["wall_s"] for r in rows)
            if budget_s is not None and it > 2 and spent * it / (it - 1) > budget_s:
                break
            start, timer.seconds = time.perf_counter(), 0.0
            result = algo.train()
            # (an env episode's return sums every copy's households)
            rows.append(_row(it, result, households * train.copies,
                             time.perf_counter() - start, timer.seconds))
            if on_iteration is not None:
                rows[-1].update(on_iteration(it, algo.get_module(MODULE_ID).deployable()))
            bar.set_postfix(ret=f"{rows[-1]['return_per_household']:.3f}")
            if it % train.checkpoint_every == 0 or it == train.iterations:
                algo.save_to_path(checkpoint.resolve())
        if rows and rows[-1]["iteration"] % train.checkpoint_every and \
                rows[-1]["iteration"] != train.iterations:  # stopped by the budget
            algo.save_to_path(checkpoint.resolve())
        module = algo.get_module(MODULE_ID)
    finally:
        algo.stop()
    bank = out / "bank.pt"
    module.deployable().save(bank, FIELDS, BID_ACTIONS if train.bidding else ACTIONS)
    table = pd.DataFrame(rows)
    table.insert(0, "algo", train.algo)
    table.to_parquet(out / "training.parquet", index=False)
    plot(table, out / "training.png")
    (out / "train.json").write_text(pd.Series(
        asdict(train) | {"reward": asdict(reward), "scenario": config.run.name}).to_json(
        indent=2))
    return Outcome(checkpoint, bank, table)


def _row(iteration: int, result: dict, households: int, wall_s: float, learn_s: float
         ) -> dict[str, float]:
    """One line of the training table from RLlib's result dict. The episode return is
    summed over households; times are this iteration's own (RLlib's timers are moving
    averages)."""
    runners = result["env_runners"]
    learner = result.get("learners", {}).get(MODULE_ID, {})
    ret = float(runners.get("episode_return_mean", np.nan))
    return {"iteration": iteration,
            "agent_steps": int(runners.get("num_module_steps_sampled_lifetime", {}).get(
                MODULE_ID, 0)),
            "env_steps": int(result.get("num_env_steps_sampled_lifetime", 0)),
            "episode_return": ret, "return_per_household": ret / households,
            "sample_s": wall_s - learn_s, "learn_s": learn_s, "wall_s": wall_s,
            "policy_loss": float(learner.get("policy_loss", np.nan)),
            "vf_loss": float(learner.get("vf_loss", np.nan)),
            "entropy": float(learner.get("entropy", np.nan))}


class _LearnTimer:
    """Wall time spent in the learner's update (the rest of an iteration is sampling and
    weight synchronisation)."""

    def __init__(self, update: Any) -> None:
        self.update, self.seconds = update, 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.update(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def load_bank(checkpoint: str | Path) -> PolicyBank:
    """The deployable bank of an RLlib checkpoint written by `train`, read with RLlib
    itself (the module alone: no environment or learner is built)."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    path = Path(checkpoint) / "learner_group" / "learner" / "rl_module" / MODULE_ID
    if not path.is_dir():
        raise FileNotFoundError(f"{checkpoint}: not a checkpoint of `cosim train` (no "
                                f"{path.relative_to(checkpoint)})")
    return RLModule.from_checkpoint(path.resolve()).deployable()


def plot(table: pd.DataFrame, path: Path) -> None:
    """Return per household and the time split of each iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ret, tim) = plt.subplots(1, 2, figsize=(10, 3.6))
    ret.plot(table.iteration, table.return_per_household, marker="o", ms=3)
    ret.set(xlabel="iteration", ylabel="episode return per household (currency)",
            title=f"{table.algo.iloc[0]}: training curve")
    ret.grid(alpha=0.3)
    tim.plot(table.iteration, table.sample_s, label="sampling")
    tim.plot(table.iteration, table.learn_s, label="learning")
    tim.set(xlabel="iteration", ylabel="s per iteration", title="where the time goes")
    tim.legend()
    tim.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bank_return(config: ScenarioConfig, bank: PolicyBank | None,
                reward: RewardConfig = RewardConfig(), profiles: ProfileData | None = None,
                seed: int = 0) -> float:
    """Mean return per household of one episode: the bank's actions, or uniformly random
    ones (`bank=None`, seeded) - the yardstick a trained policy must beat."""
    from cosim.envs import ParallelEnv

    env = ParallelEnv(config, reward, profiles=profiles)
    space, rng = env.action_space(env.possible_agents[0]), np.random.default_rng(seed)
    try:
        obs, _ = env.reset()
        total = 0.0
        while env.agents:
            x = np.stack([obs[a] for a in env.possible_agents])
            act = (rng.uniform(space.low, space.high, (len(x), len(space.low))) if bank is None
                   else bank(torch.as_tensor(x)).detach().numpy())
            obs, rewards, *_ = env.step({a: act[k] for k, a in enumerate(env.possible_agents)})
            total += sum(rewards.values())
        return total / len(env.possible_agents)
    finally:
        env.close()
