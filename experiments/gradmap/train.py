"""GradMAP: independent household policies trained through exact three-phase AC gradients.

Zhou, Zeng, Morstyn, "GradMAP: Gradient-Based Multi-Agent Proximal Learning for Grid-Edge
Flexibility", arXiv 2604.24549. Only the paper's abstract was available; what it does not
state is chosen here and marked "choice" (../shared/reference/gradmap.md lists the gaps).

Problem (experiments.gradmap.problem): N agents, one device each, on a feeder; every agent's
policy is its own MLP in one `PolicyBank` (no sharing, local observation only), acting
deterministically. Over a batch B of training days:

    cost(theta)  = mean over days of  sum_t [ price_t * P_substation,t * dt          (energy,
                                              + sum_i wear and fuel_i,t               losses
                                              + c_comfort * discomfort_i,t ]          included)
    nu_{m,t}     = mean over days of  [|v_m,t| - vmax]+ + [vmin - |v_m,t|]+    (node-phase m, p.u.)
                   and [loading_l,t - 1]+ for every rated line l
    L(theta, lam) = cost / cost_scale + sum lam * nu + rho/2 * sum nu^2

with one multiplier per constraint (node-phase or line, and step), shared by all days (an
expectation constraint; choice), `cost_scale` the batch cost of the initial policies (so
lam is per p.u. of violation against one day's cost; choice), and projected dual ascent
lam <- min(max(0, lam + dual_lr * nu), lambda_max) after every iteration. The cap (choice)
keeps a constraint that no policy can meet - a line the feeder's own load overloads - from
driving its multiplier, and with it the Lagrangian's scale, up without end: beyond the cap
the constraint is an exact penalty at lambda_max.
The violations nu are never negative, so a multiplier never falls: dual_lr sets how fast
the price of a violation ratchets up, and with it where on the cost-violation trade-off
training settles (choice, measured on 100 agents, IEEE 123, both methods, 2026-12-02):
at dual_lr 50 the multipliers overshot - GradMAP's training cost levelled off near 4,270
with a mean violation of 1e-6 p.u., a hundred times below the benchmark's target - while
at 5 it reached 4,100 with 4e-6 p.u. after 120 iterations (delta_0 0.05), and SSL too
reached every cost level sooner (4,277 after 41 iterations against 283). At 2, costs fell
to 4,020 with 1e-5 p.u. Signed constraints (|v| - vmax, a multiplier per day that falls
where the limit is slack) were tried with GradMAP and not kept: the violations and the
multipliers oscillated and the cost stayed above 4,300 in 120 iterations.

One iteration of GradMAP:
1. Roll the policies out on the batch (the co-simulation's own device and power-flow code),
   with each step's actions a_k made leaves of the graph; one backward gives the
   environment gradient g = dL/da_k (through the implicit power-flow adjoint; later actions
   held fixed).
2. Up to `inner_steps` policy steps (Adam) on the proximal surrogate
       S(theta) = <g, a(theta) - a_k> + ||a(theta) - a_k||^2 / (2 eta_k)
   restricted to the box |a - a_k| <= delta around every action (choice), with the
   observations of the rollout held fixed. On the box S is separable; its minimiser is
   clip(a_k - eta_k g, a_k -+ delta), which is also the unconstrained minimiser of S with g
   clipped to -+ delta / eta_k per action, so the steps take S with that clipped gradient
   (a regression onto the clipped targets, ../shared/reference/gradmap.md section 8 (B)).
   eta_k is set each iteration so that the unclipped minimiser a_k - eta_k g lies `eta`
   trust regions from a_k in rms (the gradient's scale changes by orders of magnitude as
   the multipliers grow; choice); with eta = 20 most targets sit on the box's faces, so
   each agent moves about delta along its own gradient's sign.
   Why a box and not one rms ball (measured on 100 agents, IEEE 123): the environment
   gradient is concentrated on the few actions that move the violating nodes. In an rms
   ball they took the whole step (max |a - a_k| 28x the rms), overshot the voltage
   limit's kink and made L worse on about half the iterations, which shrank the region to
   its floor, while the cost gradient of every other agent hardly moved its action. To a
   training cost of 4,300 the ball took 233 environment gradients at lr 1e-3 and did not
   get below 4,398 in 250 at lr 3e-3; the box (lr 3e-3) took 41.
   Each step runs on a random `inner_fraction` of the batch's (day, step) rows (S is a sum
   over rows; a policy pass over all of them costs a sizeable share of the environment
   gradient at 1,000 agents on CPU; choice). The loop stops early if the last step left
   the region in rms, rms(a(theta) - a_k) > delta (over every agent, step, day and action,
   seen on the next step's rows: its forward pass serves both); after it the region is
   enforced in rms on the whole batch by halving the loop's parameter move until the
   actions are back inside. The targets lie in the box, so neither happens often.
   Adam's step is about its learning rate whatever the surrogate's scale, so a smaller
   region alone would not move the parameters less: the inner steps' learning rate is
   lr x delta / delta_0, and delta is the step size of the whole method.
3. Measure the true L at the new policies on the same days, against the decrease the
   linearisation predicted (on the next iteration's rollout when that plays the same days:
   no extra rollout). One step's ratio is mostly the voltage terms' kinks (a few
   node-steps crossing a limit one way or the other: its median is about 0 from the 20th
   iteration on), so delta adapts on the decreases summed over `ratio_window` steps
   (choice): halved when their ratio is below ratio_bounds[0], doubled when it is above
   ratio_bounds[1] and the region limited a step (a target was clipped to the box, or the
   rms region ended the loop), within `delta_bounds`; a step into a power flow that did
   not converge halves it at once. In practice this is a coarse-to-fine schedule: fast
   progress at delta_0, then halving every window as the cost levels off (on 1,000
   agents a fixed delta of 0.05 levelled off 2.5% above SSL's best cost; halving reached
   within 2% of it). delta_0 = 0.1 reached every cost level in fewer iterations than 0.05
   (1,000 agents: a cost of 3,966 after 14 against 20) and a lower final cost.
4. Dual ascent.

Baselines on the same code: `ssl` takes one policy step per environment gradient (the
gradient of <g, a(theta)>: the self-supervised gradient through the differentiable
environment) on the same Lagrangian; `penalty` does the same with fixed multipliers
`penalty` instead of dual ascent. A step whose rollout has a non-converged power flow or a
non-finite loss is skipped with a warning and the learning rate halved (never a silent NaN).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from agents.households import ACTIONS, FIELDS, SIGNED_ACTIONS
from agents.policies.bank import PolicyBank
from experiments.gradmap.problem import Problem, Trajectory, rollout

METHODS = ("gradmap", "ssl", "penalty")


@dataclass(frozen=True)
class GradMAPConfig:
    """Every setting of a run (choices where the paper is silent)."""

    method: str = "gradmap"
    iterations: int = 100
    days_per_batch: int = 4  # training days per environment gradient
    hidden: tuple[int, ...] = (64, 64)
    # the policies' own arithmetic (the environment and its gradient stay float64): on CPU
    # the bank's batched float64 matmuls run 4x slower than float32 at 1,000 agents
    # (agents/policies/bank.py), which made the policy passes cost what the environment
    # gradient does
    policy_dtype: str = "float32"
    # Adam, on the surrogate (gradmap) or the Lagrangian (ssl, penalty); 3e-3 is SSL's best
    # of 1e-3, 3e-3 and 1e-2 on 100 agents on IEEE 123 (to the same cost: 1e-3 took 2x the
    # iterations, 1e-2 never got there), and GradMAP's too
    lr: float = 3e-3
    inner_steps: int = 8  # K: policy steps per environment gradient (gradmap)
    inner_fraction: float = 0.25  # share of the batch's (day, step) rows in each of them
    eta: float = 20.0  # proximal step, in trust regions: the unclipped minimiser lies eta x
    # delta (rms) from a_k along -g; the box clips most targets to its faces
    delta: float = 0.1  # initial trust-region radius: each action's change, and the rms
    delta_bounds: tuple[float, float] = (0.005, 0.5)
    ratio_bounds: tuple[float, float] = (0.25, 0.75)  # actual/predicted: shrink below, grow above
    ratio_window: int = 20  # GradMAP steps whose decreases are summed for that ratio
    dual_lr: float = 5.0  # per p.u. of mean violation per iteration
    lambda_max: float = 1e3  # multiplier cap: beyond it a constraint the agents cannot meet
    # is priced at lambda_max (an exact penalty) instead of a multiplier growing without end
    rho: float = 0.0  # augmented-Lagrangian weight
    penalty: float = 50.0  # the penalty method's fixed multiplier
    discomfort_cost: float = 0.5  # currency per K h outside the comfort band
    checkpoint_every: int = 10  # iterations between checkpoints (with an output folder)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r}: choose one of {list(METHODS)}")
        for name in ("iterations", "days_per_batch", "inner_steps", "checkpoint_every",
                     "ratio_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)} must be at least 1")
        if self.policy_dtype not in ("float32", "float64"):
            raise ValueError(f"policy_dtype {self.policy_dtype!r}: choose float32 or float64")
        if not 0 < self.inner_fraction <= 1:
            raise ValueError(f"inner_fraction = {self.inner_fraction} must be in (0, 1]")
        for name in ("lr", "eta", "delta", "dual_lr", "penalty", "lambda_max"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} = {getattr(self, name)} must be a positive number")


@dataclass
class Terms:
    """One rollout's Lagrangian parts (batch means)."""

    cost: torch.Tensor  # currency per day
    node: torch.Tensor  # [steps, nodes] mean voltage violation, p.u.
    line: torch.Tensor  # [steps, lines] mean overload, fraction of rating
    converged: bool


