"""Benchmark: RLlib training with the stacked policy bank, side by side with RLlib's own
one-module-per-agent layout, at 10, 100 and 1,000 agents.

The issue's target: at 1,000 agents, at least 20x faster per training iteration than one
module per agent. The scenario is the IEEE 123 feeder of experiments/configs/ieee123_1000
.toml with `households.count` = n (10, 100, 1,000), synthetic profiles
(`cosim.profiles.synthetic`, one per household) and a 4-step episode (one hour in 15-minute
steps): one training iteration samples one whole episode, n x 4 agent steps, and learns
on it. Every household is an agent of `cosim.envs.MultiAgentEnv` on the real step.

The contenders, both RLlib 2.x PPO (new API stack), sampling in the driver
(`num_env_runners = 0`, so that Ray's scheduling is not what is compared) with a local
learner, the same PPO settings (`experiments.rl.train.TrainConfig`'s lr, gamma, lambda,
clip, value clip, no KL term), one epoch, `minibatch_size` = the batch (below):

- **stacked** (ours): `experiments.rl.train.algorithm_config` for "ippo", one
  `BankModule` holding every household's own policy and value network (2 x 64, tanh),
  stacked; observations are the env's Dict {"obs": 16 floats, "agent": index}; sampled
  by `experiments.rl.runner.StackedEnvRunner`, RLlib's multi-agent env runner stepping
  every household at once: per env step one forward pass, one Gaussian sample and
  log-probability and one unsquash over the [n, ...] batch and one `step_arrays` of the
  co-simulation; per episode RLlib's `MultiAgentEpisode` built from the arrays and
  RLlib's episode metrics logged once, not per agent. The learning is RLlib's PPO learner
  as it stands (its learner connector, GAE, loss and optimiser);
- **peer**: RLlib's usual layout for independent learners as a speed-aware user writes
  it: `policies` = one module id per agent, `policy_mapping_fn` agent -> its own module,
  RLlib's default PPO module (`DefaultPPOTorchRLModule`) with the same sizes (2 x 64, tanh,
  separate value network: `vf_share_layers = False`) and one Adam optimiser per module; the
  same environment behind a thin wrapper (`LocalObservations`) whose observation is the
  16-float local Box alone (no index to one-hot); sampled by RLlib's own
  `MultiAgentEnvRunner` (a dict per step, an episode, connector passes and metrics per
  agent).

Minibatches: RLlib cuts minibatches per module (`minibatch_size` rows from every module's
batch, cycling through it until each row was seen `num_epochs` times), and its learner
connector adds one bootstrap row (masked out of the loss) to each agent's episode, so a
module's batch has agents x (T + 1) rows. PPO wants `minibatch_size` <= the sampled batch,
so the closest to "one minibatch of the whole batch" is `minibatch_size` = the batch: n x T
for the stacked module (train.py's `minibatches = 1`) and T for each peer module. Both
contenders then take the same two minibatches per iteration, T rows per agent each (the
remainder and a reshuffled start), and pass 2 x n x T rows through forward and backward.

What is timed, per agent count (after one untimed build and iteration of both at the
smallest size, which pays Python's and torch's first-call costs):

- build: `config.build_algo()`, wall time, `builds` times per contender taking turns
  (the stacked config's probe env, which reads the spaces, is built outside it); the
  last pair built is the one run;
- forward: the env runner's own call, `module.forward_exploration(batch)` on the
  MultiRLModule, with the batch the env runner built for the first step of an episode
  (recorded during an untimed iteration): one sub-batch of n rows for the stacked module,
  n sub-batches of one row for the peer; median over `forward_calls` calls, taking turns;
- iteration: `algo.train()` wall time, split into
  - learn: inside `learner_group.update`; of it, batch: RLlib's learner connector turning
    the episodes into a train batch (with the value pass for GAE); the rest is forward,
    loss, backward and optimiser steps;
  - sample: the rest of the iteration; of it, rollout: the env runner's `sample` call
    (and of that, env: the co-simulation's own `reset` and `step`, or `reset_arrays` and
    `step_arrays`), and metrics: the env runner's `get_metrics` (its episodes' metrics);
    the rest is the weight sync from learner to env runner and the algorithm's
    bookkeeping (its metrics of the env runner's and the learner's results).
  One untimed iteration of each first, then `repeats` rounds in which the contenders
  take turns (stacked, peer); times are medians over rounds, ratios (peer / stacked)
  medians of per-round ratios. The machine has 2 cores that other work may share;
  taking turns spreads a slow moment over both.

Checks that both trained: every iteration sampled n x T agent steps in T env steps, and
every module reports finite policy and value losses and the rows it trained on.

    cosim bench rl [--agents 10 100 1000] [--repeats 5] [--builds 3] [--quick]
                   [--update-benchmarks MD]
    python -m experiments.bench.rl --quick
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ray.rllib.env.multi_agent_env import MultiAgentEnv as RLlibMultiAgentEnv

from cosim.config import ScenarioConfig, load_config
from cosim.envs import MultiAgentEnv
from cosim.profiles import synthetic
from cosim.scenario import ProfileData
from experiments.bench.common import add_output_arguments, machine_info, save
from experiments.rl.train import TrainConfig, _LearnTimer, algorithm_config

MARK = "<!-- bench:rl -->"
END = "<!-- /bench:rl -->"
SCENARIO = Path(__file__).parents[1] / "configs" / "ieee123_1000.toml"
PEER_ENV = "gridedge-households-local"
TARGET = 20.0  # x faster per iteration at 1,000 agents
AGENTS = (10, 100, 1000)
QUICK_AGENTS = (10, 100)
CONTENDERS = ("stacked", "peer")
ENV_CALLS = ("reset", "step", "reset_arrays", "step_arrays")  # cosim.envs.MultiAgentEnv


@dataclass
class Config:
    agents: tuple[int, ...] = AGENTS
    steps: int = 4  # per episode = per iteration
    repeats: int = 5  # timed iterations per contender, taking turns
    builds: int = 3  # timed builds per contender, taking turns (the last one is used)
    forward_calls: int = 20
    seed: int = 0
    quick: bool = False


@dataclass
class Side:
    """One contender at one agent count."""

    build_s: list[float] = field(default_factory=list)  # per build
    forward_ms: list[float] = field(default_factory=list)  # per call
    sample_s: list[float] = field(default_factory=list)  # per timed iteration
    rollout_s: list[float] = field(default_factory=list)  # of sample_s: env_runner.sample
    env_s: list[float] = field(default_factory=list)  # of rollout_s: the env's reset, step
    metrics_s: list[float] = field(default_factory=list)  # of sample_s: the rollout's metrics
    learn_s: list[float] = field(default_factory=list)
    batch_s: list[float] = field(default_factory=list)  # of learn_s: the learner connector
    iteration_s: list[float] = field(default_factory=list)
    agent_steps: list[int] = field(default_factory=list)  # sampled, per iteration
    env_steps: list[int] = field(default_factory=list)
    rows_trained: list[int] = field(default_factory=list)  # summed over modules
    modules: int = 0  # modules that reported learner results
    finite_losses: bool = True  # every module's policy and value loss, every iteration

    def median(self, name: str) -> float:
        return statistics.median(getattr(self, name))


@dataclass
class Row:
    agents: int
    steps: int
    stacked: Side = field(default_factory=Side)
    peer: Side = field(default_factory=Side)
    ratio: dict[str, float] = field(default_factory=dict)  # peer / stacked

    @property
    def batch(self) -> int:
        return self.agents * self.steps

    def trained(self) -> bool:
        """Both contenders sampled whole episodes of n x T agent steps and every module
        learned with finite losses."""
        return all(set(s.agent_steps) == {self.batch} and set(s.env_steps) == {self.steps}
                   and s.finite_losses and s.modules == m
                   for s, m in ((self.stacked, 1), (self.peer, self.agents)))


@dataclass
class Result:
    config: Config
    machine: dict[str, str]
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0


# -- the scenario and the contenders -------------------------------------------------------

def scenario(agents: int, steps: int, seed: int = 0) -> tuple[ScenarioConfig, ProfileData]:
    """The IEEE 123 scenario with `agents` households, `steps` steps from its start, and
    synthetic profiles (one per household: building them is not what is measured)."""
    config = load_config(SCENARIO, {"households.count": agents, "run.steps": steps})
    return config, synthetic(homes=agents, steps=96, dt_s=config.run.dt_s, seed=seed)


class LocalObservations(RLlibMultiAgentEnv):
    """The peer's environment: `cosim.envs.MultiAgentEnv` with each agent's observation
    its 16-float local Box alone (one module per agent needs no index)."""

    def __init__(self, env: MultiAgentEnv) -> None:
        super().__init__()
        self.env = env
        self.possible_agents = list(env.possible_agents)
        self.agents = list(env.agents)
        box = env.observation_spaces[self.possible_agents[0]]["obs"]
        self.observation_spaces = {a: box for a in self.possible_agents}
        self.action_spaces = dict(env.action_spaces)

    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[dict, dict]:
        obs, infos = self.env.reset(seed=seed, options=options)
        self.agents = list(self.env.agents)
        return {a: o["obs"] for a, o in obs.items()}, infos

    def step(self, action_dict: dict) -> tuple[dict, dict, dict, dict, dict]:
        obs, *rest = self.env.step(action_dict)
        self.agents = list(self.env.agents)
        return {a: o["obs"] for a, o in obs.items()}, *rest

    def close(self) -> None:
        self.env.close()


def train_config(seed: int) -> TrainConfig:
    """The PPO settings both contenders share: one episode, one epoch, minibatch = batch."""
    return TrainConfig(algo="ippo", episodes=1, minibatches=1, epochs=1, hidden=(64, 64),
                       activation="tanh", seed=seed)


def stacked_config(config: ScenarioConfig, profiles: ProfileData, seed: int) -> Any:
    return algorithm_config(config, train_config(seed), profiles=profiles)


def peer_config(config: ScenarioConfig, profiles: ProfileData, seed: int) -> Any:
    """THE PEER (module docstring): one RLlib default PPO module per agent."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.tune.registry import register_env

    t = train_config(seed)
    n, steps = config.households.count, config.run.steps

    def make(_: dict) -> Any:
        return LocalObservations(MultiAgentEnv(config, profiles=profiles))

    register_env(PEER_ENV, make)
    return (PPOConfig()
            .environment(PEER_ENV)
            .env_runners(num_env_runners=0, rollout_fragment_length=steps,
                         batch_mode="complete_episodes")
            .multi_agent(policies={f"household_{k}" for k in range(n)},
                         policy_mapping_fn=lambda agent, *args, **kwargs: agent,
                         count_steps_by="agent_steps")
            .rl_module(model_config=DefaultModelConfig(
                fcnet_hiddens=list(t.hidden), fcnet_activation=t.activation,
                vf_share_layers=False))
            .training(train_batch_size_per_learner=n * steps, minibatch_size=steps,
                      num_epochs=1, lr=t.lr, gamma=t.gamma, lambda_=t.lambda_,
                      clip_param=t.clip_param, vf_clip_param=t.vf_clip_param,
                      entropy_coeff=t.entropy_coeff, use_kl_loss=False)
            .debugging(seed=seed))


