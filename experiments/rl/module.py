"""One RLlib module for every household: the policy bank with value heads.

RLlib's usual layout for independent learners is one module per agent; at 1,000 agents its
per-module bookkeeping dominates each step (BENCHMARKS.md, `cosim bench rl`). Here all
households are rows of one `TorchRLModule`:

- the actor is an `agents.policies.PolicyBank`, the very object `cosim run` deploys: with
  `actors = n` each household has its own policy (row b goes through agent[b]'s weights,
  one gather and batched matmul per layer), with `actors = 1` all share one;
- the Gaussian's mean is the bank's action mapped onto RLlib's normalised [-1, 1] range
  (RLlib maps it back onto the action space's bounds), so the deterministic action RLlib
  evaluates is exactly what the bank gives in the co-simulation; the log standard
  deviation is a free parameter per actor and action;
- the critic is either each actor's own value network over its local observation
  (`critic = "own"`, independent learners) or one shared network over the global state and
  the agent's observation (`critic = "central"`, MAPPO's centralised value function; the
  global state is only seen in training, never by a deployed policy), or none
  (`critic = "none"`: every value is zero, so RLlib's advantage is the return itself, as
  in REINFORCE).

The observation is the environment's Dict `{"obs", "agent"[, "state"]}` (cosim.envs); the
index selects the household's policy and value weights.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian
from ray.rllib.core.rl_module.apis.inference_only_api import InferenceOnlyAPI
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from torch import nn

from agents.policies.bank import PolicyBank

MODULE_ID = "households"
CRITICS = ("own", "central", "none")


class BankModule(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI):
    """model_config: `n_agents` (households), `actors` (n_agents or 1), `critic` ("own",
    "central" or "none"), `hidden` (widths), `activation`, `seed`, `log_std` (initial, in the
    normalised action range)."""

    def setup(self) -> None:
        c = self.model_config
        n, actors = int(c["n_agents"]), int(c.get("actors", c["n_agents"]))
        if actors not in (1, n):
            raise ValueError(f"actors = {actors}: one per household ({n}) or one shared")
        if c.get("critic", "own") not in CRITICS:
            raise ValueError(f"critic {c.get('critic')!r}: choose one of {CRITICS}")
        hidden, act = tuple(c.get("hidden", (64, 64))), c.get("activation", "tanh")
        seed = int(c.get("seed", 0))
        obs_dim = self.observation_space["obs"].shape[0]
        act_dim = self.action_space.shape[0]
        # tanh where the action space reaches -1 (battery, car), sigmoid where it starts at 0
        signed = [bool(low < 0) for low in self.action_space.low]
        self.actor = PolicyBank(actors, obs_dim, act_dim, hidden, signed, act, seed,
                                dtype=torch.float32)
        self.log_std = nn.Parameter(torch.full((actors, act_dim), float(c.get("log_std",
                                                                               -0.5))))
        self.central = c.get("critic", "own") == "central"
        critic_in = obs_dim + (self.observation_space["state"].shape[0] if self.central else 0)
        # the critic's seed differs from the actor's so that their first layers differ
        self.critic = None if c.get("critic", "own") == "none" else PolicyBank(
            1 if self.central else actors, critic_in, 1, hidden, True, act, seed + 1,
            dtype=torch.float32)

    def get_non_inference_attributes(self) -> list[str]:
        """The critic: env runners act without it, and weight syncs leave it out (half the
        parameters of an independent-learner module)."""
        return [] if self.critic is None else ["critic"]

    def _agent(self, batch: dict[str, Any]) -> torch.Tensor:
        agent = batch[Columns.OBS]["agent"].long()
        return agent if self.actor.n_agents > 1 else torch.zeros_like(agent)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        obs, agent = batch[Columns.OBS]["obs"], self._agent(batch)
        action = self.actor.rows(obs, agent)  # in the action space's own bounds
        mean = torch.where(self.actor.signed, action, 2 * action - 1)  # RLlib's [-1, 1]
        return {Columns.ACTION_DIST_INPUTS: torch.cat([mean, self.log_std[agent]], dim=-1)}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        obs = batch[Columns.OBS]
        if self.critic is None:  # no baseline: RLlib's advantage is the return
            return torch.zeros(obs["obs"].shape[:-1], device=obs["obs"].device)
        if self.central:
            x = torch.cat([obs["state"], obs["obs"]], dim=-1)
            return self.critic.rows(x, torch.zeros_like(obs["agent"]), squash=False)[..., 0]
        return self.critic.rows(obs["obs"], self._agent(batch), squash=False)[..., 0]

    def get_inference_action_dist_cls(self) -> type[TorchDiagGaussian]:
        return TorchDiagGaussian

    def get_exploration_action_dist_cls(self) -> type[TorchDiagGaussian]:
        return TorchDiagGaussian

    def get_train_action_dist_cls(self) -> type[TorchDiagGaussian]:
        return TorchDiagGaussian

    def deployable(self) -> PolicyBank:
        """The trained policies as a bank of one policy per household (a shared policy is
        copied to every household), in float64."""
        n = int(self.model_config["n_agents"])
        bank = self.actor.select([0] * n if self.actor.n_agents == 1 else range(n))
        return bank.to(torch.float64)