def terms(problem: Problem, traj: Trajectory, discomfort_cost: float,
          days: torch.Tensor) -> Terms:
    g, dt_h = problem.config.grid, problem.dt_h
    energy = (problem.energy_price[days] * traj.substation_kw * dt_h).sum(-1)
    cost = energy + traj.operating_cost.sum((-1, -2)) + discomfort_cost * traj.discomfort_kh.sum(
        (-1, -2))
    v = traj.vmag_pu  # NaN for nodes that do not exist on a phase
    node = (torch.relu(v - g.vmax_pu) + torch.relu(g.vmin_pu - v)).nan_to_num(0.0).mean(0)
    line = torch.relu(traj.line_loading - 1.0).nan_to_num(0.0).mean(0)
    return Terms(cost.mean(), node, line, bool(traj.converged.all()))


def lagrangian(t: Terms, lam_node: torch.Tensor, lam_line: torch.Tensor, scale: float,
               rho: float) -> torch.Tensor:
    return (t.cost / scale + (lam_node * t.node).sum() + (lam_line * t.line).sum()
            + rho / 2 * (t.node.square().sum() + t.line.square().sum()))


def environment_gradient(problem: Problem, bank: PolicyBank, days: torch.Tensor,
                         lam_node: torch.Tensor, lam_line: torch.Tensor, scale: float,
                         cfg: GradMAPConfig) -> tuple[Terms, torch.Tensor, torch.Tensor,
                                                      torch.Tensor, torch.Tensor | None]:
    """(terms, L, observations, actions a_k, dL/da_k) of one rollout, every tensor
    `[days, steps, agents, ...]`; the gradient is None when the rollout failed (a power flow
    that did not converge, a loss that is not finite)."""
    leaves: list[torch.Tensor] = []

    def leaf(t: int, a: torch.Tensor) -> torch.Tensor:
        # in the environment's precision, whatever the policies' own (g, a_k: float64)
        leaves.append(a.detach().to(problem.load_kw.dtype).requires_grad_(True))
        return leaves[-1]

    traj = rollout(problem, bank, days, actions=leaf)
    now = terms(problem, traj, cfg.discomfort_cost, days)
    loss = lagrangian(now, lam_node, lam_line, scale, cfg.rho)
    obs, a_k = traj.observations.detach(), traj.actions.detach()
    if not now.converged or not torch.isfinite(loss):
        return now, loss, obs, a_k, None
    loss.backward()
    g = torch.stack([a.grad for a in leaves], dim=1)
    return now, loss, obs, a_k, g if torch.isfinite(g).all() else None


