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
