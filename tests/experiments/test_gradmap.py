"""GradMAP: the problem, its differentiable rollout, and the learner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agents.households import ACTIONS, FIELDS, SIGNED_ACTIONS
from agents.policies.bank import PolicyBank
from cosim.config import load_config
from cosim.profiles import synthetic
from cosim.simulation import Simulation
from experiments.gradmap.problem import Problem, rollout

CONFIG = Path(__file__).parents[2] / "experiments" / "configs" / "gradmap_ieee13_20.toml"


@pytest.fixture(scope="module")
def config():
    return load_config(CONFIG)


@pytest.fixture(scope="module")
def profiles(config):
    return synthetic(homes=20, steps=24 * 3, dt_s=3600, start="2026-03-02T00:00")


@pytest.fixture(scope="module")
def problem(config, profiles):
    return Problem.build(config, days=3, train_days=2, profiles=profiles)


def test_one_device_per_agent_on_the_small_feeder(problem):
    hh = problem.households
    owns = torch.stack([hh.battery.capacity_kwh > 0, hh.heat_pump.power_kw > 0,
                        hh.generator.max_kw > 0, hh.ev.capacity_kwh > 0])
    assert (owns.sum(0) == 1).all()  # the shares add up to 1: each agent has exactly one
    assert problem.load_kw.shape == (3, 20, 24) and problem.buy_price.shape == (3, 24)


def test_the_rollout_is_the_cosimulation(problem, config, profiles, tmp_path):
    """The same bank in the co-simulation (`policy = "bank"`) and in the rollout: every
    agent's observation (its device state, prices, clock and own voltage of the step
    before) and the feeder's voltage range agree at every step of day 0."""
    bank = PolicyBank(20, len(FIELDS), len(ACTIONS), hidden=(16,), squash=SIGNED_ACTIONS,
                      seed=4)
    bank.save(tmp_path / "bank.pt", FIELDS, ACTIONS)
    with torch.no_grad():
        traj = rollout(problem, bank, [0])
    sim = Simulation.from_config(config.everyone("bank", tmp_path / "bank.pt"),
                                 record=False, profiles=profiles)
    obs = sim.reset()
    for t in range(config.run.steps):
        np.testing.assert_allclose(traj.observations[0, t].numpy(), obs, rtol=0, atol=1e-7)
        result = sim.step()
        v = traj.vmag_pu[0, t].numpy()
        assert result.grid.converged and bool(traj.converged[0, t])
        assert float(np.nanmin(v)) == pytest.approx(result.grid.v_min_pu, abs=1e-8)
        assert float(np.nanmax(v)) == pytest.approx(result.grid.v_max_pu, abs=1e-8)
        if not result.done:
            obs = result.observations
    sim.close()


def test_the_surrogates_gradient_is_the_environments_at_a_k(problem):
    """At the rollout's actions the surrogate's parameter gradient is the Lagrangian's
    (observations held fixed), checked against central finite differences of the
    Lagrangian along a random parameter direction: the implicit power-flow adjoint, the
    device dynamics and the chain rule through the bank, all at once."""
    from experiments.gradmap.train import (
        GradMAPConfig,
        environment_gradient,
        lagrangian,
        surrogate,
        terms,
    )

    cfg = GradMAPConfig()
    bank = PolicyBank(20, len(FIELDS), len(ACTIONS), hidden=(8,), squash=SIGNED_ACTIONS,
                      seed=1)
    gen = torch.Generator().manual_seed(0)
    nodes, lines = len(problem.pf.feeder.nodes), len(problem.pf.feeder.lines)
    lam_node = torch.rand(24, nodes, generator=gen, dtype=torch.float64) * 5
    lam_line = torch.rand(24, lines, generator=gen, dtype=torch.float64) * 5
    days = torch.tensor([0, 1])
    _, _, obs, a_k, g = environment_gradient(problem, bank, days, lam_node, lam_line, 1e3, cfg)
    bank.zero_grad()
    surrogate(bank, obs, a_k, g, eta=0.3).backward()
    direction = [torch.randn(w.shape, generator=gen, dtype=w.dtype) for w in bank.parameters()]
    analytic = sum(float((w.grad * d).sum()) for w, d in zip(bank.parameters(), direction))

    def value(h: float) -> float:
        with torch.no_grad():
            for w, d in zip(bank.parameters(), direction):
                w.add_(h * d)
            traj = rollout(problem, bank, days, actions=lambda t, a: bank(obs[:, t]))
            out = float(lagrangian(terms(problem, traj, cfg.discomfort_cost, days), lam_node,
                                   lam_line, 1e3, cfg.rho))
            for w, d in zip(bank.parameters(), direction):
                w.sub_(h * d)
        return out

    h = 1e-4
    numeric = (value(h) - value(-h)) / (2 * h)
    assert abs(analytic) > 1e-6
    assert numeric == pytest.approx(analytic, rel=1e-3)