def surrogate(bank: PolicyBank, obs: torch.Tensor, a_k: torch.Tensor, g: torch.Tensor,
              eta: float) -> torch.Tensor:
    """<g, a(theta) - a_k> + ||a(theta) - a_k||^2 / (2 eta), observations held fixed."""
    return _proximal(bank(obs) - a_k, g, eta)


def _proximal(step: torch.Tensor, g: torch.Tensor, eta: float) -> torch.Tensor:
    return (g * step).sum() + step.square().sum() / (2 * eta)


@dataclass
class Outcome:
    bank: PolicyBank
    training: pd.DataFrame
    folder: Path | None


def train(problem: Problem, cfg: GradMAPConfig, out: str | Path | None = None,
          progress: bool = True, budget_s: float | None = None,
          resume: str | Path | None = None) -> Outcome:
    """Train (module docstring); with `out`, write bank.pt, checkpoint.pt (everything the
    loop carries: bank, Adam, multipliers, trust region, learning rate, the day sampler,
    the cost scale, iteration and wall time) and training.parquet there every
    `checkpoint_every` iterations and at the end, and training.png at the end. `resume`: a
    folder (or checkpoint.pt) of an earlier run of the same problem and settings, continued
    up to `cfg.iterations` in all; the result is the one an uninterrupted run gives. With
    `budget_s`, stop before an iteration that would end past that many seconds of this call
    at its mean pace so far (after at least two)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    bank = PolicyBank(problem.n_agents, len(FIELDS), len(ACTIONS), cfg.hidden,
                      SIGNED_ACTIONS, seed=cfg.seed,
                      dtype=getattr(torch, cfg.policy_dtype)).to(problem.device)
    # fused: one pass over the parameters per step instead of a dozen (at 1,000 agents,
    # 5.6 million parameters, 2 CPU cores: 3.1 ms a step, against about 8.3 ms for the
    # CPU default, single-tensor, in training and 8.6 ms for the multi-tensor form),
    # which matters for the GradMAP inner steps
    opt = torch.optim.Adam(bank.parameters(), lr=cfg.lr, fused=True)
    steps, nodes, lines = problem.steps, len(problem.pf.feeder.nodes), len(problem.pf.feeder.lines)
    fixed = cfg.method == "penalty"
    lam_node, lam_line = (torch.full((steps, n), cfg.penalty if fixed else 0.0,
                                     dtype=torch.float64, device=problem.device)
                          for n in (nodes, lines))
    delta, lr, rows, done, offset = cfg.delta, cfg.lr, [], 0, 0.0
    picker = torch.Generator().manual_seed(cfg.seed)  # the inner steps' rows
    pending: dict | None = None  # the last GradMAP step, until its improvement is measured
    if resume is not None:
        saved = load_checkpoint(resume, cfg, problem)
        bank.load_state_dict(saved["bank"])
        opt.load_state_dict(saved["optimizer"])
        lam_node, lam_line = saved["lambda_node"], saved["lambda_line"]
        delta, lr, scale = saved["delta"], saved["lr"], saved["scale"]
        rng.bit_generator.state = saved["sampler"]
        picker.set_state(saved["picker"])
        pending = saved["pending"]
        rows, done = saved["rows"], saved["iteration"]
        offset = rows[-1]["wall_s"] if rows else 0.0
    else:
        with torch.no_grad():  # the scale: what the initial policies cost on the training days
            first = terms(problem, rollout(problem, bank, range(problem.train_days)),
                          cfg.discomfort_cost,
                          torch.arange(problem.train_days, device=problem.device))
        scale = max(abs(float(first.cost)), 1e-9)
    folder = None if out is None else Path(out)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        bank.save(folder / "bank.pt", FIELDS, ACTIONS)
        torch.save({"config": asdict(cfg), "n_agents": problem.n_agents,
                    "steps": problem.steps, "bank": bank.state_dict(),
                    "optimizer": opt.state_dict(), "lambda_node": lam_node,
                    "lambda_line": lam_line, "delta": delta, "lr": lr, "scale": scale,
                    "sampler": rng.bit_generator.state, "picker": picker.get_state(),
                    "pending": pending, "rows": rows,
                    "iteration": len(rows)}, folder / "checkpoint.pt")
        _table(rows, cfg).to_parquet(folder / "training.parquet", index=False)

    bar = tqdm(range(done + 1, cfg.iterations + 1), desc=f"{cfg.method} {problem.config.run.name}",
               unit="iter", disable=not progress, initial=done, total=cfg.iterations)
    start = time.perf_counter() - offset
    for it in bar:
        k = it - done  # iterations of this call, this one included
        if (budget_s is not None and k > 2
                and (time.perf_counter() - start - offset) * k / (k - 1) > budget_s):
            break
        days = torch.as_tensor(rng.choice(problem.train_days, min(cfg.days_per_batch,
                                                                 problem.train_days),
                                          replace=False), device=problem.device)
        # 1. the environment gradient at the current actions
        now, loss, obs, a_k, g = environment_gradient(problem, bank, days, lam_node, lam_line,
                                                      scale, cfg)
        # 3 (of the last iteration): its actual against predicted improvement, on this
        # rollout when it plays the same days (no extra rollout), else on its own days
        if pending is not None:
            same = torch.equal(days.sort().values, pending["days"].sort().values)
            delta = _adapt(problem, bank, cfg, pending, now if same else None, scale, delta,
                           rows)
            pending = None
        if g is None:
            lr /= 2
            for group in opt.param_groups:
                group["lr"] = lr
            warnings.warn(f"iteration {it}: the rollout did not converge or its loss is not "
                          f"finite; step skipped, learning rate halved to {lr:g}",
                          stacklevel=2)
            rows.append(_row(it, now, loss, lam_node, lam_line, delta, 0, 0.0, start,
                             skipped=True))
            continue
        # 2. policy steps on the surrogate
        taken, move = 0, math.nan
        if cfg.method == "gradmap":
            # the proximal weight in action units: a* = a_k - eta_k g sits eta x delta away
            eta_k = cfg.eta * delta / max(_rms(g), 1e-300)
            # S on the box: g clipped to -+ delta / eta_k (module docstring, step 2)
            clip = delta / eta_k
            bound = bool((g.abs() > clip).any())  # whether the box limited a target
            # each step on a random share of the batch's (day, step) rows: the surrogate is
            # a sum over rows, and a policy pass over all of them costs about what the
            # environment gradient does (choice)
            flat = [x.flatten(0, 1) for x in (obs, a_k, torch.clamp(g, -clip, clip))]
            n_rows = flat[0].shape[0]
            size = max(1, round(cfg.inner_fraction * n_rows))
            origin = [w.detach().clone() for w in bank.parameters()]
            # Adam's step is about lr whatever the surrogate's scale, so a smaller region
            # alone does not make the parameters move less: the step size follows delta
            for group in opt.param_groups:
                group["lr"] = lr * delta / cfg.delta
            for _ in range(cfg.inner_steps):
                pick = torch.randperm(n_rows, generator=picker)[:size].to(problem.device)
                o, a0, gk = (x[pick] for x in flat)
                opt.zero_grad()
                step = bank(o) - a0
                # the last step reached the region's edge, as seen on this step's rows
                # (checked on the forward pass the step needs anyway)
                if taken and _rms(step.detach()) > delta:
                    bound = True
                    break
                _proximal(step, gk, eta_k).backward()
                opt.step()
                taken += 1
            with torch.no_grad():
                moved = bank(obs) - a_k
                if _rms(moved) > delta:  # outside on the whole batch: back inside
                    _back_inside(bank, origin, obs, a_k, delta)
                    moved, bound = bank(obs) - a_k, True
            move = _rms(moved)
            pending = {"row": len(rows), "days": days, "loss": float(loss.detach()),
                       "predicted": -float((g * moved).sum()), "bound": bound,
                       "lam_node": lam_node, "lam_line": lam_line}
        else:  # ssl, penalty: one step along the environment gradient
            opt.zero_grad()
            (g * bank(obs)).sum().backward()
            opt.step()
            taken = 1
        rows.append(_row(it, now, loss, lam_node, lam_line, delta, taken, move, start))
        # 4. dual ascent on the measured violations
        if cfg.method != "penalty":
            lam_node = torch.clamp(lam_node + cfg.dual_lr * now.node.detach(), 0.0, cfg.lambda_max)
            lam_line = torch.clamp(lam_line + cfg.dual_lr * now.line.detach(), 0.0, cfg.lambda_max)
        bar.set_postfix(cost=f"{rows[-1]['cost']:.1f}",
                        viol=f"{rows[-1]['max_violation_pu']:.4f}",
                        lam=f"{rows[-1]['lambda_max']:.2f}")
        if folder is not None and it % cfg.checkpoint_every == 0:
            save()
    table = _table(rows, cfg)
    if folder is not None:
        save()
        plot(table, folder / "training.png")
    return Outcome(bank, table, folder)


def load_checkpoint(path: str | Path, cfg: GradMAPConfig, problem: Problem) -> dict:
    """The checkpoint.pt in `path` (a training folder or the file), checked against the
    settings and problem it is to continue; a mismatch names the setting."""
    path = Path(path)
    file = path / "checkpoint.pt" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no GradMAP checkpoint to resume from")
    saved = torch.load(file, map_location=problem.device, weights_only=False)
    before = saved["config"]
    for name, value in asdict(cfg).items():
        if name in ("iterations", "checkpoint_every"):  # free to change on resuming
            continue
        if _plain(before.get(name)) != _plain(value):
            raise ValueError(f"{file}: made with {name} = {before.get(name)!r}, this run "
                             f"has {value!r}; resume with the same settings")
    for name, value in (("n_agents", problem.n_agents), ("steps", problem.steps)):
        if saved[name] != value:
            raise ValueError(f"{file}: made for {name} = {saved[name]}, this problem has "
                             f"{value}")
    if saved["iteration"] >= cfg.iterations:
        raise ValueError(f"{file}: already at iteration {saved['iteration']}; ask for more "
                         f"than that (iterations = {cfg.iterations})")
    return saved


def _plain(x: object) -> object:
    return list(x) if isinstance(x, (list, tuple)) else x


def _table(rows: list[dict], cfg: GradMAPConfig) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    table.insert(0, "method", cfg.method)
    return table


def _rms(x: torch.Tensor) -> float:
    return float(x.square().mean().sqrt())


@torch.no_grad()
def _rms_move(bank: PolicyBank, obs: torch.Tensor, a_k: torch.Tensor) -> float:
    return _rms(bank(obs) - a_k)


@torch.no_grad()
def _back_inside(bank: PolicyBank, origin: list[torch.Tensor], obs: torch.Tensor,
                 a_k: torch.Tensor, delta: float, halvings: int = 12) -> None:
    """Shorten the parameters' move from `origin` (halving it) until the actions are back
    inside the trust region; return to `origin` if that never happens."""
    params = list(bank.parameters())
    step = [w.detach() - old for w, old in zip(params, origin)]
    for _ in range(halvings):
        step = [d / 2 for d in step]
        for w, old, d in zip(params, origin, step):
            w.copy_(old + d)
        if _rms_move(bank, obs, a_k) <= delta:
            return
    for w, old in zip(params, origin):
        w.copy_(old)


def _adapt(problem: Problem, bank: PolicyBank, cfg: GradMAPConfig, pending: dict,
           after: Terms | None, scale: float, delta: float, rows: list[dict]) -> float:
    """The trust region after a GradMAP step (`pending`: its loss, predicted decrease,
    whether the region bound it, its days and multipliers), from the Lagrangian after it
    (`after`: the terms of a rollout of the new policies on its days; rolled out here when
    None). Records the step's actual and predicted decrease and their ratio in its row; at
    the end of every `ratio_window` rows, adapts delta on the window's summed decreases."""
    with torch.no_grad():
        if after is None:
            days = pending["days"]
            after = terms(problem, rollout(problem, bank, days), cfg.discomfort_cost, days)
        new = float(lagrangian(after, pending["lam_node"], pending["lam_line"], scale,
                               cfg.rho))
    predicted = pending["predicted"]
    actual = pending["loss"] - new if after.converged and math.isfinite(new) else -math.inf
    row = rows[pending["row"]]
    row.update(ratio=actual / predicted if predicted > 0 else 0.0, actual=actual,
               predicted=predicted, bound=pending["bound"])
    if not math.isfinite(actual):  # a step into non-convergence: back off at once
        return max(delta / 2, cfg.delta_bounds[0])
    # one step's ratio is mostly the voltage terms' kinks (a few node-steps crossing a limit
    # one way or the other); summed over a window it measures how well the linear model
    # predicted the progress at this radius (choice)
    if (pending["row"] + 1) % cfg.ratio_window:
        return delta
    window = rows[pending["row"] + 1 - cfg.ratio_window:pending["row"] + 1]
    gained = sum(r.get("actual", 0.0) for r in window if math.isfinite(r.get("actual", 0.0)))
    promised = sum(max(r.get("predicted", 0.0), 0.0) for r in window)
    if promised <= 0:  # nothing moved: nothing learned about the model's quality
        return delta
    ratio, (low, high) = gained / promised, cfg.ratio_bounds
    if ratio < low:
        return max(delta / 2, cfg.delta_bounds[0])
    if ratio > high and any(r.get("bound") for r in window):
        return min(delta * 2, cfg.delta_bounds[1])
    return delta


