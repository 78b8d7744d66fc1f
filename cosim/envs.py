"""Multi-agent environments over `cosim.Simulation`: PettingZoo and RLlib.

    env = ParallelEnv("experiments/configs/lv_55.toml")          # PettingZoo
    obs, infos = env.reset()
    obs, rewards, terminations, truncations, infos = env.step(
        {agent: env.action_space(agent).sample() for agent in env.agents})

Every household of the scenario is an agent ("household_<k>") acting through the `external`
policy on the real step: its own devices, the markets, the retailers and the AC power flow,
exactly as `cosim run` simulates them (nothing is re-implemented here). An agent sees its
local observation only (`agents.households.FIELDS`, including the voltage at its own
connection in the previous step) and acts with the raw actions of `agents.households.ACTIONS`
(battery and car in [-1, 1], the rest in [0, 1]). With `bidding=True` an agent is a
`bidder` instead: its devices follow the self-consumption rule and its one action, "bid" in
[0, 1], places its limit price in its local market between its export price (0) and its
import price (1): it learns a bidding strategy. An episode is the scenario's run; at its
end every agent is truncated (a time limit, not a terminal state).

Reward (currency per step, `RewardConfig`): minus the agent's own cost (its bill, device
wear and fuel, discomfort and car shortfall priced per K h and per kWh) and minus its shares
of what the network and the climate pay: the carbon of its own grid imports, how far its
own connection's voltage left the limits (per p.u.), and an equal share of the network's
losses at the wholesale price, of its voltage violations and of its overloaded lines.
`infos` carries the step's global metrics (the same dict for every agent): convergence,
voltage range, violations, line loading, losses, substation energy, money balance. A
step whose power flow did not converge leaves no NaN in observations or rewards: the
network terms count zero for it, and `infos` says `converged = False`.

`MultiAgentEnv` is the same for RLlib, its observations a Dict of the local observation and
the agent's index (an index carried as a float would be rescaled by observation filters).
With `global_state=True` the Dict also carries "state", the same for every agent, for a
centralised critic in training (never for a deployed policy): the mean and spread over
households of every observation field, the lowest and highest voltage field, and the last
step's highest line loading, losses and substation energy per household (zero at reset).
`reset_arrays`, `step_arrays` and `state` are the same calls for every household at once,
one row per household and no dict per agent (RLlib's runner for the stacked module);
`what_if_arrays` gives the rewards other actions would give in the same step, without
moving on (counterfactual rewards).

With `copies=N` the environment steps N independent copies of the scenario as one batch
(`Simulation.from_config(copies=N)`): N times the agents, household k of copy j being
`household_{j * count + k}`, whose "agent" observation is k (every copy acts for, and
trains, the same policies) and whose network shares are its own copy's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pettingzoo
from ray.rllib.env.multi_agent_env import MultiAgentEnv as RLlibMultiAgentEnv

from agents.households import ACTIONS, FIELDS, SIGNED_ACTIONS
from agents.households.observation import VOLTAGE_SCALE_PU
from cosim.config import ScenarioConfig, load_config, parse_config
from cosim.scenario import ProfileData
from cosim.simulation import Simulation, StepResult

VOLTAGE = FIELDS.index("voltage")
BID_ACTIONS = ("bid",)  # a bidder's one action: its limit price, from export (0) to import (1)


@dataclass(frozen=True)
class RewardConfig:
    """Prices of each term of an agent's reward (all >= 0). Currency per unit."""

    discomfort_cost: float = 0.5  # per K h outside the comfort band
    shortfall_cost: float = 0.5  # per kWh missing at a car's departure
    carbon_price: float = 0.0  # per kgCO2 of its own grid imports
    voltage_penalty: float = 0.0  # per p.u. its connection's voltage lies outside the limits
    losses_share: float = 0.0  # share of the network's losses at the wholesale price
    violation_penalty: float = 0.0  # per node-step outside the limits, shared equally
    overload_penalty: float = 0.0  # per line above its rating, shared equally

    def __post_init__(self) -> None:
        bad = [k for k, v in asdict(self).items() if not (np.isfinite(v) and v >= 0)]
        if bad:
            raise ValueError(f"reward: {bad[0]} = {getattr(self, bad[0])} must be a finite "
                             "number >= 0")


