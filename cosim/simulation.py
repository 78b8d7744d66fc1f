"""`cosim.Simulation`: the one step loop, driven from outside.

    sim = Simulation.from_config("experiments/configs/lv_55.toml", record=False)
    obs = sim.reset()                       # [households, len(FIELDS)] local observations
    while True:
        result = sim.step(actions)          # actions: [households, len(ACTIONS)] or None
        if result.done:
            break
        obs = result.observations
    sim.close()

`cosim run`, the RL environments, GradMAP's evaluation and the viewer all drive this object;
none of them has a loop of its own. Each step runs the phases of cosim.actors.base.PHASES
over the bus. The observations of a step depend on its price signals (and the previous
step's grid state), so `reset` runs the first step's `signal` and `observe` phases, and
`step` runs the rest of the step and then `signal` and `observe` of the next one: the
observations it returns are those the next actions answer.

Routing is decided once, from what each actor class says it publishes and subscribes to:
in a phase an actor receives the outputs of the actors publishing its topics, from this
step if they published in an earlier phase, else from the previous step. Sources are
ordered by sender name, so delivery is deterministic on every backend. Actions for the
`external` households, and the bids of the `bidder` households, travel to their shards as
one ActionBatch message per shard.

Each step is checked against what each party booked: money (the sum of every party's net
receipts) must be zero, each market's bought energy must equal its sold energy, and the
power flow must satisfy Kirchhoff's current law; the residuals go to the `system` table.
A step whose power flow does not converge stops the run (`on_nonconvergence = "stop"`,
naming the step and the worst bus) or is recorded as such ("record"); either way it is
counted in the manifest and the summary, and its network totals are NaN, never skipped.
"""

from __future__ import annotations

import copy
import datetime as dt
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from agents.households import ACTIONS, FIELDS
from cosim.actors.base import PHASES, PhaseOutput
from cosim.actors.market import MarketOperator
from cosim.backends import (
    ActorDied,
    Key,
    LocalBackend,
    PhaseError,
    PhaseTimeout,
    Plan,
    RayBackend,
)
from cosim.config import ConfigError, ScenarioConfig, load_config, parse_config
from cosim.messages import ActionBatch, GridState
from cosim.records import Recorder, RunFolder, summarize
from cosim.scenario import ProfileData, Scenario, build

FIRST = ("signal", "observe")  # of a step, before its actions are known
REST = ("decide", "clear", "dispatch", "upstream", "physics", "settle")
FETCHED = ("settle", "physics")  # the phases whose outputs the driver reads every step
PLAN_SHARE = 0.25  # of the phase timeout: the steps `run` may hand Ray as one plan


class NotConverged(RuntimeError):
    """A step's power flow did not converge (with `on_nonconvergence = "stop"`)."""

    def __init__(self, step: int, worst_bus: str, scenario: str) -> None:
        self.step, self.worst_bus = step, worst_bus
        super().__init__(f"step {step}: the power flow of scenario {scenario!r} did not "
                         f"converge; worst bus {worst_bus} (lowest voltage of a first-order "
                         "estimate). Set run.on_nonconvergence = \"record\" to record such "
                         "steps and go on")


class HouseholdCosts(NamedTuple):
    """Per household (`[households]`, in household order), the step's cost terms: bill
    (currency: market payment plus the retail energy bill), operating_cost (wear and fuel,
    currency), discomfort_kh (K h outside the comfort band), ev_shortfall_kwh (missing at
    departure), emissions_kg (of its grid imports). An RL reward combines these."""

    bill: np.ndarray
    operating_cost: np.ndarray
    discomfort_kh: np.ndarray
    ev_shortfall_kwh: np.ndarray
    emissions_kg: np.ndarray


@dataclass(frozen=True)
class GridSummary:
    """The step's power flow: convergence, voltage range (p.u.), nodes outside the limits,
    the lowest-voltage bus, losses and substation energy (kWh; NaN if not converged), the
    highest line loading and the lines above their rating."""

    converged: bool
    iterations: int
    v_min_pu: float
    v_max_pu: float
    violations: int
    worst_bus: str
    losses_kwh: float
    substation_kwh: float
    max_line_loading: float  # highest line current over its rating (NaN: none rated)
    overloaded_lines: int  # lines above their rating