# -- the run -------------------------------------------------------------------------------

class Contender:
    """A built algorithm with stopwatches on its learner update and learner connector, its
    rollout and the co-simulation's reset and step."""

    def __init__(self, rllib_config: Any) -> None:
        start = time.perf_counter()
        self.algo = rllib_config.build_algo()
        self.build_s = time.perf_counter() - start
        self.learn = self.algo.learner_group.update = _LearnTimer(self.algo.learner_group.update)
        learner = self.algo.learner_group._learner  # the local learner (num_learners = 0)
        self.batching = learner._learner_connector = _LearnTimer(learner._learner_connector)
        runner = self.algo.env_runner
        self.rollout = runner.sample = _LearnTimer(runner.sample)
        self.metrics = runner.get_metrics = _LearnTimer(runner.get_metrics)
        # the co-simulation itself, behind the peer's wrapper and gymnasium's: RLlib's
        # runner calls step and reset, the stacked runner their array forms
        env = runner.env.envs[0].unwrapped
        env = env.env if isinstance(env, LocalObservations) else env
        self.env = [_LearnTimer(getattr(env, name)) for name in ENV_CALLS]
        for name, timer in zip(ENV_CALLS, self.env):
            setattr(env, name, timer)
        self.batch: tuple[dict, dict] | None = None

    def iteration(self, side: Side | None = None) -> None:
        """One `algo.train()`; recorded into `side` unless None (warm-up). The first call
        records the batch of the env runner's first forward pass."""
        module = self.algo.env_runner.module
        if self.batch is None:
            forward = module.forward_exploration

            def record(batch: dict, **kwargs: Any) -> Any:
                if self.batch is None:
                    self.batch = (batch, kwargs)
                return forward(batch, **kwargs)

            module.forward_exploration = record
        for timer in (self.learn, self.batching, self.rollout, self.metrics, *self.env):
            timer.seconds = 0.0
        start = time.perf_counter()
        try:
            result = self.algo.train()
        finally:
            module.__dict__.pop("forward_exploration", None)
        wall = time.perf_counter() - start
        if side is None:
            return
        side.iteration_s.append(wall)
        side.learn_s.append(self.learn.seconds)
        side.batch_s.append(self.batching.seconds)
        side.sample_s.append(wall - self.learn.seconds)
        side.rollout_s.append(self.rollout.seconds)
        side.env_s.append(sum(timer.seconds for timer in self.env))
        side.metrics_s.append(self.metrics.seconds)
        runners = result["env_runners"]
        side.agent_steps.append(int(sum(runners["num_module_steps_sampled"].values())))
        side.env_steps.append(int(runners["num_env_steps_sampled"]))
        learners = {k: v for k, v in result["learners"].items() if k != "__all_modules__"}
        side.modules = len(learners)
        side.rows_trained.append(int(sum(v["num_module_steps_trained"]
                                         for v in learners.values())))
        side.finite_losses &= all(math.isfinite(float(v[k])) for v in learners.values()
                                  for k in ("policy_loss", "vf_loss"))

    def forward_s(self) -> float:
        batch, kwargs = self.batch
        start = time.perf_counter()
        self.algo.env_runner.module.forward_exploration(batch, **kwargs)
        return time.perf_counter() - start

    def stop(self) -> None:
        self.algo.stop()


