"""FACMAC: decentralised deterministic actors trained through a centralised, factored critic.

    from experiments.rl.facmac import FacmacConfig, train
    outcome = train(env, FacmacConfig(critic="mixer", episodes=200))

Peng et al. (NeurIPS 2021), as Charbonnier et al. (arXiv:2305.18875; Applied Energy 377,
2025) use it for residential flexibility. Each household k acts on its own observation
through its own deterministic actor a_k = mu_k(o_k) (a `PolicyBank`, no parameter sharing:
what `cosim run` deploys with `policy = "bank"`). Training is centralised:

- utilities Q_k(o_k, a_k): one MLP shared by every household and told which one by a
  one-hot id (the paper's; `shared_utility = False`: one per household);
- `critic = "mixer"` (FACMAC): a monotonic QMIX mixer Q_tot(s, Q_1..Q_n), its non-negative
  weights and its bias made by hypernetworks from the global state s (`cosim.envs`'s
  centralised-critic state), trained on the team reward with the TD target
  r + gamma Q_tot'(s', mu'(o')) (target networks, soft updates); every actor follows the
  centralised policy gradient of Q_tot(s, mu_1(o_1), ..., mu_n(o_n)), all actions taken
  from the current actors, none from the buffer;
- `critic = "independent"`: independent learners of the same team reward, each Q_k trained
  on its own TD target r + gamma Q_k'(o_k', mu_k'(o_k')) and each actor following its own
  Q_k (independent DDPG);
- `critic = "marginal"`: independent learners of their marginal (difference) reward, the
  team's reward minus what it would have been had household k taken the default action
  (every other household's action unchanged). The counterfactual is simulated in the same
  step (`MultiAgentEnv.what_if_arrays`), so each step costs n + 1 simulated steps: the
  scaling cost the paper reports for its previous state of the art's marginal reward.

The team reward of a step is the mean of the households' rewards (`cosim.envs`: bills,
wear, discomfort, car shortfall, carbon, voltage and network shares), so its scale does
not grow with the number of homes; the marginal reward is the difference of the summed
rewards. An episode is the scenario's day; its end is terminal (no value after it).

The replay buffer holds whole episodes; an update samples `batch_episodes` of them. Before
`random_steps` environment steps actions are uniform random, then the actors' plus
Gaussian noise (std `noise` times each action's range), clipped to the action space. What
differs from the paper's code: independent actors (a bank) instead of one shared with a
one-hot id, as every policy here deploys; both learning rates 1e-3 (its actor learning-rate
entry "may be unused"; its critic's 1e-2 was not tried); tau 0.01 rather than 0.001 so
that targets move within our shorter runs. With one utility network per household instead
of the shared one, the mixer's utilities are barely identified (only their mix is fitted)
and the centralised gradient made the actors worse at 10 homes and more (measured:
BENCHMARKS.md); the shared network is the default.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from agents.households import ACTIONS, FIELDS, SIGNED_ACTIONS
from agents.policies.bank import PolicyBank
from cosim.envs import MultiAgentEnv

CRITICS = ("mixer", "independent", "marginal")
# What a household does without learning, the counterfactual of the marginal reward: the
# paper's default ("consume or charge as much as possible, as early as possible"): cars
# and heat pumps at their highest feasible power, the flexible load served now, all PV
# used; the battery idle and the generator off (a home without flexibility).
DEFAULT_ACTION = np.array([{"battery": 0.0, "ev": 1.0, "heat_pump": 1.0, "flexible_load": 1.0,
                            "pv": 1.0, "generator": 0.0}[a] for a in ACTIONS])
LOW = np.array([-1.0 if signed else 0.0 for signed in SIGNED_ACTIONS])


@dataclass(frozen=True)
class FacmacConfig:
    """FACMAC's hyperparameters (module docstring; the paper's where it has them)."""

    critic: str = "mixer"  # "mixer" (FACMAC), "independent", "marginal"
    episodes: int = 200  # training episodes (days), unless budget_s or target_return stop
    budget_s: float | None = None  # training wall seconds (evaluation not counted)
    target_return: float | None = None  # stop at this evaluation return (per household)
    gamma: float = 0.85  # the paper's
    hidden: tuple[int, ...] = (500,)  # actors and utilities: one layer of 500 (the paper's)
    mixer_embed: int = 64  # the paper's
    shared_utility: bool = True  # one utility network with a one-hot home id (the paper's)
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    tau: float = 0.01  # soft target updates (the paper: 0.001)
    grad_clip: float = 0.5  # the paper's
    batch_episodes: int = 10  # the paper's batch
    buffer_episodes: int = 5000  # the paper's buffer
    updates_per_episode: int = 4
    random_steps: int = 100  # uniform-random start steps (the paper's)
    noise: float = 0.1  # Gaussian exploration, share of each action's range
    eval_every: int = 5  # episodes between deterministic evaluations
    seed: int = 0

    def __post_init__(self) -> None:
        if self.critic not in CRITICS:
            raise ValueError(f"critic {self.critic!r}: choose one of {list(CRITICS)}")
        if self.episodes < 1 or self.batch_episodes < 1 or self.eval_every < 1:
            raise ValueError("episodes, batch_episodes and eval_every must be >= 1")


class Outcome(NamedTuple):
    """A training run: the actors (a bank, one per household), the curve (one row per
    evaluation: episode, env_steps, simulated_steps (counterfactuals included), train_s
    (wall seconds of training so far, evaluations excluded), eval_return (per household,
    deterministic actors), eval_violations (node-steps outside the voltage limits),
    eval_failed_steps (power flows that did not converge), critic_loss) and why it
    stopped."""

    actors: PolicyBank
    curve: pd.DataFrame
    stopped: str  # "episodes", "budget", "target"


class Mixer(nn.Module):
    """QMIX's monotonic mixer: Q_tot = w2(s) . elu(W1(s) q + b1(s)) + V(s), with W1, w2 >= 0
    (absolute values of hypernetwork outputs), so dQ_tot/dQ_k >= 0 for every k."""

    def __init__(self, n: int, state_dim: int, embed: int) -> None:
        super().__init__()
        self.n, self.embed = n, embed
        self.w1, self.b1 = nn.Linear(state_dim, n * embed), nn.Linear(state_dim, embed)
        self.w2 = nn.Linear(state_dim, embed)
        self.v = nn.Sequential(nn.Linear(state_dim, embed), nn.ReLU(), nn.Linear(embed, 1))

    def forward(self, q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """q [..., n], state [..., state_dim] -> Q_tot [...]."""
        w1 = self.w1(state).abs().unflatten(-1, (self.n, self.embed))
        hidden = nn.functional.elu((q.unsqueeze(-2) @ w1).squeeze(-2) + self.b1(state))
        return (hidden * self.w2(state).abs()).sum(-1) + self.v(state).squeeze(-1)


class Buffer:
    """Whole episodes: observations [T + 1, n, F], states [T + 1, S], actions [T, n, A],
    rewards [T, n] (the team's, or each household's marginal reward)."""

    def __init__(self, capacity: int, steps: int, n: int, state_dim: int) -> None:
        f, a = len(FIELDS), len(ACTIONS)
        self.obs = np.zeros((capacity, steps + 1, n, f), np.float32)
        self.state = np.zeros((capacity, steps + 1, state_dim), np.float32)
        self.action = np.zeros((capacity, steps, n, a), np.float32)
        self.reward = np.zeros((capacity, steps, n), np.float32)
        self.capacity, self.size, self.next = capacity, 0, 0

    def add(self, obs: np.ndarray, state: np.ndarray, action: np.ndarray,
            reward: np.ndarray) -> None:
        k = self.next
        self.obs[k], self.state[k], self.action[k], self.reward[k] = obs, state, action, reward
        self.next, self.size = (k + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        k = rng.integers(0, self.size, batch)
        return tuple(torch.from_numpy(x[k]) for x in (self.obs, self.state, self.action,
                                                       self.reward))


def _soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.lerp_(s, tau)


class Episode(NamedTuple):
    """One episode: observations [T + 1, n, F], states [T + 1, S], actions [T, n, A],
    rewards [T, n], the node-steps outside the voltage limits, and the steps whose power
    flow did not converge (their network terms are missing from the rewards, so they are
    counted here, never hidden)."""

    obs: np.ndarray
    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    violations: int
    failed: int


def rollout(env: MultiAgentEnv, act: callable) -> Episode:
    """One episode with `act(obs, step) -> actions`."""
    obs, states, actions, rewards = [env.reset_arrays()], [env.state()], [], []
    done, t, violations, failed = False, 0, 0, 0
    while not done:
        a = act(obs[-1], t)
        o, r, done, info = env.step_arrays(a)
        obs.append(o)
        states.append(env.state())
        actions.append(a)
        rewards.append(r)
        if info["converged"]:
            violations += info["violations"]
        else:
            failed += 1
        t += 1
    return Episode(np.array(obs), np.array(states), np.array(actions), np.array(rewards),
                   int(violations), failed)


def evaluate(env: MultiAgentEnv, actors: PolicyBank) -> dict[str, float]:
    """The deterministic actors over one episode: eval_return (per household, the team's),
    eval_violations and eval_failed_steps (`Episode`)."""
    with torch.no_grad():
        episode = rollout(env, lambda o, t: actors(torch.from_numpy(o).float()).double()
                          .numpy())
    return _scores(episode)


def default_return(env: MultiAgentEnv) -> dict[str, float]:
    """`evaluate` with every household on `DEFAULT_ACTION`."""
    return _scores(rollout(env, lambda o, t: np.tile(DEFAULT_ACTION, (len(o), 1))))


def _scores(episode: Episode) -> dict[str, float]:
    return dict(eval_return=float(episode.rewards.mean(1).sum()),
                eval_violations=episode.violations, eval_failed_steps=episode.failed)


def train(env: MultiAgentEnv, config: FacmacConfig = FacmacConfig(),
          progress: bool = True) -> Outcome:
    """Train the households' actors in `env` (module docstring); returns the Outcome."""
    c = config
    torch.manual_seed(c.seed)
    rng = np.random.default_rng(c.seed)
    n, f, a = len(env.possible_agents), len(FIELDS), len(ACTIONS)
    steps = env.episode_steps
    state_dim = env.state_space.shape[0]
    kw = dict(hidden=c.hidden, activation="relu", dtype=torch.float32)
    actors = PolicyBank(n, f, a, squash=SIGNED_ACTIONS, seed=c.seed, **kw)
    # utilities: one network shared by every home, told which home by a one-hot id (the
    # paper's), or one per home
    shared = c.shared_utility
    utilities = PolicyBank(1 if shared else n, f + a + (n if shared else 0), 1,
                           seed=c.seed + 1, **kw)
    one_hot = torch.eye(n)
    mixer = Mixer(n, state_dim, c.mixer_embed) if c.critic == "mixer" else None
    critic = nn.ModuleList([utilities] + ([mixer] if mixer is not None else []))
    actors_target, critic_target = copy.deepcopy(actors), copy.deepcopy(critic)
    actor_opt = torch.optim.Adam(actors.parameters(), lr=c.actor_lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=c.critic_lr)
    buffer = Buffer(min(c.buffer_episodes, c.episodes), steps, n, state_dim)  # never more

    def q_total(net: nn.ModuleList, obs: torch.Tensor, action: torch.Tensor,
                state: torch.Tensor) -> torch.Tensor:
        """[..., n] utilities (independent critics) or [...] Q_tot (the mixer)."""
        if shared:  # [..., n, 1, in]: the homes ride in the batch of the one network
            x = torch.cat([obs, one_hot.expand(*obs.shape[:-1], n), action], -1)
            q = net[0](x.unsqueeze(-2), squash=False).squeeze(-2).squeeze(-1)
        else:
            q = net[0](torch.cat([obs, action], -1), squash=False).squeeze(-1)
        return net[1](q, state) if len(net) > 1 else q

    def act(obs: np.ndarray, t: int) -> np.ndarray:
        if env_steps + t < c.random_steps:
            return rng.uniform(LOW, 1.0, (n, a))
        with torch.no_grad():
            mu = actors(torch.from_numpy(obs).float()).double().numpy()
        return np.clip(mu + rng.normal(0.0, c.noise, mu.shape) * (1.0 - LOW), LOW, 1.0)

    def marginal_act(obs: np.ndarray, t: int) -> np.ndarray:
        """`act`, after simulating the step with each household on the default action in
        turn (the summed rewards go to `counterfactual`)."""
        actions = act(obs, t)
        others = np.repeat(actions[None], n, axis=0)  # alternative k: household k defaults
        others[np.arange(n), np.arange(n)] = DEFAULT_ACTION
        counterfactual[t] = env.what_if_arrays(others).sum(-1)
        return actions

    def update() -> float:
        obs, state, action, reward = buffer.sample(c.batch_episodes, rng)
        o, o2, s, s2 = obs[:, :-1], obs[:, 1:], state[:, :-1], state[:, 1:]
        if c.critic != "marginal":  # the team's reward, per household
            reward = reward.mean(-1, keepdim=c.critic == "independent")
        with torch.no_grad():
            next_q = q_total(critic_target, o2, actors_target(o2), s2)
            next_q[:, -1] = 0.0  # the day's end is terminal
            y = reward + c.gamma * next_q
        q = q_total(critic, o, action, s)
        critic_loss = ((q - y) ** 2).mean()
        critic_opt.zero_grad()
        critic_loss.backward()
        nn.utils.clip_grad_norm_(critic.parameters(), c.grad_clip)
        critic_opt.step()
        # the actors: every household's action from its current actor, none from the buffer
        value = q_total(critic, o, actors(o), s)
        actor_loss = -value.sum(-1).mean() if c.critic != "mixer" else -value.mean()
        actor_opt.zero_grad()
        actor_loss.backward()
        nn.utils.clip_grad_norm_(actors.parameters(), c.grad_clip)
        actor_opt.step()
        _soft_update(actors_target, actors, c.tau)
        _soft_update(critic_target, critic, c.tau)
        return critic_loss.item()

    rows, env_steps, simulated, train_s, loss = [], 0, 0, 0.0, float("nan")
    stopped = "episodes"
    bar = tqdm(range(1, c.episodes + 1), desc=f"facmac ({c.critic}, {n} homes)",
               unit="episode", disable=not progress)
    for episode in bar:
        t0 = time.perf_counter()
        counterfactual = np.zeros((steps, n))
        played = rollout(env, marginal_act if c.critic == "marginal" else act)
        rewards = played.rewards
        if c.critic == "marginal":  # the team's summed reward minus its counterfactual
            rewards = rewards.sum(1, keepdims=True) - counterfactual
        buffer.add(played.obs, played.states, played.actions, rewards)
        env_steps += steps
        simulated += steps * ((n + 1) if c.critic == "marginal" else 1)
        if buffer.size >= min(c.batch_episodes, 2):
            loss = float(np.mean([update() for _ in range(c.updates_per_episode)]))
        train_s += time.perf_counter() - t0
        if episode % c.eval_every == 0 or episode == c.episodes:
            scores = evaluate(env, actors)
            rows.append(dict(episode=episode, env_steps=env_steps, simulated_steps=simulated,
                             train_s=train_s, **scores, critic_loss=loss))
            ret = scores["eval_return"]
            bar.set_postfix(ret=f"{ret:.3f}", loss=f"{loss:.3g}")
            if c.target_return is not None and ret >= c.target_return:
                stopped = "target"
                break
        if c.budget_s is not None and train_s >= c.budget_s:
            stopped = "budget"
            break
    bar.close()
    if not rows or rows[-1]["episode"] != episode:
        rows.append(dict(episode=episode, env_steps=env_steps, simulated_steps=simulated,
                         train_s=train_s, **evaluate(env, actors), critic_loss=loss))
    return Outcome(actors.double(), pd.DataFrame(rows), stopped)