@dataclass(frozen=True)
class StepResult:
    """What one `step` did. `observations` are for the next step (None after the last),
    `[households, len(FIELDS)]`; `costs` per household; `markets` per market (in
    `market` id order): price (currency/kWh, NaN where nothing traded), volume, demand and
    supply, and the demand and supply left unmatched for the layer above (kWh); `system` is
    the step's row of the `system` table (balances and totals), over all copies of the
    scenario where there are several (`copies` has each copy's grid). Inside
    `Simulation.run` observations, costs, markets and copies are not fetched (None)."""

    step: int
    time: np.datetime64
    done: bool
    grid: GridSummary
    system: dict[str, float]
    observations: np.ndarray | None = None
    costs: HouseholdCosts | None = None
    markets: dict[str, np.ndarray] | None = None
    copies: GridSummary | None = None  # `grid` per copy: each field a [copies] array


class Snapshot(NamedTuple):
    """`Simulation.snapshot`: the next step, every actor's state, the outputs the next step
    reads, and the steps that did not converge so far."""

    step: int
    states: dict[str, object]
    outputs: dict[Key, object]
    nonconverged: list[int]


def _backend(backend: str | object) -> object:
    if backend == "local":
        return LocalBackend()
    if backend == "ray":
        return RayBackend()
    if isinstance(backend, str):
        raise ValueError(f"backend {backend!r}: choose 'local' or 'ray', or pass one")
    return backend