def contenders(agents: int, cfg: Config) -> dict[str, Contender]:
    config, profiles = scenario(agents, cfg.steps, cfg.seed)
    return {"stacked": Contender(stacked_config(config, profiles, cfg.seed)),
            "peer": Contender(peer_config(config, profiles, cfg.seed))}


def measure(agents: int, cfg: Config) -> Row:
    """Builds, forward passes and iterations of both contenders at one agent count."""
    row = Row(agents, cfg.steps)
    sides = {"stacked": row.stacked, "peer": row.peer}
    for r in range(cfg.builds):
        built = contenders(agents, cfg)
        for name, c in built.items():
            sides[name].build_s.append(c.build_s)
        if r < cfg.builds - 1:
            for c in built.values():
                c.stop()
    try:
        for c in built.values():
            c.iteration()  # untimed; records the forward batch
        for _ in range(cfg.forward_calls):
            for name, c in built.items():
                sides[name].forward_ms.append(c.forward_s() * 1e3)
        for _ in range(cfg.repeats):
            for name, c in built.items():
                c.iteration(sides[name])
    finally:
        for c in built.values():
            c.stop()
    s, p = row.stacked, row.peer
    for key in ("build_s", "forward_ms", "sample_s", "learn_s", "iteration_s"):
        row.ratio[key.rsplit("_", 1)[0]] = statistics.median(
            b / a for a, b in zip(getattr(s, key), getattr(p, key)))
    return row