class EnvError(ValueError):
    """Bad actions: names the agent and the step."""


class _Core:
    """What both environments share: the simulation, the spaces, the reward."""

    def __init__(self, config: str | Path | ScenarioConfig | dict, reward: RewardConfig,
                 backend: str | object = "local", overrides: dict[str, object] | None = None,
                 profiles: ProfileData | None = None, bidding: bool = False,
                 copies: int = 1) -> None:
        if isinstance(config, (str, Path)):
            config = load_config(config, overrides)
        elif overrides:
            raise ValueError("overrides apply to a scenario file")
        elif isinstance(config, dict):
            config = parse_config(config)
        # every household is an agent: the external policy (or the bidder's), whatever the
        # file says
        self.bidding = bidding
        self.sim = Simulation.from_config(config.everyone("bidder" if bidding else "external"),
                                          backend, record=False, profiles=profiles,
                                          copies=copies)
        self.reward = reward
        self.n = self.sim.n_households
        # each household's copy of the scenario, and the households of one copy (who share
        # that copy's network terms)
        self.copy = np.arange(self.n) // (self.n // copies)
        self.per_copy = self.n // copies
        # the policy each household acts for: household k of every copy is agent k
        self.agent_of = np.arange(self.n) % self.per_copy
        self.agents_all = [f"household_{k}" for k in range(self.n)]
        self.index = {a: k for k, a in enumerate(self.agents_all)}
        self.action_names = BID_ACTIONS if bidding else ACTIONS
        low = np.zeros(1) if bidding else np.array([-1.0 if signed else 0.0
                                                    for signed in SIGNED_ACTIONS])
        self.action_space = gym.spaces.Box(low, np.ones(len(low)), dtype=np.float64)
        self.obs_space = gym.spaces.Box(-np.inf, np.inf, (len(FIELDS),), dtype=np.float64)
        self.state_space = gym.spaces.Box(-np.inf, np.inf, (2 * len(FIELDS) + 5,),
                                          dtype=np.float32)
        grid = self.sim.config.grid
        self.vmin, self.vmax = grid.vmin_pu, grid.vmax_pu
        self.wholesale = np.asarray(
            next(s.kwargs for s in self.sim.scenario.actors if s.name == "feed")[
                "wholesale_price"], dtype=float)
        self.obs: np.ndarray | None = None
        self.network = np.zeros(3)  # last step's loading, losses and substation per household
        self.step_index = 0

    def reset(self) -> np.ndarray:
        self.obs = self._finite(self.sim.reset(), "reset")
        self.network = np.zeros(3)
        self.step_index = 0
        return self.obs

    def global_state(self) -> np.ndarray:
        """The centralised critic's view (module docstring), float32."""
        v = self.obs[:, VOLTAGE]
        return np.concatenate([self.obs.mean(0), self.obs.std(0), [v.min(), v.max()],
                               self.network]).astype(np.float32)

    def actions(self, actions: dict[str, Any], live: list[str]) -> np.ndarray:
        """The actions of the agents still live as one `[households, actions]` array;
        errors name the agent and the step."""
        t = self.step_index
        unknown = [a for a in actions if a not in self.index]
        if unknown:
            raise EnvError(f"step {t}: unknown agent {unknown[0]!r} (agents are "
                           f"household_0 to household_{self.n - 1})")
        missing = [a for a in live if a not in actions]
        if missing:
            raise EnvError(f"step {t}: no action for agent {missing[0]!r}")
        out = np.empty((self.n, len(self.action_names)))
        for agent, action in actions.items():
            a = np.asarray(action, dtype=float)
            self._check(agent, a)
            out[self.index[agent]] = a
        return out

    def actions_array(self, actions: np.ndarray) -> np.ndarray:
        """Every household's actions at once, `[households, actions]` (row k:
        household_k), checked as `actions` checks them, in one pass over the array."""
        a = np.asarray(actions, dtype=float)
        names = self.action_names
        if a.shape != (self.n, len(names)):
            raise EnvError(f"step {self.step_index}: actions of shape {a.shape}, expected "
                           f"({self.n}, {len(names)}): one row per household, {names}")
        space = self.action_space
        bad = ~(np.isfinite(a) & (a >= space.low) & (a <= space.high)).all(axis=1)
        if bad.any():
            k = int(np.argmax(bad))
            self._check(self.agents_all[k], a[k])  # raises, with the message of `actions`
        return a

    def _check(self, agent: str, a: np.ndarray) -> None:
        """An EnvError naming the agent and the step unless `a` is one finite action
        inside the action space."""
        t, names = self.step_index, self.action_names
        if a.shape != (len(names),):
            raise EnvError(f"step {t}: agent {agent!r}: action of shape {a.shape}, "
                           f"expected ({len(names)},) = {names}")
        if not np.isfinite(a).all():
            raise EnvError(f"step {t}: agent {agent!r}: action {a.tolist()} is not finite")
        if not self.action_space.contains(a):
            k = int(np.flatnonzero((a < self.action_space.low)
                                   | (a > self.action_space.high))[0])
            raise EnvError(f"step {t}: agent {agent!r}: {names[k]} action {a[k]:g} "
                           f"outside [{self.action_space.low[k]:g}, "
                           f"{self.action_space.high[k]:g}]")

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, dict]:
        """(next observations, rewards, done, global info) for all households."""
        t = self.step_index
        result = (self.sim.step(bids=actions[:, 0]) if self.bidding
                  else self.sim.step(actions))
        self.step_index += 1
        if result.observations is not None:
            self.obs = self._finite(result.observations, f"step {t}")
        rewards = self._rewards(result, t)
        g = result.grid
        if g.converged:
            self.network = np.array([g.max_line_loading, g.losses_kwh / self.n,
                                     g.substation_kwh / self.n])
        return self.obs, rewards, result.done, self._info(result)

    def what_if(self, actions: list[np.ndarray]) -> np.ndarray:
        """The rewards `[len(actions), households]` that `step` would give for each of the
        action arrays, leaving the environment where it was: the simulation steps and
        comes back (`Simulation.snapshot`), one snapshot for them all."""
        kept = (self.obs, self.network, self.step_index)
        snapshot = self.sim.snapshot()
        out = []
        try:
            for a in actions:
                out.append(self.step(a)[1])
                self.sim.restore(snapshot)
                self.obs, self.network, self.step_index = kept
        finally:
            self.sim.restore(snapshot)
            self.obs, self.network, self.step_index = kept
        return np.array(out)

    def _rewards(self, result: StepResult, t: int) -> np.ndarray:
        r, c, g = self.reward, result.costs, result.copies  # g: the grid of each copy
        cost = (c.bill + c.operating_cost + r.discomfort_cost * c.discomfort_kh
                + r.shortfall_cost * c.ev_shortfall_kwh + r.carbon_price * c.emissions_kg)
        # the voltage this step gave its connection is in the next observation
        v = 1.0 + self.obs[:, VOLTAGE] * VOLTAGE_SCALE_PU
        outside = np.maximum(v - self.vmax, 0.0) + np.maximum(self.vmin - v, 0.0)
        with np.errstate(invalid="ignore"):  # NaN losses of a copy that did not converge
            shared = (r.losses_share * g.losses_kwh * self.wholesale[t]
                      + r.violation_penalty * g.violations
                      + r.overload_penalty * g.overloaded_lines) / self.per_copy
        network = r.voltage_penalty * outside + shared[self.copy]
        cost = cost + np.where(g.converged[self.copy], network, 0.0)
        return self._finite(-cost, f"step {t} (rewards)")

    @staticmethod
    def _info(result: StepResult) -> dict[str, object]:
        g = result.grid
        return {"step": result.step, "converged": g.converged, "v_min_pu": g.v_min_pu,
                "v_max_pu": g.v_max_pu, "violations": g.violations,
                "max_line_loading": g.max_line_loading, "overloaded_lines": g.overloaded_lines,
                "losses_kwh": g.losses_kwh, "substation_kwh": g.substation_kwh,
                "money_balance": result.system["money_balance"]}

    @staticmethod
    def _finite(x: np.ndarray, where: str) -> np.ndarray:
        if not np.isfinite(x).all():
            k = int(np.argwhere(~np.isfinite(x))[0][0])
            raise RuntimeError(f"{where}: household {k}: not finite ({x[k]}); the "
                               "simulation must never hand an agent NaN")
        return x


