"""The baselines table: each row is the policy it names, summed as a recorded run sums it,
and the perfect-foresight optimum is no worse than any other policy where that is exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents.households import ACTIONS, FIELDS, SIGNED_ACTIONS
from agents.households.composition import Households
from agents.policies.bank import PolicyBank
from agents.policies.mpc import MPC, MPCConfig
from cosim.actors.retail import Distributor
from cosim.config import ConfigError
from cosim.records import RunFolder
from cosim.simulation import Simulation
from experiments.mahtm_scores import without_storage
from experiments.rl.baselines import (
    BASELINES,
    COLUMNS,
    compare,
    format_table,
    main,
    scenarios,
    totals,
)
from tests.cosim.conftest import scenario_config, small, synthetic_profiles, with_policies

HOMES = 12
PROFILES = synthetic_profiles(homes=HOMES)


def mixed(**households: object) -> object:
    """Twelve households with every device kind (`households` keys changed), two markets and
    an aggregator, 4 steps."""
    return small(run={"steps": 4},
                 households={"count": HOMES, "shard_size": 6, "battery": {"share": 0.5},
                             "pv": {"share": 0.6}, "ev": {"share": 0.4, "soc_initial": 0.78},
                             "heat_pump": {"share": 0.3, "indoor_initial_c": 18.5},
                             "flexible_load": {"share": 0.3}, "generator": {"share": 0.1}}
                 | households, markets={"households_per_market": 6})


def tariff_only() -> object:
    """Eight homes with a battery (half with PV), each alone in its market, all on the
    distributor's time-of-use tariff, from 15:00 into the 17:00 peak: every price a
    household pays is known in advance and nothing but the battery can be steered, so the
    whole-episode MPC is the exact optimum of the bill."""
    return small(run={"steps": 12, "start": "2026-06-01T15:00:00Z"},
                 households={"count": 8, "shard_size": 8, "battery": {"share": 1.0},
                             "pv": {"share": 0.5}, "ev": {"share": 0.0},
                             "heat_pump": {"share": 0.0}, "flexible_load": {"share": 0.0},
                             "generator": {"share": 0.0}},
                 markets={"households_per_market": 1}, aggregators={"count": 0})


def recorded(config: object, folder: Path) -> dict[str, float]:
    """The table's columns summed from a recorded run's Parquet tables (no wall_s)."""
    Simulation.from_config(config, out=folder, profiles=PROFILES).run(progress=False)
    run = RunFolder(folder)
    homes = run.read("households").to_pandas()
    system = run.read("system").to_pandas()
    ok = system["converged"].astype(bool)
    return {"cost": homes["cost"].sum() + homes["operating_cost"].sum(),
            "bill": homes["cost"].sum(), "emissions_kg": homes["emissions_kg"].sum(),
            "voltage_violations": system.loc[ok, "violations"].sum(),
            "losses_kwh": system.loc[ok, "losses_kwh"].sum(),
            "discomfort_kh": homes["discomfort_kh"].sum(),
            "ev_shortfall_kwh": homes["ev_shortfall_kwh"].sum(),
            "nonconverged_steps": (~ok).sum()}


def assert_row(row: dict[str, float], reference: dict[str, float]) -> None:
    for key, value in reference.items():
        assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key


def test_every_row_puts_one_policy_on_every_household(tmp_path):
    # groups and explicit homes that name their own policies: the rows override them all
    homes = [{"profile": k, "battery_kwh": 5.0, "battery_kw": 2.5,
              "policy": ("mpc", "bank", "external")[k % 3]} for k in range(HOMES)]
    config = with_policies(mixed(), tmp_path, homes=homes, policy_groups=[
        {"policy": "mpc", "share": 0.3}, {"policy": "bank", "share": 0.3}])
    bank = tmp_path / "trained.pt"
    rows = scenarios(config, {"trained": bank})
    assert list(rows) == [*BASELINES, "trained"]
    for name, policy in zip(rows, ("rule", "rule", "mpc", "mpc", "bank")):
        hh = rows[name].households
        assert hh.policy == policy and hh.policy_groups == [], name
        assert all(home.policy is None for home in hh.homes), name
        assert rows[name].run.on_nonconvergence == "record", name  # failures are counted
    assert rows["no battery"].households.battery.share == 0
    assert all(home.battery_kwh == home.battery_kw == 0
               for home in rows["no battery"].households.homes)
    assert rows["trained"].policies.bank.path == bank.resolve()
    # the mpc row looks 4 h (16 steps of 15 min) ahead, with a forecast that long
    assert rows["mpc"].policies.mpc.horizon == 16
    assert rows["mpc"].run.forecast_horizon >= 16
    assert scenarios(config, mpc_horizon=3)["mpc"].policies.mpc.horizon == 3
    # the optimum plans over the whole episode, stored energy worth nothing at its end
    optimum = rows["optimum"]
    assert optimum.policies.mpc.horizon == optimum.run.steps == 4
    assert optimum.run.forecast_horizon >= 4 and optimum.policies.mpc.terminal_value == 0
    with pytest.raises(ConfigError, match="bank name 'rule' is a baseline's"):
        scenarios(config, {"rule": bank})


def test_rule_and_no_battery_rows_sum_what_recorded_runs_record(tmp_path):
    config = mixed()
    rows = scenarios(config)
    rule = totals(rows["rule"], PROFILES)
    bare = totals(rows["no battery"], PROFILES)
    assert_row(rule, recorded(config, tmp_path / "rule"))  # the scenario's own policy: rule
    assert_row(bare, recorded(without_storage(config), tmp_path / "bare"))
    homes = RunFolder(tmp_path / "bare").read("households").to_pandas()
    assert (homes["battery_kw"] == 0).all() and (homes["battery_energy_kwh"] == 0).all()
    with_batteries = RunFolder(tmp_path / "rule").read("households").to_pandas()
    assert (with_batteries["battery_kw"] != 0).any()
    assert rule["cost"] != pytest.approx(bare["cost"], abs=1e-6)  # the batteries did something
    assert rule["nonconverged_steps"] == 0 and rule["wall_s"] > 0


def test_a_bank_row_runs_the_bank(tmp_path):
    config = mixed()
    on_bank = with_policies(config, tmp_path, policy="bank")  # writes tmp_path / bank.pt
    row = totals(scenarios(config, {"trained": tmp_path / "bank.pt"})["trained"], PROFILES)
    sim = Simulation.from_config(on_bank, record=False, profiles=PROFILES)
    sim.reset()
    cost = emissions = 0.0
    for _ in range(sim.total):
        result = sim.step()
        cost += result.costs.bill.sum() + result.costs.operating_cost.sum()
        emissions += result.costs.emissions_kg.sum()
    sim.close()
    assert row["cost"] == pytest.approx(cost, rel=1e-9)
    assert row["emissions_kg"] == pytest.approx(emissions, rel=1e-9)
    rule = totals(scenarios(config)["rule"], PROFILES)
    assert row["cost"] != pytest.approx(rule["cost"], abs=1e-6)


def test_a_failed_power_flow_is_counted_not_hidden(tmp_path):
    # sixty homes, each 200 times its size, on IEEE 13 in the evening: from the third step
    # on the power flow has no solution (tests/cosim/test_run_status.py)
    heavy = scenario_config(
        run={"name": "heavy", "seed": 7, "steps": 4, "start": "2026-06-01T17:00:00Z",
             "on_nonconvergence": "record"},
        grid={"feeder": "ieee13"}, households={"count": 60, "shard_size": 30,
                                               "size_factor": 200.0})
    profiles = synthetic_profiles(homes=30)
    # the file says "stop", the table goes on and counts
    row = totals(scenarios(heavy.model_copy(update={"run": heavy.run.model_copy(
        update={"on_nonconvergence": "stop"})}))["rule"], profiles)
    Simulation.from_config(heavy, out=tmp_path, profiles=profiles).run(progress=False)
    system = RunFolder(tmp_path).read("system").to_pandas()
    ok = system["converged"].astype(bool)
    assert row["nonconverged_steps"] == (~ok).sum() == 2
    assert row["losses_kwh"] == pytest.approx(system.loc[ok, "losses_kwh"].sum(), rel=1e-9)
    assert np.isfinite(row["losses_kwh"]) and row["losses_kwh"] > 0
    table = pd.DataFrame([row], index=pd.Index(["rule"], name="policy"))
    assert "rule (2)" in format_table(table) and "converged steps only" in format_table(table)


def whole_episode_lp(config: object) -> float:
    """The sum over households of the optimal value of one MPC program over the whole
    episode, made here from the scenario's own arrays and the distributor's price table."""
    sim = Simulation.from_config(config, record=False, profiles=PROFILES)
    specs = {spec.name: spec for spec in sim.scenario.actors}
    sim.close()
    dt_h = config.run.dt_s / 3600
    prices = Distributor("distributor", **specs["distributor"].kwargs).table()  # [steps, 2]
    value = 0.0
    for name in (n for n in specs if n.startswith("shard")):
        homes = specs[name].kwargs["homes"]
        households = Households.create(homes.household.tolist(), **homes.devices)
        mpc = MPC(households, dt_h, MPCConfig(horizon=config.run.steps, terminal_value=0.0))
        plan = mpc.plan(households.initial_state(dt_h, **homes.initial), homes.series(dt_h),
                        prices[:, 0], prices[:, 1])
        value += plan.cost.sum()
    return value


def test_the_optimum_is_the_whole_episode_optimum_and_no_worse_than_any_row(tmp_path):
    config = tariff_only()
    PolicyBank(8, len(FIELDS), len(ACTIONS), hidden=(8,), squash=SIGNED_ACTIONS,
               seed=3).save(tmp_path / "bank.pt", FIELDS, ACTIONS)
    table = compare(config, {"trained": tmp_path / "bank.pt"}, profiles=PROFILES,
                    mpc_horizon=2, progress=False)
    assert list(table.index) == [*BASELINES, "trained"] and list(table.columns) == list(COLUMNS)
    assert table.index.name == "policy" and (table["nonconverged_steps"] == 0).all()
    # nothing but the battery has a cost: cost is the bill, the MPC's whole objective
    assert np.allclose(table["cost"], table["bill"], atol=1e-12)
    optimum = table.loc["optimum", "cost"]
    # re-planning every step from where the last plan led keeps to the first plan's value
    assert optimum == pytest.approx(whole_episode_lp(config), rel=1e-6, abs=1e-6)
    # every other row is one feasible plan of the same program
    assert (optimum <= table["cost"] + 1e-6).all()
    # the stored energy alone is worth something: strictly better than no battery
    assert optimum < table.loc["no battery", "cost"] - 1e-3
    assert "| optimum |" in format_table(table)


def test_bad_command_lines_say_what_is_wrong(tmp_path, capsys):
    config = Path(__file__).parents[2] / "experiments" / "configs" / "lv_55.toml"
    cases = [
        ([str(tmp_path / "nope.toml")], "nope.toml: scenario file not found"),
        ([str(config), "--bank", "trained"], "--bank 'trained': expected NAME=PATH"),
        ([str(config), "--bank", "=x.pt"], "--bank '=x.pt': expected NAME=PATH"),
        ([str(config), "--bank", f"trained={tmp_path / 'gone.pt'}"],
         f"policy bank file {tmp_path / 'gone.pt'} not found"),
        ([str(config), "--out", "table.txt"], "--out table.txt: write .csv or .parquet"),
        ([str(config), "--steps", "0"], "--steps 0: must be a positive whole number"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (argv, err)
    (tmp_path / "junk.pt").write_bytes(b"not a bank")
    assert main([str(config), "--bank", f"trained={tmp_path / 'junk.pt'}"]) == 2
    assert f"bank 'trained': {tmp_path / 'junk.pt'}: not a policy bank" in capsys.readouterr().err


def test_the_command_line_prints_and_writes_the_table(tmp_path, capsys):
    config = Path(__file__).parents[2] / "experiments" / "configs" / "mahtm_microgrid.toml"
    out = tmp_path / "table.csv"
    assert main([str(config), "--steps", "2", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert all(f"| {name} |" in printed for name in BASELINES)
    written = pd.read_csv(out)
    assert list(written["policy"]) == list(BASELINES)
    assert list(written.columns) == ["policy", *COLUMNS]
    assert (written["nonconverged_steps"] == 0).all() and written["cost"].notna().all()
