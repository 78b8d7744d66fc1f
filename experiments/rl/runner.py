"""RLlib's env runner for the stacked module: every household at once, in arrays.

RLlib's `MultiAgentEnvRunner` treats the stacked module's households as it would treat any
agents: a dict per step with an entry per agent, a single-agent episode grown step by step
per agent, connector passes that gather and scatter per agent, and episode metrics per
agent. At 1,000 households that per-agent work costs several times the co-simulation and
the module's forward passes together (BENCHMARKS.md, `cosim bench rl`). This runner keeps
RLlib's env runner (its env, module, weight sync, metrics logger, `sample()`), and
replaces what happens per step and per episode:

- a step is one forward pass of the module over every household's observation, one
  sample and log-probability from the module's own exploration distribution over the
  `[households, actions]` batch, one unsquash of the sampled actions onto the action
  space's bounds (what RLlib's `NormalizeAndClipActions` does per agent) and one
  `MultiAgentEnv.step_arrays` of the co-simulation;
- an episode is built once, at its end, from the arrays: RLlib's own `MultiAgentEpisode`
  of one numpy'ized `SingleAgentEpisode` per household, with the columns RLlib's runner
  records (observations T+1, actions, rewards, infos, truncation at the time limit, and
  the extra model outputs `action_dist_inputs`, `action_logp` and `weights_seq_no`), so
  that RLlib's learner connectors and PPO learner take it as they take RLlib's own;
- the metrics are RLlib's, logged per episode instead of per agent: env steps, episodes,
  the module's agent steps, the episode's length, return (summed over households, as
  RLlib's) and duration, and the module's return; agent steps go under the one key
  "__all__" instead of one key per household, and there are no per-household returns
  (the training table divides the return by the households).

The samples are RLlib's (tests/experiments/test_rl.py): with the same seed (torch's global
generator, which every env runner seeds) this runner draws the same normal noise as
RLlib's `MultiAgentEnvRunner`, row for row of the batch (RLlib orders the rows by its set
of agent ids, this runner by household index), and with the same actions (acting
deterministically) it records the same episodes, which RLlib's learner connector turns
into the same train batch. It samples whole episodes only (as `cosim train`
configures: `batch_mode = "complete_episodes"`), one environment per runner, with the
module's actions (no random actions), and makes no per-episode callbacks.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner
from ray.rllib.env.multi_agent_episode import MultiAgentEpisode
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.env.utils.infinite_lookback_buffer import InfiniteLookbackBuffer
from ray.rllib.utils.metrics import (
    ENV_RESET_TIMER,
    ENV_STEP_TIMER,
    NUM_AGENT_STEPS_SAMPLED,
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_SAMPLED,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_EPISODES,
    NUM_EPISODES_LIFETIME,
    NUM_MODULE_STEPS_SAMPLED,
    NUM_MODULE_STEPS_SAMPLED_LIFETIME,
    RLMODULE_INFERENCE_TIMER,
    WEIGHTS_SEQ_NO,
)
from ray.rllib.utils.typing import ResultDict

from cosim.envs import MultiAgentEnv
from experiments.rl.module import MODULE_ID

ALL_AGENTS = "__all__"  # the one key of the agent-step counts


class StackedEnvRunner(MultiAgentEnvRunner):
    """RLlib's multi-agent env runner, stepping `cosim.envs.MultiAgentEnv` with whole
    arrays for the one stacked module (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.env is not None and self.num_envs != 1:
            raise ValueError(f"{type(self).__name__} steps one environment per runner, "
                             f"not {self.num_envs} (num_envs_per_env_runner)")
        # (length, return, duration s) of each episode since the last `get_metrics`
        self._finished: list[tuple[int, float, float]] = []

    def _sample(self, *, num_timesteps: int | None = None, num_episodes: int | None = None,
                explore: bool, random_actions: bool = False, force_reset: bool = False
                ) -> list[MultiAgentEpisode]:
        """Whole episodes: `num_episodes`, or as many as cover `num_timesteps` (agent or
        env steps as the config counts them)."""
        if random_actions:
            raise NotImplementedError(f"{type(self).__name__} acts with its module only")
        env: MultiAgentEnv = self.env.envs[0].unwrapped
        if num_episodes is None:
            steps = env.episode_steps * (len(env.possible_agents)
                                         if self.config.count_steps_by == "agent_steps" else 1)
            num_episodes = max(1, -(-num_timesteps // steps))
        return [self._episode(env, explore) for _ in range(num_episodes)]

    def _episode(self, env: MultiAgentEnv, explore: bool) -> MultiAgentEpisode:
        """One episode of every household, sampled in arrays."""
        start = time.perf_counter()
        with self.metrics.log_time(ENV_RESET_TIMER):
            obs = env.reset_arrays()
        n = len(obs)
        agent = torch.from_numpy(env.agent_index)
        states = [env.state()] if env.global_state else None
        observations, infos = [obs], [{}]
        inputs, actions, logps, rewards = [], [], [], []
        space = env.action_spaces[env.possible_agents[0]]  # every household's is the same
        low, high = space.low, space.high
        module = self.module[MODULE_ID]
        dist_cls = (module.get_exploration_action_dist_cls() if explore
                    else module.get_inference_action_dist_cls())
        runners = self.config.num_env_runners or 1
        done = False
        while not done:
            x = {"obs": torch.from_numpy(obs), "agent": agent}
            if states is not None:
                x["state"] = torch.from_numpy(states[-1]).expand(n, -1)
            batch = {MODULE_ID: {Columns.OBS: x}}
            with self.metrics.log_time(RLMODULE_INFERENCE_TIMER):
                if explore:
                    t = (self.num_env_steps_sampled_lifetime // runners + len(actions)) \
                        * runners
                    out = self.module.forward_exploration(batch, t=t)[MODULE_ID]
                else:
                    out = self.module.forward_inference(batch)[MODULE_ID]
            dist = dist_cls.from_logits(out[Columns.ACTION_DIST_INPUTS])
            if not explore:
                dist = dist.to_deterministic()
            action = dist.sample()
            inputs.append(out[Columns.ACTION_DIST_INPUTS])
            actions.append(action)
            logps.append(dist.logp(action))
            a = action.numpy()
            if self.config.normalize_actions:  # RLlib's unsquash_action, for all rows
                a = np.clip(low + (a + 1.0) * (high - low) / 2.0, low, high)
            elif self.config.clip_actions:
                a = np.clip(a, low, high)
            with self.metrics.log_time(ENV_STEP_TIMER):
                obs, reward, done, info = env.step_arrays(a)
            observations.append(obs)
            rewards.append(reward)
            infos.append(info)
            if states is not None:
                states.append(env.state())
        episode = self._assemble(env, observations, states, infos, actions, rewards,
                                 {Columns.ACTION_DIST_INPUTS: inputs,
                                  Columns.ACTION_LOGP: logps})
        self._count(len(actions), n)
        self._finished.append((len(actions), float(np.sum(rewards)),
                               time.perf_counter() - start))
        return episode

    def _assemble(self, env: MultiAgentEnv, observations: list[np.ndarray],
                  states: list[np.ndarray] | None, infos: list[dict],
                  actions: list[torch.Tensor], rewards: list[np.ndarray],
                  extra: dict[str, list[torch.Tensor]]) -> MultiAgentEpisode:
        """RLlib's episode from the arrays of T steps: per household, T + 1 observations
        and infos, T actions, rewards and extra model outputs. Its end is flagged as
        RLlib's `MultiAgentEpisode` flags it when every agent is truncated at once: the
        episode and each household's truncated and also terminated (so RLlib's GAE does
        not bootstrap the last value; kept so that learning is RLlib's)."""
        T, agents = len(actions), env.possible_agents
        # [households, T(+1), ...]: each household's rows contiguous, as RLlib's own;
        # arrays shared by all households are safe (RLlib's learner connectors append
        # to episodes by concatenating), the infos list is not (it is appended to)
        obs = np.ascontiguousarray(np.stack(observations, axis=1))
        act = torch.stack(actions, dim=1).numpy()
        rew = np.ascontiguousarray(np.stack(rewards, axis=1))
        outs = {k: torch.stack(v, dim=1).numpy() for k, v in extra.items()}
        seq = np.full(T, self._weights_seq_no)
        state = None if states is None else np.stack(states)
        spaces = env.observation_spaces[agents[0]], env.action_spaces[agents[0]]
        episode = MultiAgentEpisode(
            observation_space=env.observation_spaces, action_space=env.action_spaces,
            agent_to_module_mapping_fn=self.config.policy_mapping_fn,
            agent_module_ids={a: MODULE_ID for a in agents}, len_lookback_buffer=0)
        for k, aid in enumerate(agents):
            o = {"obs": obs[k], "agent": np.full(T + 1, env.agent_index[k])}
            if state is not None:
                o["state"] = state
            episode.agent_episodes[aid] = SingleAgentEpisode(
                observations=o, observation_space=spaces[0], actions=act[k],
                action_space=spaces[1], rewards=rew[k], infos=list(infos),
                extra_model_outputs={**{c: v[k] for c, v in outs.items()},
                                     WEIGHTS_SEQ_NO: seq},
                terminated=True, truncated=True, len_lookback_buffer=0, agent_id=aid,
                module_id=MODULE_ID, multi_agent_episode_id=episode.id_)
            # every agent acted at every env step
            episode.env_t_to_agent_t[aid] = InfiniteLookbackBuffer(list(range(T + 1)))
        episode.env_t, episode.is_truncated, episode.is_terminated = T, True, True
        episode.validate()
        return episode

    def _count(self, steps: int, households: int) -> None:
        """RLlib's sampling counters for one episode of `steps` env steps."""
        m, agent_steps = self.metrics, steps * households
        m.log_value(NUM_ENV_STEPS_SAMPLED, steps, reduce="sum")
        m.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, steps, reduce="lifetime_sum",
                    with_throughput=True)
        m.log_value(NUM_EPISODES, 1, reduce="sum")
        m.log_value(NUM_EPISODES_LIFETIME, 1, reduce="lifetime_sum")
        m.log_value((NUM_AGENT_STEPS_SAMPLED, ALL_AGENTS), agent_steps, reduce="sum")
        m.log_value((NUM_AGENT_STEPS_SAMPLED_LIFETIME, ALL_AGENTS), agent_steps,
                    reduce="lifetime_sum")
        m.log_value((NUM_MODULE_STEPS_SAMPLED, MODULE_ID), agent_steps, reduce="sum")
        m.log_value((NUM_MODULE_STEPS_SAMPLED_LIFETIME, MODULE_ID), agent_steps,
                    reduce="lifetime_sum")
        self._log_env_steps(metric=self._metrics_num_env_steps_sampled, num_steps=steps)

    def get_metrics(self) -> ResultDict:
        """RLlib's episode metrics of the episodes since the last call, with the module's
        return and without per-agent entries."""
        for length, ret, seconds in self._finished:
            self._log_episode_metrics(length, ret, seconds, agents={},
                                      modules={MODULE_ID: ret}, agent_steps={})
        self._finished.clear()
        return self.metrics.reduce()