def warm_up(cfg: Config) -> None:
    """One build and iteration of both contenders at the smallest size, untimed."""
    for c in contenders(min(cfg.agents), cfg).values():
        try:
            c.iteration()
        finally:
            c.stop()


def run(cfg: Config) -> Result:
    import ray

    begin = time.perf_counter()
    started = not ray.is_initialized()
    if started:  # a fresh local instance, never someone else's cluster
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    result = Result(config=cfg, machine=machine_info("cpu"))
    try:
        warm_up(cfg)
        for n in cfg.agents:
            row = measure(n, cfg)
            result.rows.append(row)
            s, p = row.stacked, row.peer
            print(f"{n:,} agents: iteration stacked {s.median('iteration_s'):.2f} s, peer "
                  f"{p.median('iteration_s'):.2f} s ({row.ratio['iteration']:.1f}x); build "
                  f"{s.median('build_s'):.1f} / {p.median('build_s'):.1f} s; forward "
                  f"{s.median('forward_ms'):.2f} / {p.median('forward_ms'):.2f} ms",
                  flush=True)
    finally:
        if started:
            ray.shutdown()
    result.seconds = time.perf_counter() - begin
    return result


# -- the report ----------------------------------------------------------------------------

def markdown(result: Result) -> str:
    import ray

    cfg, m = result.config, result.machine
    command = "cosim bench rl " + ("--quick" if cfg.quick else
                                   f"--repeats {cfg.repeats} --builds {cfg.builds}")
    if cfg.agents not in (AGENTS, QUICK_AGENTS):
        command += " --agents " + " ".join(map(str, cfg.agents))
    if cfg.steps != Config.steps:
        command += f" --steps {cfg.steps}"
    lines = [
        MARK,
        "## RLlib training: stacked policy bank against one module per agent (issue 11)",
        "",
        "What is timed: RLlib PPO (new API stack, sampling in the driver with "
        "`num_env_runners = 0`, local learner) on the IEEE 123 scenario of "
        "`experiments/configs/ieee123_1000.toml` with n households (synthetic profiles), "
        "every household an agent of `cosim.envs.MultiAgentEnv` on the real step, "
        f"{cfg.steps}-step episodes: one iteration samples one episode, n x {cfg.steps} "
        "agent steps, and learns on it with the same PPO settings, one epoch and "
        "`minibatch_size` = the batch, which RLlib counts per module: n x T rows for the "
        "stacked module, T for each peer module (with RLlib's bootstrap row per agent both "
        "then take the same two minibatches, 2 x n x T rows). **stacked**: "
        "`experiments.rl.train.algorithm_config` for ippo, one `BankModule` holding every "
        "household's own policy and value network (2 x 64, tanh) stacked, observations "
        "{local 16 floats, agent index}, sampled by `experiments.rl.runner."
        "StackedEnvRunner` (RLlib's multi-agent env runner stepping every household at "
        "once in arrays and building RLlib's episodes from them at the episode's end, as "
        "RLlib's own runner records them). **peer**: RLlib's one-module-per-agent "
        "layout (`policies` = one id per agent, `policy_mapping_fn` agent -> its module), "
        "RLlib's default PPO module of the same sizes with a separate value network, one "
        "Adam per module, observations the 16-float local Box alone, sampled by RLlib's "
        "own `MultiAgentEnvRunner`. Both learn with RLlib's PPO learner. **build**: "
        "`config.build_algo()`. **forward**: the env runner's `forward_exploration` on the "
        "MultiRLModule with its own batch of an episode's first step (one sub-batch of n "
        "rows, or n sub-batches of one row). **learn**: inside `learner_group.update` "
        "(batch and GAE by the learner connector, forward, loss, backward, optimiser "
        "steps); **sample**: the rest of `algo.train()` (rollout, its metrics, weight "
        "sync). Details: `experiments/bench/rl.py`.",
        "",
        f"Target from the issue: at least {TARGET:.0f}x faster per iteration than one module "
        "per agent at 1,000 agents.",
        "",
        f"### RLlib training, cpu ({m['date']})",
        "",
        f"Machine: {m['cpu']} (shared with other work); Python {m['python']}; torch "
        f"{m['torch']} ({m['torch_threads']} threads); Ray {ray.__version__}. Command: "
        f"`{command}` ({result.seconds / 60:.1f} min in all). Builds: median of "
        f"{cfg.builds}; forward: median of {cfg.forward_calls} calls; iterations: after "
        f"one untimed iteration each, medians over {cfg.repeats} in which the contenders "
        "take turns; x = peer / stacked, the median of per-turn ratios.",
        "",
        "| agents | contender | build s | forward ms | sample s | learn s | iteration s "
        "| agent steps / iter | rows trained / iter |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result.rows:
        for name in CONTENDERS:
            s = getattr(row, name)
            lines.append(
                f"| {row.agents:,} | {name} | {s.median('build_s'):.2f} | "
                f"{s.median('forward_ms'):.2f} | {s.median('sample_s'):.3f} | "
                f"{s.median('learn_s'):.3f} | {s.median('iteration_s'):.3f} | "
                f"{s.agent_steps[-1]:,} | {s.rows_trained[-1]:,} |")
        r = row.ratio
        lines.append(f"| {row.agents:,} | **x (peer / stacked)** | {r['build']:.1f} | "
                     f"{r['forward']:.1f} | {r['sample']:.1f} | {r['learn']:.1f} | "
                     f"**{r['iteration']:.1f}** | | |")
    trained = all(r.trained() for r in result.rows)
    lines += [
        "",
        "Both trained: " + ("yes" if trained else "**no**") + f" (every timed iteration "
        f"sampled one whole episode, n x {cfg.steps} agent steps in {cfg.steps} env steps, "
        "and every module - 1 stacked, n peer - reported finite policy and value losses; "
        "rows trained include RLlib's bootstrap row per agent and episode).",
        "",
        "Where the time goes, s per iteration (medians): sampling is the co-simulation "
        "(`reset` and `step`), the forward passes (forward x steps), the rest of the "
        "env runner's rollout (peer: RLlib's work per agent and per module: a dict entry, "
        "episode step, connector passes and action sampling for each; stacked: one "
        "action sample and unsquash per step, and RLlib's episodes built from the arrays), "
        "the env runner's metrics of its episodes (`get_metrics`) and the rest (the "
        "weight sync from learner to env runner, the algorithm's bookkeeping and "
        "metrics); learning is the learner "
        "connector (episodes to a train batch, with the value pass for GAE) and the update "
        "(forward, loss, backward, optimiser steps).",
        "",
        "| agents | contender | co-simulation | forward passes | rest of rollout "
        "| rollout metrics | weight sync, rest | learner connector | update | iteration |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result.rows:
        for name in CONTENDERS:
            parts = breakdown(row, getattr(row, name))
            lines.append(f"| {row.agents:,} | {name} | "
                         + " | ".join(f"{v:.3f}" for v in parts.values()) + " |")
    lines += ["", target(max(result.rows, key=lambda r: r.agents)), END]
    return "\n".join(lines) + "\n"


def breakdown(row: Row, side: Side) -> dict[str, float]:
    """An iteration in parts (medians, so the parts add up to about the total)."""
    forward = row.steps * side.median("forward_ms") / 1e3
    return {"co-simulation": side.median("env_s"), "forward": forward,
            "rollout": side.median("rollout_s") - side.median("env_s") - forward,
            "metrics": side.median("metrics_s"),
            "sync": side.median("sample_s") - side.median("rollout_s")
            - side.median("metrics_s"),
            "learner connector": side.median("batch_s"),
            "update": side.median("learn_s") - side.median("batch_s"),
            "iteration": side.median("iteration_s")}


def target(row: Row) -> str:
    """The verdict on the target, and where both iterations' time goes, at the largest
    agent count."""
    if row.agents < 1000:
        return f"Target not measured: the largest case has {row.agents:,} agents."
    r, p = row.ratio, row.peer
    met = r["iteration"] >= TARGET
    text = (f"**Target {'met' if met else 'missed'}** at {row.agents:,} agents: the stacked "
            f"module is {r['iteration']:.1f}x faster per iteration than one module per agent "
            f"(target {TARGET:.0f}x): {r['sample']:.1f}x in sampling, {r['learn']:.1f}x in "
            f"learning; {r['build']:.1f}x in build and {r['forward']:.1f}x in the forward "
            "pass.")
    ours, theirs = breakdown(row, row.stacked), breakdown(row, p)
    more = {k: theirs[k] - ours[k] for k in ours}
    text += (f" The peer's extra time is per-module and per-agent work: {more['update']:.2f} s "
             f"more in the update ({row.agents:,} losses and optimiser steps), "
             f"{more['metrics'] + more['sync']:.2f} s more in metrics and weight sync, "
             f"{more['rollout']:.2f} s more in the rest of the rollout (RLlib's runner: "
             f"dicts, episode steps, connector passes and action sampling per agent), "
             f"{more['forward']:.2f} s more in forward calls, "
             f"{more['learner connector']:.2f} s more in the learner connector "
             f"(per-module batches). Of the stacked iteration's {ours['iteration']:.2f} s, "
             f"{ours['co-simulation']:.2f} s is the co-simulation, {ours['forward']:.2f} s the "
             f"forward passes, {ours['rollout']:.2f} s the rest of the rollout (sampling and "
             f"building {row.agents:,} households' episodes), {ours['metrics']:.2f} s the "
             f"rollout's metrics, {ours['sync']:.2f} s the weight sync and bookkeeping, "
             f"{ours['learner connector']:.2f} s RLlib's learner connector (a train batch "
             f"from {row.agents:,} agents' episodes, GAE) and {ours['update']:.2f} s the "
             "update.")
    if not met:
        text += (f" {TARGET:.0f}x needs a stacked iteration of "
                 f"{p.median('iteration_s') / TARGET:.2f} s.")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Config()
    parser.add_argument("--agents", type=int, nargs="+", default=list(d.agents),
                        help="agent (household) counts")
    parser.add_argument("--steps", type=int, default=d.steps,
                        help="steps per episode; one iteration samples one episode")
    parser.add_argument("--repeats", type=int, default=d.repeats,
                        help="timed iterations per contender and agent count, taking turns")
    parser.add_argument("--builds", type=int, default=d.builds,
                        help="timed builds per contender and agent count, taking turns")
    parser.add_argument("--forward-calls", type=int, default=d.forward_calls)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 10 and 100 agents, 1 repeat")
    add_output_arguments(parser)


def main(args: argparse.Namespace) -> int:
    cfg = Config(agents=QUICK_AGENTS if args.quick else tuple(args.agents), steps=args.steps,
                 repeats=1 if args.quick else args.repeats,
                 builds=1 if args.quick else args.builds,
                 forward_calls=min(args.forward_calls, 5) if args.quick else args.forward_calls,
                 seed=args.seed, quick=args.quick)
    result = run(cfg)
    save("rl", args, markdown(result), asdict(result), MARK, END)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
