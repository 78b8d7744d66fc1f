"""FACMAC (experiments/rl/facmac.py) and its reproduction (`cosim reproduce facmac`).

Learning outcomes are not asserted (they are the reproduction's result); what is: the
mixer's monotonicity, that the centralised actor step climbs the mixed critic, the
marginal learner's counterfactual steps counted by an independent ledger (the simulation's
own step calls), determinism, and the quick table against its own curves."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from agents.households import ACTIONS, FIELDS
from agents.policies.bank import PolicyBank
from cosim.cli import main as cosim
from cosim.simulation import Simulation
from experiments.reproduce import facmac as reproduction
from experiments.rl.facmac import DEFAULT_ACTION, FacmacConfig, Mixer, train

QUICK = FacmacConfig(episodes=2, eval_every=1, random_steps=24, batch_episodes=2,
                     updates_per_episode=2, hidden=(32,))


@pytest.fixture(scope="module")
def env():
    environment = reproduction.environment(2)
    yield environment
    environment.close()


def test_the_mixer_is_monotonic_in_every_utility():
    torch.manual_seed(0)
    mixer = Mixer(5, 7, 16)
    q = torch.randn(64, 5, requires_grad=True)
    state = torch.randn(64, 7) * 3
    total = mixer(q, state)
    (grad,) = torch.autograd.grad(total.sum(), q)
    assert total.shape == (64,)
    assert (grad >= 0).all() and (grad > 0).any()
    assert not torch.allclose(total, total[0])  # it depends on its inputs


def test_the_centralised_actor_step_climbs_the_mixed_critic():
    """One gradient step of every actor on -Q_tot(s, mu(o)) through a fixed critic raises
    Q_tot: the joint, centralised policy gradient, not one per agent."""
    torch.manual_seed(1)
    n, f, a = 4, 3, 2
    actors = PolicyBank(n, f, a, hidden=(8,), dtype=torch.float32)
    utilities = PolicyBank(n, f + a, 1, hidden=(8,), seed=1, dtype=torch.float32)
    mixer = Mixer(n, 6, 8)
    obs, state = torch.randn(32, n, f), torch.randn(32, 6)

    def value() -> torch.Tensor:
        q = utilities(torch.cat([obs, actors(obs)], -1), squash=False).squeeze(-1)
        return mixer(q, state).mean()

    before = value()
    opt = torch.optim.SGD(actors.parameters(), lr=1e-2)
    (-before).backward()
    opt.step()
    assert value() > before.detach()


def test_the_marginal_learner_simulates_each_step_once_per_home_more(env, monkeypatch):
    calls = []
    step = Simulation.step
    monkeypatch.setattr(Simulation, "step", lambda self, *a: calls.append(1) or step(self, *a))
    outcome = train(env, replace(QUICK, critic="marginal", episodes=1), progress=False)
    n, steps = 2, env.episode_steps
    # training: the real step and one counterfactual per home; then one evaluation episode
    assert len(calls) == steps * (n + 1) + steps
    assert outcome.curve.simulated_steps.tolist() == [steps * (n + 1)]
    assert np.isfinite(outcome.curve.eval_return).all()


@pytest.mark.parametrize("shared", [True, False])
def test_training_is_deterministic_and_gives_a_deployable_bank(env, tmp_path, shared):
    config = replace(QUICK, shared_utility=shared)
    first, second = (train(env, config, progress=False) for _ in range(2))
    np.testing.assert_array_equal(first.curve.eval_return, second.curve.eval_return)
    assert first.actors.n_agents == 2 and first.actors.weights[0].dtype == torch.float64
    first.actors.save(tmp_path / "bank.pt", FIELDS, ACTIONS)
    loaded = PolicyBank.load(tmp_path / "bank.pt", fields=FIELDS, actions=ACTIONS)
    obs = torch.randn(5, 2, len(FIELDS), dtype=torch.float64)
    torch.testing.assert_close(loaded(obs), first.actors(obs), rtol=0, atol=0)
    assert len(DEFAULT_ACTION) == first.actors.act_dim


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("facmac-quick")
    table = reproduction.run(out, (2,), episodes=4, seed=None, progress=False,
                             config=FacmacConfig(eval_every=2, random_steps=24,
                                                 hidden=(64,)))
    return out, table


def test_the_quick_table_follows_from_its_curves(quick):
    """Target, time to target and ratios recomputed from curves.csv."""
    out, table = quick
    assert set(table.learner) == set(reproduction.LEARNERS) and set(table.homes) == {2}
    assert (out / "table.md").read_text().count("| 2 |") == 3
    assert (out / "scaling.png").stat().st_size > 10_000
    curves = pd.read_csv(out / "curves.csv")
    base = table.default_return.iloc[0]
    best = curves.eval_return.max()
    target = base + reproduction.TARGET_SHARE * (best - base)
    np.testing.assert_allclose(table.target_return, target)
    for row in table.itertuples():
        mine = curves[curves.learner == row.learner]
        hit = mine[mine.eval_return >= target]
        assert row.reached == (len(hit) > 0)
        want = hit.train_s.iloc[0] if len(hit) else mine.train_s.iloc[-1]
        assert row.time_to_target_s == pytest.approx(want)
    facmac_s = table.set_index("learner").time_to_target_s["facmac"]
    for row in table.itertuples():
        assert row.ratio_to_facmac == pytest.approx(row.time_to_target_s / facmac_s)
    # the default (cars and heat pumps flat out, no battery) is beaten by some learner
    assert best > base
    final = curves.groupby("learner").last()
    for row in table.itertuples():
        assert row.final_violations == final.eval_violations[row.learner]
    assert (table.failed_steps == 0).all()


@pytest.mark.parametrize("option", [["--homes", "0"], ["--homes", "56"],
                                    ["--episodes", "0"], ["--seed", "-1"]])
def test_bad_options_are_exit_code_2(option, capsys, tmp_path):
    assert cosim(["reproduce", "facmac", "--quick", "--out", str(tmp_path), *option]) == 2
    assert "error" in capsys.readouterr().err