def _row(it: int, t: Terms, loss: torch.Tensor, lam_node: torch.Tensor,
         lam_line: torch.Tensor, delta: float, taken: int, move: float, start: float,
         skipped: bool = False) -> dict[str, object]:
    """One line of the training table; `delta` is the trust region this iteration used,
    `move` the rms action change it made."""
    node, line = t.node.detach(), t.line.detach()
    lam = torch.cat([lam_node.ravel(), lam_line.ravel()])
    return {"iteration": it, "cost": float(t.cost.detach()), "lagrangian": float(loss.detach()),
            "mean_violation_pu": float(node.mean()), "max_violation_pu": float(node.max()),
            "max_overload": float(line.max()) if line.numel() else 0.0,
            "lambda_min": float(lam.min()), "lambda_mean": float(lam.mean()),
            "lambda_max": float(lam.max()), "lambda_voltage_max": float(lam_node.max()),
            "delta": delta, "move_rms": move,
            "policy_steps": taken, "converged": t.converged, "skipped": skipped,
            "wall_s": time.perf_counter() - start}


def plot(table: pd.DataFrame, path: Path) -> None:
    """Cost, violation and multipliers against wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, column, label in zip(axes, ("cost", "mean_violation_pu", "lambda_max"),
                                 ("cost per day (currency)", "mean voltage violation (p.u.)",
                                  "largest multiplier")):
        ax.plot(table.wall_s, table[column], marker=".", ms=3)
        ax.set(xlabel="wall time (s)", ylabel=label)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("symlog", linthresh=1e-6)
    fig.suptitle(f"{table.method.iloc[0]}: training")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