def test_policies_act_on_their_own_observation_only():
    bank = PolicyBank(20, len(FIELDS), len(ACTIONS), squash=SIGNED_ACTIONS, seed=2)
    obs = torch.randn(3, 20, len(FIELDS), dtype=torch.float64)
    other = obs.clone()
    other[:, 7] += torch.randn(3, len(FIELDS), dtype=torch.float64)  # agent 7's view only
    a, b = bank(obs), bank(other)
    assert torch.equal(a[:, :7], b[:, :7]) and torch.equal(a[:, 8:], b[:, 8:])
    assert not torch.equal(a[:, 7], b[:, 7])


@pytest.fixture(scope="module")
def real_problem(config):
    """The shipped test scenario on its own profile generator: 4 training days, 2 held out."""
    return Problem.build(config, days=6, train_days=4)


def _held_out(problem, policy):
    from experiments.gradmap.train import terms

    held = torch.arange(problem.train_days, problem.load_kw.shape[0])
    with torch.no_grad():
        t = terms(problem, rollout(problem, policy, held), 0.5, held)
    return float(t.cost), float(t.node.sum() + t.line.sum())


@pytest.mark.parametrize("method", ["gradmap", "ssl", "penalty"])
def test_training_reduces_violations_against_no_control(real_problem, method, tmp_path):
    """Seeded, 20 iterations on the 20-agent IEEE 13 case: on the held-out days the
    learned policies violate the voltage and line limits far less than no control (every
    device at raw action 0: batteries mid-range, heat pumps at the least power that holds
    the comfort band, generators off); the multipliers stay non-negative and every
    GradMAP iteration stays inside its trust region."""
    from experiments.gradmap.train import GradMAPConfig, train

    def idle(obs):
        return torch.zeros(*obs.shape[:-1], len(ACTIONS), dtype=obs.dtype)

    _, uncontrolled = _held_out(real_problem, idle)
    outcome = train(real_problem, GradMAPConfig(method=method, iterations=20, seed=1),
                    tmp_path, progress=False)
    _, learned = _held_out(real_problem, outcome.bank)
    assert uncontrolled > 0.5  # the case has violations to remove
    assert learned < 0.2 * uncontrolled
    table = outcome.training
    assert (table.lambda_min >= 0).all() and table.converged.all()
    if method == "gradmap":
        assert (table.move_rms <= table.delta * (1 + 1e-9)).all()
        assert table.policy_steps.max() > 1  # environment gradients were reused
    assert PolicyBank.load(tmp_path / "bank.pt", fields=FIELDS, actions=ACTIONS).n_agents == 20