class Simulation:
    """A scenario's actors on a backend, stepped from outside (module docstring)."""

    def __init__(self, scenario: Scenario, backend: str | object = "local",
                 folder: str | Path | None = None,
                 rebuild: Callable[[int], Scenario] | None = None) -> None:
        """`folder`: where records go (None: no records at all, for training). `rebuild`
        makes the scenario for another seed (`reset(seed)`)."""
        self.backend = _backend(backend)
        self._rebuild = rebuild
        self._started = False
        self._set_scenario(scenario)
        if folder is not None and scenario.copies > 1:
            raise ValueError(f"copies ({scenario.copies}) run without records: no folder")
        self.recorder = None if folder is None else Recorder(folder, scenario)
        self.wall: dict[str, float] = defaultdict(float)
        self._t: int | None = None  # the next step to act in; None before reset
        self._outputs: dict[Key, object] = {}
        self._nonconverged: list[int] = []
        self._initial: dict[str, object] | None = None

    @classmethod
    def from_config(cls, config: str | Path | ScenarioConfig | dict,
                    backend: str | object = "local", record: bool = True,
                    out: str | Path | None = None, profiles: ProfileData | None = None,
                    overrides: dict[str, object] | None = None,
                    copies: int = 1) -> Simulation:
        """A simulation of a scenario file (or a parsed config, or its dict), with dotted
        `overrides` of the file's keys ({"households.policy": "external"}). With `record`
        its records go to `out` (default runs/<name>-<time>); `profiles` replaces the
        scenario's profile source (tests, benchmarks). `copies`: that many independent
        copies of the scenario stepped as one batch (cosim.scenario.build; households
        copy * count + k), for learners' throughput; they run without records."""
        from cosim.profiles import load_profiles

        if not isinstance(copies, int) or copies < 1:
            raise ValueError(f"copies must be a whole number >= 1, got {copies!r}")
        if copies > 1 and record:
            raise ValueError(f"copies ({copies}) run without records: pass record=False")

        if isinstance(config, (str, Path)):
            config = load_config(config, overrides)
        elif overrides:
            raise ValueError("overrides apply to a scenario file; edit a parsed config with "
                             "model_copy")
        elif isinstance(config, dict):
            config = parse_config(config)
        folder = None
        if record:
            folder = Path(out) if out is not None else cls.default_folder(config)

        def make(seed: int) -> Scenario:
            cfg = config.model_copy(update={"run": config.run.model_copy(update={"seed": seed})})
            cache = None if folder is None or seed != config.run.seed else folder / "profiles"
            return build(cfg, profiles if profiles is not None else load_profiles(cfg, cache),
                         copies=copies)

        return cls(make(config.run.seed), backend, folder, rebuild=make)

    @staticmethod
    def default_folder(config: ScenarioConfig) -> Path:
        """runs/<name>-<local time>."""
        return Path("runs") / f"{config.run.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"

    @classmethod
    def resume(cls, folder: str | Path, backend: str | object = "local",
               profiles: ProfileData | None = None) -> Simulation:
        """The run in `folder`, positioned after its last checkpoint; `run()` goes on.
        `profiles`: as for `from_config` (by default the run's own)."""
        from cosim.profiles import load_profiles

        folder = Path(folder)
        manifest = RunFolder(folder).manifest()
        if "config" not in manifest:
            raise ConfigError(f"{folder}: not a run folder (no manifest.json with a config)")
        config = ScenarioConfig.model_validate(manifest["config"])
        if profiles is None:
            profiles = load_profiles(config, cache=folder / "profiles")
        sim = cls(build(config, profiles), backend, folder)
        sim._restore()
        return sim

    # -- the scenario ------------------------------------------------------------------
    def _set_scenario(self, scenario: Scenario) -> None:
        self.scenario, self.config = scenario, scenario.config
        specs = {spec.name: spec for spec in scenario.actors}
        self.names = sorted(specs)
        self.shards = [n for n in self.names if n.startswith("shard")]
        self.market_operators = [n for n in self.names if specs[n].cls is MarketOperator]
        self.participants = {p: [n for n in self.names if p in specs[n].cls.phases()]
                             for p in PHASES}
        publishers: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for name in self.names:
            for phase, topics in specs[name].cls.PUBLISHES.items():
                for topic in topics:
                    publishers[topic].append((name, phase))
        order = {p: i for i, p in enumerate(PHASES)}
        # (actor, phase) -> [(source actor, source phase, from this step?)]
        self.routes: dict[tuple[str, str], list[tuple[str, str, bool]]] = {}
        def reach(a: str, b: str) -> bool:  # actors of different groups do not talk
            ga, gb = specs[a].group, specs[b].group
            return ga is None or gb is None or ga == gb

        for name in self.names:
            for phase, topics in specs[name].cls.SUBSCRIBES.items():
                sources = {(src, src_phase, order[src_phase] < order[phase])
                           for topic in topics for src, src_phase in publishers[topic]
                           if reach(name, src)}
                self.routes[(name, phase)] = sorted(sources)
        # what a step hands to the next: the checkpoint carries these outputs
        self.carried = sorted({(src, phase) for routes in self.routes.values()
                               for src, phase, now in routes if not now})
        policy = scenario.households["policy"]
        self.external = np.flatnonzero(policy == "external")
        self.bidders = np.flatnonzero(policy == "bidder")
        # per shard, the households the driver sets (computed once: `_drive` runs every
        # step) and which of them bid
        driven = np.union1d(self.external, self.bidders)
        self._driven_of = {}
        for spec in scenario.actors:
            if spec.name in self.shards:
                ids = spec.kwargs["homes"].household
                mine = ids[np.isin(ids, driven)]
                if len(mine):
                    self._driven_of[spec.name] = (mine, np.isin(mine, self.bidders))
        self.total = self.config.run.steps
        feed = specs["feed"].kwargs
        self._carbon = np.asarray(feed["carbon_intensity"], dtype=float)

    @property
    def households(self) -> dict[str, np.ndarray]:
        """The static table of households (one row each: connection, market, retailer,
        policy, devices), as written to homes.parquet."""
        return self.scenario.households

    @property
    def n_households(self) -> int:
        return len(self.scenario.households["household"])

    @property
    def copies(self) -> int:
        """Independent copies of the scenario stepped together (`from_config`)."""
        return self.scenario.copies

    @property
    def step_index(self) -> int | None:
        """The next step to act in (None before `reset`)."""
        return self._t

    # -- stepping ------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> np.ndarray:
        """Back to the first step (a new scenario if `seed` differs from the scenario's:
        households, devices and generated profiles are drawn anew). Returns the first
        step's observations, `[households, len(FIELDS)]`."""
        self._reset(seed)
        return self.observations()

    def _reset(self, seed: int | None = None) -> None:
        if seed is not None and seed != self.config.run.seed:
            if self._rebuild is None:
                raise ValueError("this simulation was made from a Scenario: give "
                                 "Simulation(..., rebuild=) to reset it with another seed")
            if self._started:
                self.backend.shutdown()
                self._started = False
            self._set_scenario(self._rebuild(seed))
            if self.recorder is not None:
                self.recorder.scenario = self.scenario
        t0 = time.perf_counter()
        if not self._started:
            self.backend.start(self.scenario.actors, self.n_households)
            self._started = True
            if self.recorder is None:
                self.backend.call_all(self.names, "set_recording", False)
            self._initial = self.backend.call_all(self.names, "state_dict")
        else:
            for name in self.names:
                self.backend.call_all([name], "load_state_dict", self._initial[name])
        self.wall["start_actors"] += time.perf_counter() - t0
        self._t, self._outputs, self._nonconverged = 0, {}, []
        if self.recorder is not None:
            self.recorder.begin(self.backend.name)
        self._phases([(0, FIRST)])

    def _restore(self) -> None:
        """Continue a recorded run after its last checkpoint (`resume`)."""
        saved = self.recorder.folder.load_checkpoint()
        if saved is None:  # it failed before the first checkpoint: start again
            self._reset()
            return
        step, states, carried = saved
        self.backend.start(self.scenario.actors, self.n_households)
        self._started = True
        self._initial = self.backend.call_all(self.names, "state_dict")
        for name in self.names:
            self.backend.call_all([name], "load_state_dict", states[name])
        self._outputs = {(src, phase, step): self.backend.put(src, output)
                         for (src, phase), output in carried.items()}
        manifest = self.recorder.folder.manifest()
        self._nonconverged = [s for s in manifest.get("nonconverged_steps_list", [])
                              if s <= step]
        self._t = step + 1
        if self._t < self.total:  # (a finished run stays as it is)
            self.recorder.resumed(step, self.backend.name)
            self._phases([(self._t, FIRST)])

    def step(self, actions: np.ndarray | None = None, bids: np.ndarray | None = None
             ) -> StepResult:
        """Run one step: the external households act on `actions` (`[households,
        len(ACTIONS)]` raw actions in household order; only the rows of `external`
        households are read), the `bidder` households bid `bids` (`[households]` in
        [0, 1]: where each one's limit price lies between its export (0) and import (1)
        price; only their rows are read), the others on their own policies."""
        return self._step((actions, bids), details=True)

    def snapshot(self) -> Snapshot:
        """Where the run stands between two steps (every actor's state and what the next
        step reads of the last), for `restore`: to try other actions in the same step
        (counterfactuals: a marginal reward, a rollout) and come back. Runs without
        records only: a recorded step cannot be taken back."""
        if self.recorder is not None:
            raise RuntimeError("snapshot: this simulation records; make it with "
                               "record=False to step back")
        if self._t is None:
            raise RuntimeError("call reset() before snapshot()")
        states = self.backend.call_all(self.names, "state_dict")
        # deep copies: a local actor's state may share memory with what it goes on using
        return Snapshot(self._t, copy.deepcopy(states),
                        dict(zip(self._outputs, self.backend.detach(list(
                            self._outputs.values())))), list(self._nonconverged))

    def restore(self, snapshot: Snapshot) -> None:
        """Back to a `snapshot` of this run: the next `step` is its step again and gives
        what it gave then, to the last bit (tests/cosim/test_envs.py)."""
        if self.recorder is not None:
            raise RuntimeError("restore: this simulation records; make it with "
                               "record=False to step back")
        for name in self.names:
            self.backend.call_all([name], "load_state_dict",
                                  copy.deepcopy(snapshot.states[name]))
        self._t, self._outputs = snapshot.step, dict(snapshot.outputs)
        self._nonconverged = list(snapshot.nonconverged)

    def _step(self, actions: tuple[np.ndarray | None, np.ndarray | None] | None,
              details: bool, stop: bool = False, through: int | None = None) -> StepResult:
        """Run the next step, or (`through`, with no driver inputs) the steps up to
        `through` as one plan: on Ray that is one round trip to the hosts instead of one per
        step. Returns the last one's result."""
        if self._t is None:
            raise RuntimeError("call reset() before step()")
        if self._t >= self.total:
            raise RuntimeError(f"the scenario has {self.total} steps and all have run; call "
                               "reset() to start again")
        t, t0 = self._t, time.perf_counter()
        u = t if through is None else through  # the plan's last step
        run = self.config.run
        last = u == self.total - 1
        # `stop`: the caller stops after this step; a checkpoint lets `--resume` go on
        checkpoint = (u + 1) % run.checkpoint_every == 0 or last or stop
        try:
            self._drive(t, *(actions or (None, None)))
            plan = [(t, REST)] + [(s, p) for s in range(t + 1, u + 1) for p in (FIRST, REST)]
            try:
                self._phases(plan + ([] if checkpoint else [(u + 1, FIRST)]))
            except PhaseError as exc:
                if not isinstance(exc, (ActorDied, PhaseTimeout)) and exc.step > t:
                    self._conclude_steps(t, exc.step - 1)  # the plan's steps that ran
                raise
            row, state = self._conclude_steps(t, u)
            if checkpoint:
                if self.recorder is not None:
                    self.recorder.flush(u, self.backend, self.names, self._carry(u),
                                        final=last)
                if not last:
                    self._phases([(u + 1, FIRST)])
        except (ActorDied, PhaseTimeout) as exc:
            # the dead (or still blocked) actor's buffered records cannot be had: keep what
            # the last checkpoint holds; a resume recomputes the rest
            self._fail(exc, max(exc.step, self._t), flush=False)
            raise
        except NotConverged as exc:
            self._fail(exc, exc.step, flush=True, through=exc.step)
            raise
        except Exception as exc:
            self._fail(exc, self._t, flush=True, through=self._t - 1)
            raise
        for key in [k for k in self._outputs if k[2] < u]:
            del self._outputs[key]
        done = self._t == self.total
        self.wall["total"] += time.perf_counter() - t0
        if done:
            self._finish()
        return StepResult(
            step=u, time=self.scenario.time[u], done=done, grid=_grid_summary(state, row),
            system=row, observations=None if done or not details else self.observations(),
            costs=self.costs() if details else None,
            markets=self._markets(u) if details else None,
            copies=_copy_summaries(state, dt_h=run.dt_s / 3600.0) if details else None)

    def _conclude_steps(self, first: int, last: int) -> tuple[dict[str, float], GridState]:
        """Record the `system` rows of steps `first` to `last`, which have run; the step
        after the last that concluded becomes the next (`self._t`; stepping sets it here). Raises
        NotConverged for a step whose power flow did not converge, when the run stops on
        that. Returns the last step's row and grid state."""
        for t, (row, state) in enumerate(self._system_rows(first, last), first):
            if self.recorder is not None:
                self.recorder.add(row)
            if not state.converged:
                self._nonconverged.append(t)
                if self.config.run.on_nonconvergence == "stop":
                    raise NotConverged(t, state.worst_bus, self.config.run.name)
            self._t = t + 1
        return row, state

    def run(self, steps: int | None = None, progress: bool = True,
            after_step: Callable[[Simulation, int], None] | None = None) -> dict:
        """Step through the scenario (from its start, or on from where a resumed run
        stands) on the households' own policies, up to `steps` steps in all; returns the
        summary. `after_step(sim, step)` is called after each step (tests use it to kill an
        actor). The run is recorded as "partial" when it stops before the last step.

        A backend that runs plans away from the driver (Ray) gets several steps as one plan
        (up to the next checkpoint, no more than took PLAN_SHARE of the phase timeout so
        far: the backend's deadline is a plan's, and a late plan must mean a hang), unless
        `after_step` is given or households are driven."""
        if self._t is None:
            self._reset()
        total = self.total if steps is None else min(steps, self.total)
        every = self.config.run.checkpoint_every
        batch = getattr(self.backend, "batches_steps", False) and after_step is None and \
            not self._driven_of
        fits = PLAN_SHARE * self.config.run.phase_timeout_s  # seconds of steps in a plan
        slowest = None  # the longest a step has taken (s; its plan's mean)
        bar = tqdm(total=total, desc=self.config.run.name, unit="step", disable=not progress,
                   initial=self._t)
        try:
            while self._t < total:
                step, t0 = self._t, time.perf_counter()
                through = step
                if batch and slowest is not None:
                    through = min((step // every + 1) * every, total,
                                  step + max(1, int(fits / max(slowest, 1e-9)))) - 1
                self._step(None, details=False, stop=through == total - 1, through=through)
                took = (time.perf_counter() - t0) / (through + 1 - step)
                slowest = took if slowest is None else max(slowest, took)
                bar.update(through + 1 - step)
                if after_step is not None:
                    after_step(self, step)
        finally:
            bar.close()
        return self.close()

    def close(self) -> dict | None:
        """Stop the actors; the run folder's manifest says how far it got. Returns the
        summary (None without records)."""
        summary = None
        if self.recorder is not None and self._t is not None:
            if self._t < self.total and self.recorder.folder.manifest().get(
                    "status") == "running":
                self.recorder.flush(self._t - 1, self.backend, self.names, None, final=True)
                summary = self._conclude("partial")
            else:
                summary = self.recorder.folder.manifest().get("summary")
            self.recorder.close()
        if self._started:
            self.backend.shutdown()
            self._started = False
        return summary

    # -- what the driver reads -------------------------------------------------------------
    def observations(self) -> np.ndarray:
        """Each household's local observation for the step about to be acted in,
        `[households, len(FIELDS)]` in household order."""
        out = np.empty((self.n_households, len(FIELDS)))
        for ids, obs in self.backend.call_all(self.shards, "observation").values():
            out[ids] = obs
        return out

    def costs(self) -> HouseholdCosts:
        """The cost terms of the last settled step, per household (HouseholdCosts)."""
        columns = {name: np.empty(self.n_households) for name in HouseholdCosts._fields}
        for ids, values in self.backend.call_all(self.shards, "costs").values():
            for name, column in columns.items():
                column[ids] = values[name]
        return HouseholdCosts(**columns)

    def _markets(self, t: int) -> dict[str, np.ndarray]:
        """Every market's outcome of the step just run, in market order (asked of the
        operators: their outputs also hold every household's clearing)."""
        results = [r for r in self.backend.call_all(self.market_operators, "result").values()
                   if r is not None]
        market = np.concatenate([r.market for r in results])
        order = np.argsort(market, kind="stable")
        return {name: np.concatenate([getattr(r, name) for r in results])[order]
                for name in ("market", "price", "volume_kwh", "demand_kwh", "supply_kwh",
                             "unmatched_demand_kwh", "unmatched_supply_kwh")}

    # -- internals ---------------------------------------------------------------------------
    def _phases(self, steps: list[tuple[int, tuple[str, ...]]]) -> None:
        """Run the phases of `steps` ((step, phases) in order) as one plan."""
        plan: Plan = []
        made = set(self._outputs)  # outputs that exist when the plan gets to them
        for step, phases in steps:
            for phase in phases:
                calls = []
                for name in self.participants[phase]:
                    keys = [(src, src_phase, step if now else step - 1)
                            for src, src_phase, now in self.routes.get((name, phase), [])]
                    keys.append((f"driver/{name}", phase, step))
                    # a previous step's output is missing only before the first step
                    calls.append((name, [k for k in keys if k in made or (
                        k[2] == step and not k[0].startswith("driver/"))]))
                plan.append((step, phase, calls))
                made |= {(name, phase, step) for name in self.participants[phase]}
        logged = self.recorder is not None and self.config.run.record_messages
        self.backend.run(plan, self._outputs, self.config.run.phase_timeout_s, self.wall,
                         None if logged else FETCHED)
        if logged:
            keys = sorted(k for k in self._outputs if not k[0].startswith("driver/")
                          and any(k[2] == s and k[1] in p for s, p in steps))
            outputs = self.backend.fetch([self._outputs[k] for k in keys])
            self.recorder.add_messages([(k[2], k[1], m) for k, out in zip(keys, outputs)
                                        for m in out.messages])

    def _drive(self, t: int, actions: np.ndarray | None, bids: np.ndarray | None) -> None:
        """Hand the external households' actions and the bidders' bids to their shards."""
        actions = self._driven(t, actions, self.external, (self.n_households, len(ACTIONS)),
                               "external", "actions", f"households x {ACTIONS}")
        bids = self._driven(t, bids, self.bidders, (self.n_households,), "bidder", "bids",
                            "one per household, in [0, 1]")
        if bids is not None:
            bad = (bids[self.bidders] < 0) | (bids[self.bidders] > 1)
            if bad.any():
                raise ValueError(f"step {t}: household {self.bidders[bad][0]}: bid "
                                 f"{bids[self.bidders][bad][0]} is outside [0, 1]")
        for shard, (mine, bidding) in self._driven_of.items():
            action = (actions[mine] if actions is not None
                      else np.zeros((len(mine), len(ACTIONS))))
            bid = np.where(bidding, bids[mine] if bids is not None else 0.0, np.nan)
            batch = ActionBatch(t, "driver", recipient=shard, household=mine, action=action,
                                bid=bid)
            self._outputs[(f"driver/{shard}", "decide", t)] = self.backend.put(
                f"driver/{shard}", PhaseOutput(messages=[batch]))

    @staticmethod
    def _driven(t: int, values: np.ndarray | None, rows: np.ndarray, want: tuple[int, ...],
                policy: str, what: str, layout: str) -> np.ndarray | None:
        """`values` checked for the households of `policy` (`rows`): shape and finiteness."""
        if len(rows) == 0:
            return None
        if values is None:
            raise ValueError(f"step {t}: {len(rows)} households have policy \"{policy}\": "
                             f"pass their {what} to step()")
        values = np.asarray(values, dtype=float)
        if values.shape != want:
            raise ValueError(f"step {t}: {what} must be {want} ({layout}), got "
                             f"{values.shape}")
        bad = ~np.isfinite(values[rows].reshape(len(rows), -1)).all(1)
        if bad.any():
            raise ValueError(f"step {t}: household {rows[bad][0]}: {what} are not finite")
        return values

    def _system_rows(self, first: int, last: int
                     ) -> Iterator[tuple[dict[str, float], GridState]]:
        """The `system` table's rows of steps `first` to `last` (balances, totals and the
        grid's summary), with each step's grid state; their outputs fetched at once."""
        names = self.participants["settle"]
        keys = [(n, "settle", t) for t in range(first, last + 1) for n in names]
        keys += [("grid", "physics", t) for t in range(first, last + 1)]
        outputs = self.backend.fetch([self._outputs[k] for k in keys])
        steps = last - first + 1
        settled, grids = outputs[:-steps], outputs[-steps:]
        for k, grid in enumerate(grids):
            yield self._system_row(first + k, settled[k * len(names):(k + 1) * len(names)],
                                   grid)

    def _system_row(self, t: int, settled: list[PhaseOutput], grid: PhaseOutput
                    ) -> tuple[dict[str, float], GridState]:
        """One row of the `system` table: balances, totals and the grid's summary."""
        state = grid.messages[0]
        ledger: dict[str, float] = defaultdict(float)
        totals: dict[str, float] = defaultdict(float)
        checks: dict[str, float] = defaultdict(float)
        for out in settled:
            for key, value in out.ledger.items():
                ledger[key] += value
            for key, value in out.totals.items():
                totals[key] += value
            for key, value in out.checks.items():
                checks[key] = max(checks[key], value)
        dt_h = self.config.run.dt_s / 3600.0
        carbon = self._carbon[t]
        row = {
            "step": t, "money_balance": float(sum(ledger.values())),
            "market_imbalance_kwh": checks.get("market_imbalance_kwh", 0.0),
            "market_money_imbalance": checks.get("market_money_imbalance", 0.0),
            "kcl_mismatch_kw": state.balance_kw, "converged": state.converged,
            "iterations": state.iterations, "substation_kwh": state.substation_kw * dt_h,
            "losses_kwh": state.losses_kw * dt_h, "v_min_pu": state.v_min_pu,
            "v_max_pu": state.v_max_pu, "violations": state.violations,
            "emissions_kg": float(np.maximum(state.copy_substation_kw * dt_h, 0.0).sum())
            * carbon if state.converged else float("nan"),
            **totals, **{f"money_{party}": value for party, value in sorted(ledger.items())},
        }
        return row, state

    def _carry(self, t: int) -> dict[tuple[str, str], object]:
        keys = [(src, phase, t) for src, phase in self.carried if (src, phase, t) in
                self._outputs]
        values = self.backend.fetch([self._outputs[k] for k in keys])
        return {(src, phase): value for (src, phase, _), value in zip(keys, values)}

    def _finish(self) -> None:
        """The last step ran: wait for the records, write the summary and the status."""
        if self.recorder is not None:
            self._conclude("complete")

    def _conclude(self, status: str) -> dict:
        """Wait for the records; write the summary and `status` (or "nonconverged" if any
        step's power flow did not converge) to the manifest; return the summary."""
        # from the rows in memory while the writer finishes (after a resume, from disk)
        summary = summarize(self.recorder.system(), self.n_households,
                            self.wall.get("total", 0.0))
        self.recorder.drain()
        self.recorder.folder.update_manifest(
            status="nonconverged" if self._nonconverged else status, steps_done=self._t,
            steps_recorded=self.recorder.flushed + 1, summary=summary,
            wall_s=dict(self.wall) | dict(self.recorder.wall),
            nonconverged_steps=len(self._nonconverged),
            nonconverged_steps_list=self._nonconverged)
        return summary

    def _fail(self, exc: Exception, t: int, flush: bool, through: int = -1) -> None:
        """Keep every completed step on disk (through step `through`) and say why the run
        stopped."""
        if self.recorder is None:
            return
        if flush:
            try:
                self.recorder.flush(through, self.backend, self.names, None, final=True)
            finally:
                self.recorder.drain()
        else:
            self.recorder.drain()
        self.recorder.folder.update_manifest(
            status="failed", error=str(exc), failed_step=t,
            steps_recorded=self.recorder.flushed + 1,
            traceback=getattr(exc, "detail", ""), nonconverged_steps=len(self._nonconverged),
            nonconverged_steps_list=self._nonconverged)


def _grid_summary(state: GridState, row: dict[str, float]) -> GridSummary:
    return GridSummary(state.converged, state.iterations, state.v_min_pu, state.v_max_pu,
                       state.violations, state.worst_bus, row["losses_kwh"],
                       row["substation_kwh"], state.max_loading, state.overloaded_lines)


def _copy_summaries(state: GridState, dt_h: float) -> GridSummary:
    """The step's grid per copy of the scenario: GridSummary of [copies] arrays (energy
    NaN where a copy did not converge; worst_bus and iterations are the step's)."""
    ok = state.copy_converged
    return GridSummary(ok, np.full(len(ok), state.iterations), state.copy_v_min_pu,
                       state.copy_v_max_pu, state.copy_violations,
                       np.full(len(ok), state.worst_bus),
                       np.where(ok, state.copy_losses_kw * dt_h, np.nan),
                       np.where(ok, state.copy_substation_kw * dt_h, np.nan),
                       state.copy_max_loading, state.copy_overloaded_lines)


__all__ = ["GridSummary", "HouseholdCosts", "NotConverged", "PhaseError", "Simulation",
           "StepResult"]
