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
lam <- max(0, lam + dual_lr * nu) after every iteration.

One iteration of GradMAP:
1. Roll the policies out on the batch (the co-simulation's own device and power-flow code),
   with each step's actions a_k made leaves of the graph; one backward gives the
   environment gradient g = dL/da_k (through the implicit power-flow adjoint; later actions
   held fixed).
2. Up to `inner_steps` cheap policy steps (Adam) on the proximal surrogate
       S(theta) = <g, a(theta) - a_k> + ||a(theta) - a_k||^2 / (2 eta_k)
   with the observations of the rollout held fixed, stopping at the trust region's edge: a
   step that takes the actions out of rms(a(theta) - a_k) <= delta (the rms over every
   agent, step, day and action; choice) is halved until they are back inside, and ends the
   inner loop. eta_k is set each iteration so that the surrogate's minimiser a_k - eta_k g
   lies `eta` trust regions from a_k (the gradient's scale changes by orders of magnitude
   as the multipliers grow; choice).
3. Measure the true L at the new policies on the same days, against the decrease the
   linearisation predicted; grow delta when the ratio is high and the region bound, shrink it
   when the ratio is low (a step that made L worse halves delta).
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
    lr: float = 1e-3  # Adam, on the surrogate (gradmap) or the Lagrangian (ssl, penalty)
    inner_steps: int = 8  # K: policy steps per environment gradient (gradmap)
    eta: float = 2.0  # proximal step, in trust regions: the surrogate's minimiser lies eta x
    # delta (rms) from a_k along -g, so the early stop at delta bounds every step
    delta: float = 0.05  # initial trust-region radius, rms action change
    delta_bounds: tuple[float, float] = (0.005, 0.5)
    ratio_bounds: tuple[float, float] = (0.25, 0.75)  # actual/predicted: shrink below, grow above
    dual_lr: float = 50.0  # per p.u. of mean violation per iteration
    rho: float = 0.0  # augmented-Lagrangian weight
    penalty: float = 50.0  # the penalty method's fixed multiplier
    discomfort_cost: float = 0.5  # currency per K h outside the comfort band
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r}: choose one of {list(METHODS)}")
        for name in ("iterations", "days_per_batch", "inner_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)} must be at least 1")
        for name in ("lr", "eta", "delta", "dual_lr", "penalty"):
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
        leaves.append(a.detach().requires_grad_(True))
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
    step = bank(obs) - a_k
    return (g * step).sum() + step.square().sum() / (2 * eta)


@dataclass
class Outcome:
    bank: PolicyBank
    training: pd.DataFrame
    folder: Path | None