class ParallelEnv(pettingzoo.ParallelEnv):
    """PettingZoo's parallel API over a scenario (module docstring). `config`: a scenario
    file, a parsed config or its dict; `overrides` dotted keys of a file; `profiles`
    replaces the scenario's profile source (tests); `copies`: that many independent copies
    of the scenario stepped as one (`Simulation.from_config`), their households agents
    household_0 to household_{copies * count - 1}, each sharing its own copy's network
    terms."""

    metadata = {"name": "gridedge_households_v0", "render_modes": []}

    def __init__(self, config: str | Path | ScenarioConfig | dict,
                 reward: RewardConfig = RewardConfig(), backend: str | object = "local",
                 overrides: dict[str, object] | None = None,
                 profiles: ProfileData | None = None, bidding: bool = False,
                 copies: int = 1) -> None:
        self._core = _Core(config, reward, backend, overrides, profiles, bidding, copies)
        self.possible_agents = list(self._core.agents_all)
        self.agents: list[str] = []
        self.render_mode = None
        self.state_space = self._core.state_space

    def observation_space(self, agent: str) -> gym.spaces.Box:
        return self._core.obs_space

    def action_space(self, agent: str) -> gym.spaces.Box:
        return self._core.action_space

    def reset(self, seed: int | None = None, options: dict | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        """The scenario from its start. The simulation is deterministic given its scenario,
        so `seed` changes nothing here (a new scenario is a new environment)."""
        obs = self._core.reset()
        self.agents = list(self.possible_agents)
        return ({a: obs[k].copy() for k, a in enumerate(self.possible_agents)},
                {a: {} for a in self.agents})

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise EnvError("the episode is over: call reset()")
        core = self._core
        obs, rewards, done, info = core.step(core.actions(actions, self.agents))
        agents = self.agents
        out = ({a: obs[core.index[a]].copy() for a in agents},
               {a: float(rewards[core.index[a]]) for a in agents},
               {a: False for a in agents}, {a: done for a in agents},
               {a: info for a in agents})
        if done:
            self.agents = []
        return out

    def render(self) -> None:
        return None

    def close(self) -> None:
        self._core.sim.close()

    def state(self) -> np.ndarray:
        """The global state a centralised critic sees (module docstring)."""
        return self._core.global_state()


class MultiAgentEnv(RLlibMultiAgentEnv):
    """RLlib's multi-agent API over a scenario: as ParallelEnv, with Dict observations
    {"obs": the local observation, "agent": the household's index[, "state": the global
    state]}."""

    def __init__(self, config: str | Path | ScenarioConfig | dict,
                 reward: RewardConfig = RewardConfig(), backend: str | object = "local",
                 overrides: dict[str, object] | None = None,
                 profiles: ProfileData | None = None, global_state: bool = False,
                 bidding: bool = False, copies: int = 1) -> None:
        super().__init__()
        if global_state and copies > 1:
            raise ValueError(f"global_state: the critic's state is one scenario's; it "
                             f"cannot span copies ({copies})")
        self._core = _Core(config, reward, backend, overrides, profiles, bidding, copies)
        self.global_state = global_state
        self.possible_agents = list(self._core.agents_all)
        self.agents = list(self.possible_agents)
        spaces = {"obs": self._core.obs_space,
                  "agent": gym.spaces.Discrete(self._core.per_copy)}
        if global_state:
            spaces["state"] = self._core.state_space
        space = gym.spaces.Dict(spaces)
        self.observation_spaces = {a: space for a in self.possible_agents}
        self.state_space = self._core.state_space  # the centralised critic's view
        self.action_spaces = {a: self._core.action_space for a in self.possible_agents}

    def _dict(self, obs: np.ndarray, agents: list[str]) -> dict[str, dict]:
        index, of = self._core.index, self._core.agent_of
        if not self.global_state:
            return {a: {"obs": obs[index[a]].copy(), "agent": int(of[index[a]])}
                    for a in agents}
        state = self._core.global_state()
        return {a: {"obs": obs[index[a]].copy(), "agent": int(of[index[a]]), "state": state}
                for a in agents}

    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[dict, dict]:
        obs = self._core.reset()
        self.agents = list(self.possible_agents)
        return self._dict(obs, self.agents), {a: {} for a in self.agents}

    def step(self, action_dict: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        core = self._core
        obs, rewards, done, info = core.step(core.actions(action_dict, self.agents))
        agents = self.agents
        out = (self._dict(obs, agents), {a: float(rewards[core.index[a]]) for a in agents},
               {a: False for a in agents} | {"__all__": False},
               {a: done for a in agents} | {"__all__": done},
               {a: info for a in agents})
        if done:
            self.agents = []
        return out

    def reset_arrays(self) -> np.ndarray:
        """`reset` for every household at once: the local observations,
        `[households, len(FIELDS)]` (row k: household_k); `state()` gives the global
        state."""
        obs = self._core.reset()
        self.agents = list(self.possible_agents)
        return obs.copy()

    def step_arrays(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, dict]:
        """`step` for every household at once, without a dict per agent (RLlib's
        runner for the stacked module, experiments/rl/runner.py): `actions`
        `[households, len(ACTIONS)]` (bidding: `[households, 1]`) inside the action space
        (checked as `step` checks them). Returns the next local observations
        `[households, len(FIELDS)]`, the rewards `[households]` (currency), whether the
        episode ended (every agent truncated) and the global info."""
        if not self.agents:
            raise EnvError("the episode is over: call reset()")
        core = self._core
        obs, rewards, done, info = core.step(core.actions_array(actions))
        if done:
            self.agents = []
        return obs.copy(), rewards, done, info

    def what_if_arrays(self, actions: np.ndarray) -> np.ndarray:
        """The rewards `[households]` that `step_arrays(actions)` would give now, without
        moving the episode on: for counterfactual (marginal, difference) rewards. Several
        alternatives at once, `[K, households, len(ACTIONS)]`, give `[K, households]`
        from one snapshot of the simulation."""
        if not self.agents:
            raise EnvError("the episode is over: call reset()")
        core = self._core
        many = np.ndim(actions) == 3
        rewards = core.what_if([core.actions_array(a) for a in
                                (actions if many else [actions])])
        return rewards if many else rewards[0]

    @property
    def agent_index(self) -> np.ndarray:
        """[households]: the "agent" each household's observations carry (its index; with
        copies, its index within its copy, so every copy trains the same policies)."""
        return self._core.agent_of

    def state(self) -> np.ndarray:
        """The global state of the Dict observations' "state" (module docstring)."""
        return self._core.global_state()

    @property
    def episode_steps(self) -> int:
        """Env steps in one episode: the scenario's run."""
        return self._core.sim.total

    def close(self) -> None:
        self._core.sim.close()
