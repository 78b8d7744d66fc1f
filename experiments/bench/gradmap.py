"""Benchmark: GradMAP against SSL and IPPO, wall time to one target (issue 12, item 8).

The issue's targets, on 2 CPU cores: GradMAP reaches the target (mean voltage violation
below 1e-4 p.u. and cost within 2% of the best run) at least 5x faster than SSL, and with
1,000 agents within 15 minutes. IPPO (`--methods ... ippo`) optimises its own reward (each
household's bill, wear and discomfort plus its shares of the grid's penalties, IPPO_REWARD)
over RL episodes of the co-simulation; its bank is scored on the same target as the others,
which is the paper's comparison ("substantially better than MARL").

What is measured, per agent count (100 and 1,000 agents on the IEEE 123 case,
experiments/configs/gradmap_ieee123_1000.toml with households.count overridden; `--quick`:
the 20-agent IEEE 13 case):

1. The problem is built once, with `days` (default 6) days of inputs, the first
   `train_days` (4) for training and the rest held out - fewer than GradMAP's own defaults
   (12 and 8) to keep building and evaluating cheap. With `days_per_batch` = 4 = train_days
   every iteration's batch is all the training days, so the training table's cost and
   violation are the exact training objective of the policies at that iteration's start
   (not a random batch).
2. GradMAP and SSL train with `GradMAPConfig`'s defaults and the same seed (the
   hyperparameters are those of experiments/gradmap/train.py, given in the table's
   heading) for a wall-time budget:
   `train(..., budget_s=)` stops before an iteration that, at the mean pace so far, would
   end past the budget (at least 2 iterations).
   IPPO: `experiments.rl.train.train` with `TrainConfig(algo="ippo")` defaults, on
   co-simulation episodes that cover the training days in a row (with the rollout's own
   profiles: the same inputs), for the same budget; after every iteration its bank is
   rolled out on the training days like the others' (not timed), which gives its table.
3. Time to target, from the training table (`time_to_target`): the cost and mean violation
   averaged over a trailing window of `window` iterations (default 1: with the whole
   training set in every batch there is no noise to smooth, and a window only adds lag);
   the target is smoothed mean violation < 1e-4 p.u. and smoothed cost within 2% of the
   lowest smoothed cost reached by ANY method at that agent count among its rows within the
   violation target (so the best run is a feasible one); the time is `wall_s`
   of the first row meeting both (from the training loop's start: the initial scale
   rollout is not counted; a row's wall time includes its own gradient and step, so it is
   slightly late). Not reached within the budget: reported so, and the speed-up as a lower
   bound (SSL's whole training time / GradMAP's time).
4. The final banks, and "no control" (every raw action 0) as the reference, are evaluated
   (a) with `rollout` + `terms` on the training days and on the held-out days (cost per
   day with wholesale energy, wear, fuel and 0.5 per K h discomfort; mean voltage violation
   per node-phase and step; the highest mean line overload), and (b) in the co-simulation
   on the first held-out day (run.start moved past the training days, every household on
   the saved bank, or "external" with zero actions for no control): households' bills plus
   operating cost, summed over households and steps (retail, not the wholesale cost of (a),
   and without discomfort, given in K h), node-steps outside the limits, the highest line
   loading and the power flows that did not converge. The co-simulation draws its own
   profiles for that day, so (b) is a second out-of-sample check, not a copy of (a).

    cosim bench gradmap [--budget-100 240] [--budget-1000 600] [--quick]
                        [--methods gradmap ssl ippo] [--update-benchmarks MD]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from agents.households import ACTIONS, FIELDS
from agents.policies.bank import PolicyBank
from cosim.config import load_config
from cosim.profiles import load_profiles
from experiments.bench.common import add_output_arguments, machine_info, save
from experiments.gradmap.problem import Problem, rollout
from experiments.gradmap.train import GradMAPConfig, terms, train

MARK = "<!-- bench:gradmap -->"
END = "<!-- /bench:gradmap -->"
ROOT = Path(__file__).resolve().parents[2]
CONFIG_123 = ROOT / "experiments" / "configs" / "gradmap_ieee123_1000.toml"
CONFIG_13 = ROOT / "experiments" / "configs" / "gradmap_ieee13_20.toml"
VIOLATION_TARGET = 1e-4  # p.u., mean voltage violation
COST_TOLERANCE = 0.02  # within 2% of the best run
SPEEDUP_TARGET = 5.0
MINUTES_TARGET = 15.0
DISCOMFORT_COST = GradMAPConfig().discomfort_cost


def time_to_target(tables: dict[str, pd.DataFrame], window: int = 1,
                   violation: float = VIOLATION_TARGET,
                   tolerance: float = COST_TOLERANCE) -> tuple[float, dict[str, float | None]]:
    """(the best smoothed cost over every method's rows within the violation target,
    {method: seconds to the target or None}).
    Each table needs `cost`, `mean_violation_pu` and `wall_s` in iteration order; the
    smoothing is a trailing mean over `window` rows (fewer at the start)."""
    smooth = {m: (t["cost"].rolling(window, min_periods=1).mean().to_numpy(),
                  t["mean_violation_pu"].rolling(window, min_periods=1).mean().to_numpy(),
                  t["wall_s"].to_numpy()) for m, t in tables.items()}
    # the best run: the lowest cost among rows within the violation target (any row if none)
    met = [c[v < violation] for c, v, _ in smooth.values()]
    pool = [c for c in met if len(c)] or [c for c, _, _ in smooth.values()]
    best = min(float(np.min(c)) for c in pool)
    limit = best + tolerance * abs(best)
    times: dict[str, float | None] = {}
    for m, (cost, viol, wall) in smooth.items():
        hit = np.flatnonzero((cost <= limit) & (viol < violation))
        times[m] = float(wall[hit[0]]) if len(hit) else None
    return best, times


MAX_ITERATIONS = 100_000  # the budget ends training long before


@dataclass
class Evaluation:
    train_cost: float = math.nan  # currency/day, rollout on the training days
    train_violation_pu: float = math.nan
    held_cost: float = math.nan  # rollout on the held-out days
    held_violation_pu: float = math.nan
    held_max_overload: float = math.nan
    cosim_cost: float = math.nan  # bills + operating cost, one held-out day, all households
    cosim_discomfort_kh: float = math.nan
    cosim_violations: int = -1  # node-steps outside the limits
    cosim_max_loading: float = math.nan
    cosim_not_converged: int = -1
    cosim_s: float = math.nan


@dataclass
class Run:
    method: str
    budget_s: float = math.nan  # its own training budget (SSL's may be scaled)
    iterations: int = 0
    seconds_per_iteration: float = 0.0  # mean over the run
    train_s: float = 0.0  # wall_s of the last row
    time_to_target_s: float | None = None
    final_delta: float = math.nan
    mean_policy_steps: float = math.nan
    lambda_max: float = math.nan
    skipped: int = 0
    evaluation: Evaluation = field(default_factory=Evaluation)
    curve: list[dict] = field(default_factory=list)  # iteration, wall_s, cost, violation


@dataclass
class Case:
    agents: int
    feeder: str
    budget_s: float
    build_s: float = 0.0
    best_cost: float = math.nan
    idle: Evaluation = field(default_factory=Evaluation)
    runs: list[Run] = field(default_factory=list)


def _config(agents: int, quick: bool, start: dt.datetime | None = None):
    over: dict[str, object] = {} if start is None else {"run.start": start}
    if quick:
        return load_config(CONFIG_13, over)
    # fewer agents stand for more homes each, so that every count loads the feeder as the
    # 1,000 of the shipped case do (the same physical problem, coarser control)
    return load_config(CONFIG_123, {**over, "households.count": agents,
                                    "households.size_factor": 1000 / agents,
                                    "households.shard_size": agents,
                                    "markets.households_per_market": agents})


def _idle(obs: torch.Tensor) -> torch.Tensor:
    return torch.zeros(*obs.shape[:-1], len(ACTIONS), dtype=obs.dtype, device=obs.device)


@torch.no_grad()
def _rollout_terms(problem: Problem, policy, days: torch.Tensor) -> tuple[float, float, float]:
    t = terms(problem, rollout(problem, policy, days), DISCOMFORT_COST, days)
    overload = float(t.line.max()) if t.line.numel() else 0.0
    return float(t.cost), float(t.node.mean()), overload


def _cosim(agents: int, quick: bool, problem: Problem, bank_path: Path | None,
           ev: Evaluation) -> None:
    """One held-out day in the co-simulation (bank, or no control with bank_path None)."""
    from cosim.simulation import Simulation

    cfg = problem.config
    start = cfg.run.start + dt.timedelta(seconds=problem.train_days * cfg.run.steps
                                         * cfg.run.dt_s)
    config = _config(agents, quick, start)
    config = (config.everyone("bank", bank_path) if bank_path is not None
              else config.everyone("external"))
    t0 = time.perf_counter()
    sim = Simulation.from_config(config, record=False)
    sim.reset()
    cost = disc = 0.0
    viol = bad = 0
    loading = 0.0
    zero = np.zeros((config.households.count, len(ACTIONS)))
    try:
        for _ in range(config.run.steps):
            r = sim.step(zero if bank_path is None else None)
            cost += float(np.sum(r.costs.bill) + np.sum(r.costs.operating_cost))
            disc += float(np.sum(r.costs.discomfort_kh))
            viol += int(r.grid.violations)
            bad += int(not r.grid.converged)
            if math.isfinite(r.grid.max_line_loading):
                loading = max(loading, float(r.grid.max_line_loading))
            if r.done:
                break
    finally:
        sim.close()
    ev.cosim_cost, ev.cosim_discomfort_kh, ev.cosim_violations = cost, disc, viol
    ev.cosim_max_loading, ev.cosim_not_converged = loading, bad
    ev.cosim_s = time.perf_counter() - t0


def _evaluate(problem: Problem, policy, agents: int, quick: bool, bank_path: Path | None,
              cosim: bool) -> Evaluation:
    ev = Evaluation()
    days = problem.load_kw.shape[0]
    ev.train_cost, ev.train_violation_pu, _ = _rollout_terms(
        problem, policy, torch.arange(problem.train_days, device=problem.device))
    ev.held_cost, ev.held_violation_pu, ev.held_max_overload = _rollout_terms(
        problem, policy, torch.arange(problem.train_days, days, device=problem.device))
    if cosim:
        _cosim(agents, quick, problem, bank_path, ev)
    return ev


def measure(agents: int, budget_s: float, methods: tuple[str, ...] = ("gradmap", "ssl"),
            quick: bool = False, days: int = 6, train_days: int = 4, seed: int = 0,
            window: int = 1, cosim: bool = True, device: str = "cpu",
            ssl_scale: float = 1.0, log=print) -> Case:
    """Build the case, train every method for about `budget_s` seconds (SSL for
    `ssl_scale` times that), find the times to target and evaluate the final banks (module
    docstring)."""
    t0 = time.perf_counter()
    config = _config(agents, quick)
    # one draw of the profiles for every day, shared by the rollout and IPPO's episodes
    profiles = load_profiles(config.model_copy(update={"run": config.run.model_copy(
        update={"steps": config.run.steps * days})}))
    problem = Problem.build(config, days=days, train_days=train_days,
                            profiles=profiles).to(device)
    case = Case(agents=problem.n_agents, feeder=config.grid.feeder, budget_s=budget_s,
                build_s=time.perf_counter() - t0)
    log(f"{case.agents} agents: built in {case.build_s:.1f} s")
    case.idle = _evaluate(problem, _idle, agents, quick, None, cosim)
    tables: dict[str, pd.DataFrame] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            budget = budget_s * (ssl_scale if method == "ssl" else 1.0)
            log(f"{case.agents} agents, {method}: training for {budget:.0f} s")
            path = Path(tmp) / f"{method}.pt"
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if method == "ippo":
                    table, bank = _train_ippo(problem, config, profiles, budget, seed,
                                              Path(tmp) / "ippo")
                else:
                    outcome = train(problem, GradMAPConfig(
                        method=method, iterations=MAX_ITERATIONS, seed=seed), progress=False,
                        budget_s=budget)
                    table, bank = outcome.training, outcome.bank
            for w in caught:
                if "RuntimeWarning" not in w.category.__name__:
                    log(f"  warning: {w.message}")
            tables[method] = table
            bank.save(path, FIELDS, ACTIONS)
            iterations = len(table)
            last = table.iloc[-1]
            run = Run(method=method, budget_s=budget, iterations=iterations,
                      seconds_per_iteration=float(last.wall_s) / iterations,
                      train_s=float(last.wall_s), final_delta=float(last.get("delta", math.nan)),
                      mean_policy_steps=float(table.policy_steps.mean()),
                      lambda_max=float(last.get("lambda_max", math.nan)),
                      skipped=int(table.get("skipped", pd.Series([0])).sum()),
                      curve=table.reindex(columns=["iteration", "wall_s", "cost",
                                                   "mean_violation_pu", "delta",
                                                   "policy_steps", "lambda_max"]
                                          ).to_dict("records"))
            run.evaluation = _evaluate(problem, bank, agents, quick, path, cosim)
            log(f"  trained {run.train_s:.0f} s; final train cost "
                f"{run.evaluation.train_cost:.1f}, held-out {run.evaluation.held_cost:.1f}")
            case.runs.append(run)
    case.best_cost, times = time_to_target(tables, window=window)
    for run in case.runs:
        run.time_to_target_s = times[run.method]
    return case


# IPPO's reward (choice): its own bill, wear, fuel and discomfort at GradMAP's price, plus
# the grid through the environment's reward terms - its own connection's voltage outside the
# limits, and equal shares of the losses (at the wholesale price), of the node-steps outside
# the limits and of the overloaded lines. Not tuned. Keyword arguments of
# `cosim.envs.RewardConfig`, built where IPPO runs: the RL stack (Ray, RLlib) is imported
# only then, so GradMAP and SSL need neither.
IPPO_REWARD = dict(discomfort_cost=DISCOMFORT_COST, voltage_penalty=100.0,
                   losses_share=1.0, violation_penalty=1.0, overload_penalty=10.0)


def _train_ippo(problem: Problem, config, profiles, budget_s: float, seed: int,
                out: Path) -> tuple[pd.DataFrame, PolicyBank]:
    """RLlib IPPO (`cosim train --algo ippo`, its defaults) on episodes of the co-simulation
    covering the training days in a row, with the rollout's own profiles; after every
    iteration the bank is evaluated like GradMAP's on the training days (not timed).
    Returns the training table (cost, mean_violation_pu, cumulative wall_s, one policy step
    per iteration) and the final bank."""
    import ray

    from cosim.envs import RewardConfig
    from experiments.rl.train import TrainConfig
    from experiments.rl.train import train as train_rl

    episode = config.model_copy(update={"run": config.run.model_copy(
        update={"steps": config.run.steps * problem.train_days})})
    days = torch.arange(problem.train_days, device=problem.device)

    def evaluate(_: int, bank: PolicyBank) -> dict[str, float]:
        cost, violation, _ = _rollout_terms(problem, bank.to(problem.device), days)
        return {"cost": cost, "mean_violation_pu": violation}

    started = not ray.is_initialized()
    if started:  # a fresh local instance, never someone else's cluster
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    try:
        outcome = train_rl(episode, TrainConfig(algo="ippo", iterations=MAX_ITERATIONS,
                                                seed=seed, checkpoint_every=MAX_ITERATIONS),
                           out, RewardConfig(**IPPO_REWARD), profiles=profiles, progress=False,
                           budget_s=budget_s, on_iteration=evaluate)
    finally:
        if started:
            ray.shutdown()
    table = outcome.training.assign(wall_s=outcome.training.wall_s.cumsum(), policy_steps=1)
    return table, PolicyBank.load(outcome.bank)


@dataclass
class Result:
    machine: dict[str, str]
    command: str
    window: int
    seed: int
    days: int
    train_days: int
    device: str = "cpu"
    ssl_scale: float = 1.0  # SSL's budget over the others'
    total_s: float = 0.0
    cases: list[Case] = field(default_factory=list)
    # the machine's 1, 5 and 15 min load averages at the end: other work on the cores
    # slows every method, not always alike
    load_average: list[float] | None = None


def _t(x: float | None) -> str:
    return "not reached" if x is None else f"{x:,.0f}"


def speedup(case: Case, peer: str = "ssl") -> tuple[str, float | None, bool]:
    """(text, value, exact) of the peer's (ssl, ippo) time to target over GradMAP's."""
    runs = {r.method: r for r in case.runs}
    if "gradmap" not in runs or peer not in runs:
        return "-", None, False
    g, s = runs["gradmap"], runs[peer]
    if g.time_to_target_s is None:
        return "GradMAP not reached", None, False
    gt = max(g.time_to_target_s, 1e-9)
    if s.time_to_target_s is None:
        return (f">= {s.train_s / gt:.1f}x ({PEERS[peer]} not reached)", s.train_s / gt,
                False)
    return f"{s.time_to_target_s / gt:.1f}x", s.time_to_target_s / gt, True


PEERS = {"ssl": "SSL", "ippo": "IPPO"}


def marks(device: str) -> tuple[str, str]:
    """The BENCHMARKS.md markers of a device's section (the CPU one holds the heading)."""
    if device == "cpu":
        return MARK, END
    return f"<!-- bench:gradmap-{device} -->", f"<!-- /bench:gradmap-{device} -->"