def train(problem: Problem, cfg: GradMAPConfig, out: str | Path | None = None,
          progress: bool = True, budget_s: float | None = None) -> Outcome:
    """Train (module docstring); with `out`, write bank.pt, checkpoint.pt (bank, Adam,
    multipliers, trust region, iteration), training.parquet and training.png there. With
    `budget_s`, stop before an iteration that would end past that many seconds of training
    at the mean pace so far (after at least two)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    bank = PolicyBank(problem.n_agents, len(FIELDS), len(ACTIONS), cfg.hidden,
                      SIGNED_ACTIONS, seed=cfg.seed)
    opt = torch.optim.Adam(bank.parameters(), lr=cfg.lr)
    steps, nodes, lines = problem.steps, len(problem.pf.feeder.nodes), len(problem.pf.feeder.lines)
    fixed = cfg.method == "penalty"
    lam_node = torch.full((steps, nodes), cfg.penalty if fixed else 0.0, dtype=torch.float64)
    lam_line = torch.full((steps, lines), cfg.penalty if fixed else 0.0, dtype=torch.float64)
    delta, lr = cfg.delta, cfg.lr
    with torch.no_grad():  # the scale: what the initial policies cost on the training days
        first = terms(problem, rollout(problem, bank, range(problem.train_days)),
                      cfg.discomfort_cost, torch.arange(problem.train_days))
    scale = max(abs(float(first.cost)), 1e-9)
    rows = []
    bar = tqdm(range(1, cfg.iterations + 1), desc=f"{cfg.method} {problem.config.run.name}",
               unit="iter", disable=not progress)
    start = time.perf_counter()
    for it in bar:
        elapsed = time.perf_counter() - start
        if budget_s is not None and it > 2 and elapsed * it / (it - 1) > budget_s:
            break
        days = torch.as_tensor(rng.choice(problem.train_days, min(cfg.days_per_batch,
                                                                 problem.train_days),
                                          replace=False))
        # 1. the environment gradient at the current actions
        now, loss, obs, a_k, g = environment_gradient(problem, bank, days, lam_node, lam_line,
                                                      scale, cfg)
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
        taken = 0
        if cfg.method == "gradmap":
            # the proximal weight in action units: a* = a_k - eta_k g sits eta x delta away
            eta_k = cfg.eta * delta / max(_rms(g), 1e-300)
            for _ in range(cfg.inner_steps):
                opt.zero_grad()
                surrogate(bank, obs, a_k, g, eta_k).backward()
                kept = [w.detach().clone() for w in bank.parameters()]
                opt.step()
                if _rms_move(bank, obs, a_k) > delta:  # left the region: back to its edge
                    _back_inside(bank, kept, obs, a_k, delta)
                    taken += 1
                    break
                taken += 1
        else:  # ssl, penalty: one step along the environment gradient
            opt.zero_grad()
            (g * bank(obs)).sum().backward()
            opt.step()
            taken = 1
        with torch.no_grad():
            moved = bank(obs) - a_k
        rows.append(_row(it, now, loss, lam_node, lam_line, delta, taken, _rms(moved), start))
        # 3. actual against predicted improvement on the same days (one more forward)
        if cfg.method == "gradmap":
            with torch.no_grad():
                predicted = -float((g * moved).sum())
                after = terms(problem, rollout(problem, bank, days), cfg.discomfort_cost, days)
                actual = float(loss) - float(lagrangian(after, lam_node, lam_line, scale,
                                                        cfg.rho))
            ratio = actual / predicted if predicted > 0 else 0.0
            low, high = cfg.ratio_bounds
            if predicted <= 0:  # nothing moved: nothing learned about the model's quality
                pass
            elif actual < 0 or ratio < low:
                delta = max(delta / 2, cfg.delta_bounds[0])
            elif ratio > high and _rms(moved) >= 0.9 * delta:
                delta = min(delta * 2, cfg.delta_bounds[1])
        # 4. dual ascent on the measured violations
        if cfg.method != "penalty":
            lam_node = torch.clamp(lam_node + cfg.dual_lr * now.node.detach(), min=0.0)
            lam_line = torch.clamp(lam_line + cfg.dual_lr * now.line.detach(), min=0.0)
        bar.set_postfix(cost=f"{rows[-1]['cost']:.1f}",
                        viol=f"{rows[-1]['max_violation_pu']:.4f}",
                        lam=f"{rows[-1]['lambda_max']:.2f}")
    table = pd.DataFrame(rows)
    table.insert(0, "method", cfg.method)
    folder = None
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        bank.save(folder / "bank.pt", FIELDS, ACTIONS)
        torch.save({"config": asdict(cfg), "bank": bank.state_dict(),
                    "optimizer": opt.state_dict(), "lambda_node": lam_node,
                    "lambda_line": lam_line, "delta": delta, "lr": lr,
                    "iteration": len(rows)}, folder / "checkpoint.pt")
        table.to_parquet(folder / "training.parquet", index=False)
        plot(table, folder / "training.png")
    return Outcome(bank, table, folder)


def _rms(x: torch.Tensor) -> float:
    return float(x.square().mean().sqrt())


@torch.no_grad()
def _rms_move(bank: PolicyBank, obs: torch.Tensor, a_k: torch.Tensor) -> float:
    return _rms(bank(obs) - a_k)


@torch.no_grad()
def _back_inside(bank: PolicyBank, kept: list[torch.Tensor], obs: torch.Tensor,
                 a_k: torch.Tensor, delta: float, halvings: int = 8) -> None:
    """Shorten the last parameter step (halving it) until the actions are back inside the
    trust region; undo it if that never happens."""
    params = list(bank.parameters())
    step = [w.detach() - old for w, old in zip(params, kept)]
    for _ in range(halvings):
        step = [d / 2 for d in step]
        for w, old, d in zip(params, kept, step):
            w.copy_(old + d)
        if _rms_move(bank, obs, a_k) <= delta:
            return
    for w, old in zip(params, kept):
        w.copy_(old)


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
            "lambda_max": float(lam.max()), "delta": delta, "move_rms": move,
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