def test_train_and_evaluate_on_held_out_days_from_the_command_line(tmp_path, capsys):
    import pandas as pd

    from cosim.cli import main

    out = tmp_path / "gradmap"
    assert main(["train", str(CONFIG), "--algo", "gradmap", "--iterations", "2", "--days", "3",
                 "--train-days", "2", "--hidden", "16", "--out", str(out),
                 "--no-progress"]) == 0
    assert "gradmap on gradmap_ieee13_20: 2 iterations" in capsys.readouterr().out
    table = pd.read_parquet(out / "training.parquet")
    assert list(table.iteration) == [1, 2] and (out / "checkpoint.pt").is_file()
    assert (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = tmp_path / "held-out"
    assert main(["evaluate", str(out), str(CONFIG), "--start", "2026-03-04T00:00:00Z",
                 "--out", str(run), "--steps", "3", "--no-progress"]) == 0
    homes = pd.read_parquet(run / "homes.parquet")
    assert set(homes["policy"]) == {"bank"} and len(homes) == 20
    assert main(["train", str(CONFIG), "--algo", "gradmap", "--days", "2",
                 "--train-days", "3"]) == 2
    assert "--train-days 3 is more than --days 2" in capsys.readouterr().err
    assert main(["evaluate", str(out), str(CONFIG), "--start", "March"]) == 2
    assert "--start March: not an ISO time" in capsys.readouterr().err


def test_the_trust_region_adapts_on_a_window_of_steps(problem):
    """delta changes only at the end of a window, on the window's summed actual against
    predicted decreases (one bad step inside a good window does not shrink it), and at
    once after a step into a power flow that did not converge."""
    from experiments.gradmap.train import GradMAPConfig, Terms, _adapt

    cfg = GradMAPConfig(ratio_window=3, delta_bounds=(0.01, 0.4), ratio_bounds=(0.25, 0.75))
    lam = torch.zeros(1, 1, dtype=torch.float64)

    def step(rows: list[dict], loss_after: float, predicted: float, bound: bool = True,
             converged: bool = True, delta: float = 0.1) -> float:
        after = Terms(torch.tensor(loss_after * 1e3, dtype=torch.float64),
                      torch.zeros(1, 1, dtype=torch.float64),
                      torch.zeros(1, 1, dtype=torch.float64), converged)
        rows.append({})
        pending = {"row": len(rows) - 1, "days": torch.tensor([0]), "loss": 1.0,
                   "predicted": predicted, "bound": bound, "lam_node": lam, "lam_line": lam}
        return _adapt(problem, None, cfg, pending, after, 1e3, delta, rows)

    rows: list[dict] = []
    # actual decreases 0.09, -0.05 (worse), 0.09 against 0.1 each: 0.43 of the promise
    assert [step(rows, 1 - d, 0.1) for d in (0.09, -0.05, 0.09)] == [0.1, 0.1, 0.1]
    assert rows[1]["ratio"] == pytest.approx(-0.5)
    # 0.02 of 0.1 on every step: shrinks at the window's end only
    assert [step(rows, 0.98, 0.1) for _ in range(3)] == [0.1, 0.1, 0.05]
    # 0.09 of 0.1, bound by the region: grows; not bound: stays
    assert [step(rows, 0.91, 0.1) for _ in range(3)] == [0.1, 0.1, 0.2]
    assert [step(rows, 0.91, 0.1, bound=False) for _ in range(3)] == [0.1, 0.1, 0.1]
    assert step(rows, 0.5, 0.1, converged=False) == 0.05  # at once, mid-window
    assert step(rows, 0.98, 0.1, delta=0.015) == 0.015
    assert step(rows, 0.98, 0.1, delta=0.015) == 0.01  # never below the floor


def test_a_resumed_run_is_the_uninterrupted_one(problem, tmp_path):
    """Stopped after 3 iterations (a checkpoint every 2 and at the end) and resumed to 5,
    GradMAP ends with the bank, multipliers and table of a run of 5 in one go."""
    from experiments.gradmap.train import GradMAPConfig, load_checkpoint, train

    # a trust-region window of 2 steps: its decisions straddle the resumption
    cfg = GradMAPConfig(iterations=5, hidden=(16,), seed=3, checkpoint_every=2,
                        ratio_window=2)
    whole = train(problem, cfg, tmp_path / "whole", progress=False)
    train(problem, GradMAPConfig(**{**cfg.__dict__, "iterations": 3}), tmp_path / "part",
          progress=False)
    resumed = train(problem, cfg, tmp_path / "part", progress=False, resume=tmp_path / "part")
    for a, b in zip(whole.bank.parameters(), resumed.bank.parameters()):
        assert torch.equal(a, b)
    keep = ["iteration", "cost", "mean_violation_pu", "lambda_max", "delta", "policy_steps"]
    assert whole.training[keep].equals(resumed.training[keep])
    saved = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)
    assert torch.equal(saved["lambda_node"], torch.load(
        tmp_path / "whole" / "checkpoint.pt", weights_only=False)["lambda_node"])
    with pytest.raises(ValueError, match="made with hidden = \\(16,\\), this run has \\(8,\\)"):
        load_checkpoint(tmp_path / "part", GradMAPConfig(iterations=9, hidden=(8,), seed=3),
                        problem)
    with pytest.raises(ValueError, match="already at iteration 5"):
        load_checkpoint(tmp_path / "part", cfg, problem)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_the_rollout_and_a_training_step_run_alike_on_cuda(problem):
    from experiments.gradmap.train import GradMAPConfig, train

    gpu = problem.to("cuda")
    bank = PolicyBank(problem.n_agents, len(FIELDS), len(ACTIONS), (16,), SIGNED_ACTIONS, seed=2)
    with torch.no_grad():
        a = rollout(problem, bank, [0, 1])
        b = rollout(gpu, bank.to("cuda"), [0, 1])
    assert torch.allclose(b.vmag_pu.cpu(), a.vmag_pu, rtol=0, atol=1e-8, equal_nan=True)
    assert torch.allclose(b.substation_kw.cpu(), a.substation_kw, rtol=1e-8)
    cfg = GradMAPConfig(iterations=2, hidden=(16,), seed=2)
    cpu_run, gpu_run = train(problem, cfg, progress=False), train(gpu, cfg, progress=False)
    # the first iteration agrees to 1e-9; after one Adam step the float32 policies differ
    # by about 5e-6 relative (the devices sum float32 products in different orders, and
    # Adam divides small gradients by their own size): measured on an H200, 2026-11-30
    assert np.allclose(gpu_run.training.cost[:1], cpu_run.training.cost[:1], rtol=1e-8)
    assert np.allclose(gpu_run.training.cost, cpu_run.training.cost, rtol=1e-4)
