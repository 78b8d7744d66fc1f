"""Policies chosen in the scenario: every kind on every shipped scenario, each household on
its own policy and local view, and market outcomes that bind."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from agents.households import ACTIONS
from agents.policies.bank import PolicyBank
from agents.policies.mpc import MPC, MPCConfig
from cosim.backends import LocalBackend
from cosim.config import load_config
from cosim.profiles import load_profiles
from cosim.scenario import build
from cosim.simulation import Simulation

from .conftest import synthetic_profiles, with_policies

CONFIGS = Path(__file__).parents[2] / "experiments" / "configs"
SCENARIOS = ("ieee123_1000", "lv_55", "mahtm_microgrid")


@functools.cache
def _profiles(name: str):
    return load_profiles(load_config(CONFIGS / f"{name}.toml"))


@pytest.mark.parametrize("kind", ["rule", "mpc", "bank", "external"])
@pytest.mark.parametrize("name", SCENARIOS)
def test_shipped_scenarios_run_with_every_policy_kind(name, kind, tmp_path):
    config = load_config(CONFIGS / f"{name}.toml")
    if kind == "mpc" and config.households.count > 100:
        # 1,000 MPC plans take about 40 s a step on two cores: a share of them here
        config = with_policies(config, tmp_path, policy_groups=[{"policy": kind,
                                                                 "share": 0.03}])
    else:
        config = with_policies(config, tmp_path, policy=kind)
    sim = Simulation.from_config(config, out=tmp_path / "run", profiles=_profiles(name))
    sim.reset()
    rng = np.random.default_rng(0)
    for _ in range(3):
        result = sim.step(rng.uniform(-1, 1, (sim.n_households, len(ACTIONS))))
        assert result.grid.converged and abs(result.system["money_balance"]) < 1e-9
    sim.close()
    homes = pd.read_parquet(tmp_path / "run" / "homes.parquet")
    assert kind in set(homes["policy"])
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "partial" and manifest["steps_done"] == 3


def test_a_bank_household_acts_on_its_own_agent_and_observation(bank_config, tmp_path):
    sim = Simulation(build(bank_config, synthetic_profiles(homes=30)), LocalBackend(),
                     tmp_path)
    obs = sim.reset()
    policy = sim.households["policy"]
    expected = {}
    for name in sim.shards:  # what each bank household's own agent makes of its own view
        shard = sim.backend.actors[name]
        ids = shard.homes.household
        mine = policy[ids] == "bank"
        bank = PolicyBank.load(bank_config.policies.bank.path, agents=ids[mine])
        action = torch.zeros(len(ids), len(ACTIONS), dtype=torch.float64)
        with torch.no_grad():
            action[torch.as_tensor(mine)] = bank(torch.as_tensor(obs[ids[mine]]))
        sp = shard.households.from_action(action, shard.state, shard.series.at(0),
                                          shard.dt_h)
        expected |= {int(h): [float(v[k]) for v in sp] for k, h in enumerate(ids) if mine[k]}
    sim.step()
    sim.close()
    homes = pd.read_parquet(tmp_path / "households").set_index("household")
    assert len(expected) == (policy == "bank").sum() > 0
    # its order is firm: what it dispatched is what its agent chose (the flexible
    # appliance setpoint is inside load_kw, so the other five are compared)
    columns = ["battery_kw", "ev_kw", "heat_pump_kw", "pv_kw", "generator_kw"]
    got = homes.loc[list(expected), columns].to_numpy(float)
    want = np.array([[v[k] for k in (0, 1, 2, 4, 5)] for v in expected.values()])
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert np.abs(want[:, 0]).max() > 0.1  # the agents did move their batteries


def _tariff(config, hours: np.ndarray, wholesale: np.ndarray, retailer: str) -> tuple:
    """(buy, sell) series a retailer publishes, from the scenario file alone."""
    if retailer == "distributor":
        t = config.tariff
        start, end = t.peak_hours
        peak = (hours >= start) & (hours < end)
        buy = np.where(peak & (t.peak_import_price is not None),
                       t.peak_import_price or 0.0, t.import_price)
        return buy, np.full(len(hours), t.export_price)
    margin = config.aggregators.margin
    return wholesale + margin, wholesale - margin


def test_an_mpc_household_follows_its_own_plan_on_its_retailers_forecast(small_config,
                                                                         tmp_path):
    config = with_policies(small_config, tmp_path,
                           policy_groups=[{"policy": "mpc", "share": 0.2}])
    profiles = synthetic_profiles(homes=30)
    sim = Simulation(build(config, profiles), LocalBackend(), tmp_path / "run")
    sim.reset()
    policy, retailer = sim.households["policy"], sim.households["retailer"]
    data = profiles.window(config.run.start, config.run.steps, config.run.dt_s, "test")
    local = pd.DatetimeIndex(data.time, tz="UTC").tz_convert(config.run.timezone)
    hours = np.asarray(local.hour + local.minute / 60.0)
    expected = {}
    for name in sim.shards:
        shard = sim.backend.actors[name]
        ids = shard.homes.household
        where = np.flatnonzero(policy[ids] == "mpc")
        if not len(where):
            continue
        prices = [_tariff(config, hours, data.wholesale_price, retailer[h]) for h in ids[where]]
        mpc = MPC(shard.households.select(where), shard.dt_h, MPCConfig(horizon=96))
        state = type(shard.state)(*(t[torch.as_tensor(where)] for t in shard.state))
        plan = mpc.act(state, shard.series.select(where),
                       np.array([p[0] for p in prices]), np.array([p[1] for p in prices]))
        expected |= {int(ids[k]): float(plan.battery_kw[j]) for j, k in enumerate(where)}
    sim.step()
    sim.close()
    homes = pd.read_parquet(tmp_path / "run" / "households").set_index("household")
    assert len(expected) == (policy == "mpc").sum() > 0
    got = homes.loc[list(expected), "battery_kw"].to_numpy()
    np.testing.assert_allclose(got, list(expected.values()), atol=1e-6)


def test_market_outcomes_bind_on_the_shipped_day(tmp_path):
    """The 1,000-household day: local prices follow local supply and demand, and what a
    household's order did not fill its reserve covers before the grid does."""
    config = load_config(CONFIGS / "ieee123_1000.toml")
    sim = Simulation.from_config(config, out=tmp_path, profiles=_profiles("ieee123_1000"))
    sim.run(progress=False)
    markets = pd.read_parquet(tmp_path / "markets")
    traded = markets[markets["volume_kwh"] > 1e-9]
    long = traded["supply_kwh"] > traded["demand_kwh"]
    assert long.sum() > 20 and (~long).sum() > 20
    # a market long in PV clears lower than one short of energy
    assert traded.loc[long, "price"].median() < traded.loc[~long, "price"].median() - 0.05
    # and prices are not a midpoint of two tariffs: they spread with the balance
    ratio = np.log(traded["supply_kwh"] / traded["demand_kwh"])
    assert np.corrcoef(ratio, traded["price"])[0, 1] < -0.5
    assert (traded["price"].round(6) == 0.19).mean() < 0.05
    homes = pd.read_parquet(tmp_path / "households")
    unfilled = homes["bid_kwh"] - homes["traded_kwh"]
    # the grid only takes what the household's own reserve could not: never more than
    # the unfilled order, never the other way
    assert (homes["grid_kwh"].abs() <= unfilled.abs() + 1e-9).all()
    assert (homes["grid_kwh"] * unfilled >= -1e-12).all()
    # some households did cover an unfilled order themselves (a battery, a heat pump)
    covered = (unfilled.abs() - homes["grid_kwh"].abs()) > 1e-6
    assert covered.sum() > 100
    # limit prices lie between each household's own export and import price
    assert (homes["limit_price"] >= homes["export_price"] - 1e-12).all()
    assert (homes["limit_price"] <= homes["import_price"] + 1e-12).all()
    assert homes.loc[homes["bid_kwh"] != 0, "limit_price"].nunique() > 1000