def _settings(cfg: GradMAPConfig = GradMAPConfig()) -> str:
    """The shared hyperparameters in words, from the dataclass itself."""
    return (f"lr {cfg.lr:g}, hidden {'x'.join(map(str, cfg.hidden))}, {cfg.policy_dtype} "
            f"policies, dual_lr {cfg.dual_lr:g}, multipliers capped at {cfg.lambda_max:g}; "
            f"GradMAP inner_steps {cfg.inner_steps} on {cfg.inner_fraction:g} of the rows "
            f"each, eta {cfg.eta:g}, delta {cfg.delta:g} in {cfg.delta_bounds[0]:g}-"
            f"{cfg.delta_bounds[1]:g}, a box around every action")


def markdown(result: Result) -> str:
    m = result.machine
    start, end = marks(result.device)
    head = [
        "## GradMAP against SSL and IPPO: wall time to the same target",
        "",
        "Target from the issue (12, deliverable 8): mean voltage violation below 1e-4 p.u. and "
        "cost within 2% of the best run; on 2 CPU cores GradMAP at least "
        f"{SPEEDUP_TARGET:.0f}x faster than SSL, and 1,000 agents at the target within "
        f"{MINUTES_TARGET:.0f} minutes.",
        ""]
    lines = [start, *(head if result.device == "cpu" else []),
        f"### GradMAP, SSL and IPPO, {result.device} ({m['date']})",
        "",
        f"Machine: {m.get('gpu', '') + ' GPU, ' if 'gpu' in m else ''}{m['cpu']}; "
        f"Python {m['python']}; torch {m['torch']} "
        f"({m['torch_threads']} threads). Command: `{result.command}` "
        f"({result.total_s / 60:.1f} min in all"
        + ("" if result.load_average is None else
           "; load average near the end " + ", ".join(f"{x:.2f}" for x in result.load_average))
        + f"). Problem: {result.days} days, the first "
        f"{result.train_days} for training (every batch is all of them), the rest held out; "
        f"GradMAPConfig defaults for GradMAP and SSL ({_settings()}); "
        "IPPO: `cosim train --algo ippo` with its "
        "defaults (RLlib PPO, lr 3e-4, 4 epochs of 4 minibatches, one episode per "
        "iteration) on co-simulation episodes covering the training days in a row, with the "
        "rollout's own profiles, rewarded with its own bill, wear, fuel and discomfort "
        "(0.5 per K h) plus 100 per p.u. its own voltage leaves the limits and equal shares "
        "of the losses at the wholesale price, of 1 per node-step outside the limits and of "
        "10 per overloaded line (not tuned); its bank is evaluated after every iteration "
        "exactly as the others' (that time not counted). Seed "
        f"{result.seed}; at 100 agents each agent's devices and loads are 10 homes' worth "
        "(`households.size_factor`), so both counts load the feeder alike. Each method "
        "trains until the next iteration would end past its budget (s / iter: the run's "
        "mean)" + (f"; SSL's budget is {result.ssl_scale:g} times the others', so that a "
                   "target it does not reach within it bounds the speed-up from below by "
                   "more than the others' budget would" if result.ssl_scale != 1 else "")
        + ". Time to target: wall time from the start of the training loop to the first "
        "iteration whose training cost and mean violation (trailing mean over "
        f"{result.window} iteration{'s' if result.window != 1 else ''}) meet the target, "
        "the best cost being the lowest any method reached within the violation target at "
        "that agent count. Training: "
        "the final bank on the training days; held out: on the other days (rollout; cost per "
        "day with wholesale energy, wear, fuel and 0.5 per K h discomfort; violation = mean "
        "over node-phases and steps, p.u.; overload = highest mean line overload). "
        "Co-simulation: the first held-out day in `Simulation` with every household on the "
        "bank (no control: zero actions), bills + operating cost summed over households "
        "(retail prices, so not the same money as the rollout's cost), node-steps outside "
        "0.95-1.05 p.u., highest line loading.",
        "",
        "| agents | method | budget s | iterations | s / iter | trained s | time to target s "
        "| x SSL | x IPPO | train cost | train viol. | held-out cost | held-out viol. "
        "| held-out overload |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in result.cases:
        text = " | ".join(speedup(case, peer)[0] for peer in PEERS)
        rows = [("no control", None, case.idle)] + [(r.method, r, r.evaluation)
                                                    for r in case.runs]
        for name, run, ev in rows:
            lines.append(
                f"| {case.agents:,} | {name} | "
                + (f"{run.budget_s if math.isfinite(run.budget_s) else case.budget_s:.0f} | "
                   f"{run.iterations} | {run.seconds_per_iteration:.2f} "
                   f"| {run.train_s:.0f} | {_t(run.time_to_target_s)} | "
                   f"{text if run.method == 'gradmap' else ' | '} | "
                   if run else "| | | | | | | ")
                + f"{ev.train_cost:,.1f} | {ev.train_violation_pu:.2e} | {ev.held_cost:,.1f} | "
                f"{ev.held_violation_pu:.2e} | {ev.held_max_overload:.3f} |")
    lines += [
        "",
        "Co-simulation, first held-out day:",
        "",
        "| agents | method | bills + operating cost | discomfort K h | node-steps outside "
        "| max line loading | not converged | s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case in result.cases:
        for name, ev in [("no control", case.idle)] + [(r.method, r.evaluation)
                                                       for r in case.runs]:
            if ev.cosim_violations < 0:
                continue
            lines.append(f"| {case.agents:,} | {name} | {ev.cosim_cost:,.1f} | "
                         f"{ev.cosim_discomfort_kh:,.1f} | {ev.cosim_violations} | "
                         f"{ev.cosim_max_loading:.3f} | {ev.cosim_not_converged} | "
                         f"{ev.cosim_s:.1f} |")
    lines += ["", "Training behaviour (final iteration): GradMAP's trust region delta, mean "
              "policy steps per environment gradient, largest multiplier; skipped steps.", "",
              "| agents | method | delta | policy steps / gradient | largest multiplier "
              "| skipped |", "|---:|---|---:|---:|---:|---:|"]
    for case in result.cases:
        for r in case.runs:
            # delta is GradMAP's alone, multipliers the primal-dual methods' (IPPO has none)
            delta = f"{r.final_delta:.3g}" if r.method == "gradmap" else "-"
            lam = f"{r.lambda_max:.3g}" if math.isfinite(r.lambda_max) else "-"
            lines.append(f"| {case.agents:,} | {r.method} | {delta} | "
                         f"{r.mean_policy_steps:.1f} | {lam} | {r.skipped} |")
    lines += ["", verdict(result)] + (["", notes(result)] if notes(result) else []) + [end]
    return "\n".join(lines) + "\n"


def notes(result: Result) -> str:
    """What the numbers mean where the target does not separate the methods."""
    parts = []
    for case in result.cases:
        first = [r for r in case.runs if r.curve and r.time_to_target_s is not None
                 and r.time_to_target_s <= r.curve[0]["wall_s"]]
        if case.runs and len(first) == len(case.runs):
            parts.append(
                f"At {case.agents:,} agents the untrained initial policies already meet the "
                f"target (training cost {case.runs[0].curve[0]['cost']:,.1f} against the best "
                f"{case.best_cost:,.1f}, mean violation "
                f"{case.runs[0].curve[0]['mean_violation_pu']:.1e} p.u.): every time to target "
                "is the first iteration's wall time, so the ratio says nothing about the "
                "methods.")
        for r in case.runs:
            ev = r.evaluation
            off = ev.train_cost / case.best_cost - 1 if case.best_cost else math.nan
            if r.time_to_target_s is not None and (off > COST_TOLERANCE
                                                   or ev.train_violation_pu >= VIOLATION_TARGET):
                parts.append(
                    f"At {case.agents:,} agents {r.method} met the target only on the way: its "
                    f"final bank costs {ev.train_cost:,.1f} on the training days, {off:.1%} above "
                    f"the best (violation {ev.train_violation_pu:.1e} p.u.).")
        trained = [r.evaluation.train_cost for r in case.runs]
        if trained and case.idle.train_cost < min(trained):
            parts.append(
                f"At {case.agents:,} agents no control costs less on the training days "
                f"({case.idle.train_cost:,.1f}) than every trained bank, but violates the "
                f"limits (mean voltage violation {case.idle.train_violation_pu:.1e} p.u., "
                f"held-out overload {case.idle.held_max_overload:.3f}): the trained banks "
                "pay for staying inside them.")
        runs = {r.method: r for r in case.runs}
        g, q = runs.get("gradmap"), runs.get("ssl")
        if g and q and g.time_to_target_s is not None and q.time_to_target_s is not None:
            its = {r.method: next(c["iteration"] for c in r.curve
                                  if c["wall_s"] >= r.time_to_target_s) for r in (g, q)}
            parts.append(
                f"At {case.agents:,} agents GradMAP needed {its['ssl'] / its['gradmap']:.1f}x "
                f"fewer environment gradients than SSL to the target ({its['gradmap']} "
                f"against {its['ssl']}), and its iteration costs "
                f"{g.seconds_per_iteration / q.seconds_per_iteration:.1f}x SSL's (the policy "
                "steps that reuse a gradient: each a forward and backward pass of "
                f"{case.agents:,} MLPs over {GradMAPConfig().inner_fraction:g} of the batch's "
                "rows).")
    return " ".join(parts)


def load_result(data: dict) -> Result:
    """A Result back from its results.json."""
    cases = [Case(**{**c, "idle": Evaluation(**c["idle"]),
                     "runs": [Run(**{**r, "evaluation": Evaluation(**r["evaluation"])})
                              for r in c["runs"]]}) for c in data["cases"]]
    return Result(**{**data, "cases": cases})


def verdict(result: Result) -> str:
    parts = []
    for case in result.cases:
        text, value, exact = speedup(case)
        g = next((r for r in case.runs if r.method == "gradmap"), None)
        if value is None:
            parts.append(f"{case.agents:,} agents: speed-up {text}")
            continue
        met = value >= SPEEDUP_TARGET
        how = "" if exact else " (lower bound)"
        parts.append(f"{case.agents:,} agents: GradMAP reached the target in "
                     f"{g.time_to_target_s:,.0f} s, {text}{how} against SSL, "
                     f"{'meeting' if met else 'missing'} the {SPEEDUP_TARGET:.0f}x target"
                     + ("" if met or exact else " as far as SSL's budget shows"))
    for case in result.cases:
        text, value, exact = speedup(case, "ippo")
        if value is not None:
            parts.append(f"{case.agents:,} agents against IPPO: {text}"
                         + ("" if exact else " (lower bound)"))
    big = next((c for c in result.cases if c.agents == 1000), None)
    if big is not None:
        g = next((r for r in big.runs if r.method == "gradmap"), None)
        if g is not None and g.time_to_target_s is not None:
            ok = g.time_to_target_s <= MINUTES_TARGET * 60
            parts.append(f"1,000 agents within {MINUTES_TARGET:.0f} min: "
                         f"{'met' if ok else 'missed'} ({g.time_to_target_s / 60:.1f} min)")
        elif g is not None:
            parts.append(f"1,000 agents within {MINUTES_TARGET:.0f} min: not shown (GradMAP "
                         f"did not reach the target in its {g.train_s / 60:.1f} min budget)")
    return "**Verdict**: " + "; ".join(parts) + "."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget-100", type=float, default=240.0,
                        help="seconds of training per method at 100 agents")
    parser.add_argument("--budget-1000", type=float, default=600.0,
                        help="seconds of training per method at 1,000 agents")
    parser.add_argument("--agents", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--methods", nargs="+", default=["gradmap", "ssl", "ippo"],
                        choices=["gradmap", "ssl", "penalty", "ippo"])
    parser.add_argument("--ssl-scale", type=float, default=1.0,
                        help="SSL's budget over the others' (a longer run for the slower "
                        "method: its time to target, or a higher lower bound)")
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--train-days", type=int, default=4)
    parser.add_argument("--window", type=int, default=1,
                        help="trailing iterations averaged for the time to target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu",
                        help="torch device of the rollout and policies (cuda: the GPU table)")
    parser.add_argument("--no-cosim", action="store_true",
                        help="skip the co-simulation check of the held-out day")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: the 20-agent IEEE 13 case, 30 s per method")
    parser.add_argument("--from-results", type=Path, default=None, metavar="JSON",
                        help="only write the table of an earlier run's results.json")
    add_output_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if args.from_results is not None:
        result = load_result(json.loads(args.from_results.read_text()))
        save("gradmap", args, markdown(result), asdict(result), *marks(result.device))
        return 0
    start = time.perf_counter()
    budgets = {100: args.budget_100, 1000: args.budget_1000}  # the ones the counts use
    used = sorted({100 if n <= 100 else 1000 for n in args.agents})
    command = "cosim bench gradmap" + (" --quick" if args.quick else "".join(
        f" --budget-{size} {budgets[size]:g}" for size in used))
    if not args.quick and args.agents != [100, 1000]:
        command += " --agents " + " ".join(map(str, args.agents))
    if args.methods != ["gradmap", "ssl", "ippo"]:
        command += " --methods " + " ".join(args.methods)
    if args.ssl_scale != 1:
        command += f" --ssl-scale {args.ssl_scale:g}"
    if args.device != "cpu":
        command += f" --device {args.device}"
    if args.seed != 0:
        command += f" --seed {args.seed}"
    if args.no_cosim:
        command += " --no-cosim"
    result = Result(machine=machine_info(args.device), command=command, window=args.window,
                    seed=args.seed, days=args.days, train_days=args.train_days,
                    device=args.device, ssl_scale=args.ssl_scale)
    cases = [(20, 30.0)] if args.quick else [
        (n, args.budget_100 if n <= 100 else args.budget_1000) for n in args.agents]
    for agents, budget in cases:
        result.cases.append(measure(agents, budget, tuple(args.methods), quick=args.quick,
                                    days=args.days, train_days=args.train_days,
                                    seed=args.seed, window=args.window,
                                    cosim=not args.no_cosim, device=args.device,
                                    ssl_scale=args.ssl_scale))
        partial = Path("runs") / "bench-gradmap-partial.json"  # a crash later keeps this
        partial.parent.mkdir(exist_ok=True)
        partial.write_text(json.dumps(asdict(result), indent=2))
    result.total_s = time.perf_counter() - start
    result.load_average = [round(x, 2) for x in os.getloadavg()]
    save("gradmap", args, markdown(result), asdict(result), *marks(result.device))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
