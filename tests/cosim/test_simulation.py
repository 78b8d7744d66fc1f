"""The simulation end to end: balances every step, records, determinism, resume, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pytest

from cosim.actors.households import HouseholdShard
from cosim.backends import LocalBackend, PhaseError, PhaseTimeout
from cosim.messages import MessageError
from cosim.scenario import build
from cosim.simulation import Simulation

from .conftest import fail_dispatch, synthetic_profiles

TABLES = ("households", "buses", "lines", "trades", "markets", "prices", "exogenous", "grid",
          "system")


def _run(config, folder, backend=None, resume=False, **kwargs):
    if resume:
        sim = Simulation.resume(folder, backend or LocalBackend(),
                                profiles=synthetic_profiles(homes=30))
    else:
        sim = Simulation(build(config, synthetic_profiles(homes=30)), backend or LocalBackend(),
                         folder)
    return sim, sim.run(progress=False, **kwargs)


def _tables(folder):
    return {t: pd.read_parquet(folder / t).reset_index(drop=True) for t in TABLES}


def _assert_same_records(a, b):
    for table in TABLES:
        pd.testing.assert_frame_equal(a[table], b[table], check_exact=True, obj=table)


def test_every_step_balances_money_markets_and_kirchhoff(small_config, tmp_path):
    _, summary = _run(small_config, tmp_path)
    system = pd.read_parquet(tmp_path / "system")
    assert len(system) == small_config.run.steps
    assert system["converged"].all()
    assert system["money_balance"].abs().max() <= 1e-9
    assert system["market_imbalance_kwh"].max() <= 1e-9
    assert system["market_money_imbalance"].max() <= 1e-9  # uniform price: budget balance
    # Kirchhoff from the voltages and Y alone. Its floor is rounding through the feeder's
    # stiffest branches (about 1e-5 kW on IEEE 13), so it is held to 1e-6 of the rating.
    rating_kw = 3466.0  # IEEE 13's nominal load
    assert (system["kcl_mismatch_kw"].abs() <= 1e-6 * rating_kw).all()
    # every party's money was booked, and the households paid something
    money = [c for c in system if c.startswith("money_") and c != "money_balance"]
    assert {"money_households", "money_distributor", "money_aggregator-0",
            "money_market_operator", "money_wholesale"} <= set(money)
    assert summary["household_cost"] > 0 and summary["load_kwh"] > 0
    # the summary (from the rows in memory) against the table on disk, by pandas
    for key in ("load_kwh", "household_cost", "losses_kwh", "substation_kwh"):
        assert summary[key] == pytest.approx(system[key].sum(), rel=1e-12), key
    assert summary["v_min_pu"] == system["v_min_pu"].min()
    assert summary["max_kcl_mismatch_kw"] == system["kcl_mismatch_kw"].abs().max()
    assert summary["steps"] == len(system)


def test_devices_stay_within_limits_and_the_grid_sees_every_household(small_config,
                                                                      tmp_path):
    _run(small_config, tmp_path)
    static = pd.read_parquet(tmp_path / "homes.parquet")
    homes = pd.read_parquet(tmp_path / "households").merge(static, on="household")
    grid = pd.read_parquet(tmp_path / "grid")
    # the recorded device powers are the ones dispatched: they add up to the net draw
    devices = (homes.load_kw + homes.battery_kw + homes.ev_kw + homes.heat_pump_kw
               - homes.pv_kw - homes.generator_kw)
    np.testing.assert_allclose(devices, homes.net_kw, atol=1e-12)
    # the grid actor summed exactly the injections the shards recorded
    net = homes.groupby("step").net_kw.sum()
    np.testing.assert_allclose(grid.set_index("step").injections_kw, -net, atol=1e-9)
    # batteries stay within their state-of-charge bounds
    bounds = small_config.households.battery
    assert (homes.battery_energy_kwh >= bounds.soc_min * homes.battery_capacity_kwh - 1e-9).all()
    assert (homes.battery_energy_kwh <= bounds.soc_max * homes.battery_capacity_kwh + 1e-9).all()
    # every kind of device was used, and within its ratings
    for column, rating in (("ev_kw", "ev_charge_kw"), ("heat_pump_kw", "heat_pump_rating_kw"),
                           ("generator_kw", "generator_rating_kw")):
        assert (homes[column].abs() <= homes[rating] + 1e-9).all(), column
        assert (homes[column].abs() > 0).any(), column
    assert (homes.ev_energy_kwh <= homes.ev_capacity_kwh + 1e-9).all()
    assert ((homes.ev_kw < 0) <= homes.ev_v2g).all()  # only V2G chargers discharge
    assert (homes.backlog_kwh > 0).any() and (homes.curtailed_kw >= 0).all()
    # cars leave with their target charge; heated houses are in their band from 07:00
    assert (homes.ev_shortfall_kwh <= 1e-9).all()
    heated = homes[(homes.heat_pump_rating_kw > 0) & (homes.step >= 4)]
    assert len(heated) and (heated.indoor_c >= 18.0 - 1e-9).all()
    assert (heated.discomfort_kh <= 1e-12).all()
    assert len(static) == small_config.households.count
    scenario = build(small_config, synthetic_profiles(homes=30))
    assert list(static.connection_name) == [scenario.connections[c] for c in static.connection]


def test_records_read_with_pandas_polars_and_duckdb(small_config, tmp_path):
    _run(small_config, tmp_path)
    rows = len(pd.read_parquet(tmp_path / "households"))
    assert rows == small_config.households.count * small_config.run.steps
    assert len(pl.read_parquet(tmp_path / "households" / "*.parquet")) == rows
    count = duckdb.sql(f"SELECT count(*) FROM '{tmp_path}/households/*.parquet'").fetchall()[0][0]
    assert count == rows
    times = pd.read_parquet(tmp_path / "system")["time"]
    assert str(times.dt.tz) == "UTC" and (times.diff().dropna() == pd.Timedelta("15min")).all()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["seed"] == small_config.run.seed
    assert manifest["config"]["households"]["count"] == small_config.households.count
    assert {"python", "torch", "numpy"} <= set(manifest["versions"])
    # one part per checkpoint interval and shard
    assert len(list((tmp_path / "households").glob("part-*.parquet"))) == 3 * 3
    assert set(pd.read_parquet(tmp_path / "homes.parquet")["policy"]) == {"rule"}


def test_same_seed_same_records_and_different_seed_differs(small_config, tmp_path):
    _run(small_config, tmp_path / "a")
    _run(small_config, tmp_path / "b")
    _assert_same_records(_tables(tmp_path / "a"), _tables(tmp_path / "b"))
    other = small_config.model_copy(update={"run": small_config.run.model_copy(
        update={"seed": 8})})
    _run(other, tmp_path / "c")
    assert not _tables(tmp_path / "a")["households"].equals(_tables(tmp_path / "c")["households"])


def test_messages_grow_with_shards_not_households(small_config, tmp_path):
    counts = {}
    for households in (60, 240):
        config = small_config.model_copy(update={
            "run": small_config.run.model_copy(update={"record_messages": True, "steps": 2}),
            "households": small_config.households.model_copy(
                update={"count": households, "shard_size": households // 3}),
            "markets": small_config.markets.model_copy(
                update={"households_per_market": households // 3})})
        _run(config, tmp_path / str(households))
        log = pd.read_parquet(tmp_path / str(households) / "messages")
        counts[households] = (log["step"] == 1).sum()
        assert ((log["type"] == "BidBatch") & (log["step"] == 1)).sum() == 3  # one per shard
        assert set(log.loc[log["step"] == 1, "phase"]) == {
            "signal", "decide", "clear", "dispatch", "physics"}
        assert log.loc[log["type"] == "BidBatch", "rows"].sum() == 2 * households
    assert counts[60] == counts[240]


def test_a_failing_shard_names_itself_keeps_records_and_resumes(bank_config, tmp_path,
                                                                monkeypatch):
    # half the households act on a policy bank that reads last step's voltage: the resumed
    # run must restore it from the checkpoint to give the same records
    full = tmp_path / "full"
    _run(bank_config, full)
    broken = tmp_path / "broken"
    restore = fail_dispatch(monkeypatch)
    with pytest.raises(PhaseError, match=r"step 6, phase dispatch: shard-0001:.*inverter fault"):
        _run(bank_config, broken)
    # every completed step is on disk, nothing of the failed one
    assert sorted(pd.read_parquet(broken / "system")["step"]) == list(range(6))
    manifest = json.loads((broken / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "inverter fault" in manifest["error"]
    restore()
    _run(bank_config, broken, resume=True)
    _assert_same_records(_tables(full), _tables(broken))
    # the manifest of the resumed run carries no stale failure
    manifest = json.loads((broken / "manifest.json").read_text())
    assert manifest["status"] == "complete" and "error" not in manifest
    assert "failed_step" not in manifest
    # the resumed run's summary, from the system table on disk, is the straight run's,
    # from its rows in memory
    straight = json.loads((full / "manifest.json").read_text())["summary"]
    timing = ("wall_s", "household_steps_per_s")
    assert {k: v for k, v in manifest["summary"].items() if k not in timing} == \
        {k: v for k, v in straight.items() if k not in timing}


def test_bad_bids_are_rejected_with_a_reason_and_everyone_else_trades(small_config, tmp_path,
                                                                        monkeypatch):
    original = HouseholdShard.decide

    def bad_bids(self, step, inbox):
        (batch,) = original(self, step, inbox)
        if self.name == "shard-0002":
            quantity, market = batch.quantity_kwh.copy(), batch.market.copy()
            quantity[3] = np.nan
            market[4] += 100  # a market that does not exist
            return [batch.replace(quantity_kwh=quantity, market=market)]
        return [batch]

    monkeypatch.setattr(HouseholdShard, "decide", bad_bids)
    sim, _ = _run(small_config, tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["status"] == "complete"
    rejections = pd.read_parquet(tmp_path / "rejections")
    shard = sim.scenario.actors[[s.name for s in sim.scenario.actors].index("shard-0002")]
    ids = shard.kwargs["homes"].household
    per_step = rejections.groupby("step")
    assert per_step.size().eq(2).all() and len(per_step) == small_config.run.steps
    assert set(rejections.loc[rejections.household == ids[3], "reason"]) == {
        "quantity is not a finite number"}
    assert set(rejections.loc[rejections.household == ids[4], "reason"]) == {
        "order into a market the participant does not belong to"}
    households = pd.read_parquet(tmp_path / "households")
    rejected = households[households.household.isin(ids[3:5])]
    assert (rejected.traded_kwh == 0).all() and (rejected.rejected > 0).all()
    trades = pd.read_parquet(tmp_path / "trades")
    assert len(trades) > 0 and not trades.household.isin(ids[3:5]).any()
    monkeypatch.setattr(HouseholdShard, "decide", original)

    dispatch = HouseholdShard.dispatch

    def unknown_connection(self, step, inbox):
        batch, meters = dispatch(self, step, inbox)
        return [batch.replace(connection=batch.connection + 999), meters]

    monkeypatch.setattr(HouseholdShard, "dispatch", unknown_connection)
    with pytest.raises(PhaseError, match=r"step 0, phase physics: grid: .*InjectionBatch from "
                                         r"'shard-0000' at step 0: row 0: unknown grid "
                                         r"connection \d+"):
        _run(small_config, tmp_path / "bus")


def assert_times_out(sim: Simulation, steps: int, message: str, timeout: float) -> None:
    """After `steps` good steps, the next fails with `message` within the timeout plus a
    second."""
    sim.reset()
    for _ in range(steps):
        sim.step()
    start = time.monotonic()
    with pytest.raises(PhaseTimeout, match=message):
        sim.step()
    assert time.monotonic() - start < timeout + 1.0


def in_thread(fn: object) -> None:
    """Run `fn` in a thread of its own (the local backend then steps its actors in a
    worker thread, not under the main thread's watchdog); re-raise what it raised."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            raised.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if raised:
        raise raised[0]


@pytest.mark.parametrize("driven", ["main thread", "other thread"])
@pytest.mark.parametrize("how", ["spins", "sleeps"])
def test_slow_actor_times_out_in_time_naming_itself(small_config, tmp_path, monkeypatch, how,
                                                    driven):
    # long enough that a good step on a busy CI machine (its first decide warms torch up)
    # never hits it: 0.5 s once did
    config = small_config.model_copy(update={"run": small_config.run.model_copy(
        update={"phase_timeout_s": 2.0})})
    original = HouseholdShard.decide
    release = threading.Event()  # lets the hung call end once the test is over

    def slow(self, step, inbox):
        if self.name == "shard-0000" and step == 2:
            if how == "sleeps":  # blocks outside the interpreter
                release.wait(30)
            while not release.is_set():  # a hung policy
                pass
        return original(self, step, inbox)

    monkeypatch.setattr(HouseholdShard, "decide", slow)
    sim = Simulation(build(config, synthetic_profiles(homes=30)), LocalBackend(), tmp_path)

    def drive() -> None:
        assert_times_out(sim, 2, r"step 2, phase decide: shard-0000: no answer within 2 s",
                         2.0)
        assert (sim.backend._worker is None) == (driven == "main thread")

    if driven == "main thread":
        drive()
    else:  # started (and reset) on the main thread, stepped on another
        sim.reset()
        in_thread(drive)
        # the worker still blocks past its timeout: the main thread's watchdog must not
        # take it for a plan of the main thread's and interrupt this one
        time.sleep(3 * LocalBackend.WATCH_S)
    release.set()
    sim.close()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "no answer within 2 s" in manifest["error"]


def test_a_hanging_solver_times_out_in_time(small_config, tmp_path, monkeypatch):
    from agents.policies.mpc import MPC

    from .conftest import with_policies

    config = with_policies(small_config, tmp_path, policy_groups=[
        {"policy": "mpc", "share": 0.1}])
    config = config.model_copy(update={"run": config.run.model_copy(
        update={"phase_timeout_s": 1.0})})
    release = threading.Event()
    monkeypatch.setattr(MPC, "plan", lambda *args: release.wait(30))
    sim = Simulation(build(config, synthetic_profiles(homes=30)), LocalBackend())
    assert_times_out(sim, 0, r"step 0, phase decide: shard-\d+: no answer within 1 s", 1.0)
    release.set()
    sim.close()
    with pytest.raises(RuntimeError, match="the local backend is unusable: shard-\\d+ was "
                                           "interrupted at step 0, phase decide"):
        sim.backend.run([], {}, 1.0, {})


def test_message_validation():
    from cosim.messages import BidBatch, InjectionBatch

    with pytest.raises(MessageError, match="BidBatch from 'shard-9' at step 3: limit_price has "
                                           "2 rows, the message has 3"):
        BidBatch(3, "shard-9", household=[0, 1, 2], market=[0, 0, 0],
                 quantity_kwh=[1.0, 2.0, 3.0], limit_price=[0.3, 0.3])
    with pytest.raises(MessageError, match="p_kw is not finite at row 1"):
        InjectionBatch(0, "s", connection=[0, 1], p_kw=[1.0, np.inf],
                       q_kvar=[0.0, 0.0])
    # every payload is checked by one sum; one that overflows is checked field by field
    InjectionBatch(0, "s", connection=[0, 1], p_kw=[1e308, 1e308],
                   q_kvar=[0.0, 0.0])
    with pytest.raises(MessageError, match="q_kvar is not finite at row 0"):
        InjectionBatch(0, "s", connection=[0, 1], p_kw=[1e308, 1e308],
                       q_kvar=[-np.inf, 0.0])
    batch = InjectionBatch(0, "s", connection=[0, 1], p_kw=[1.0, 2.0],
                           q_kvar=[0.0, 0.0])
    table = batch.to_arrow()
    assert table.schema.equals(InjectionBatch.schema()) and table.num_rows == 2
    with pytest.raises(ValueError):
        batch.p_kw[0] = 5.0  # payloads are read-only


def test_cars_without_car_data_and_bad_devices_fail_at_build(small_config):
    import dataclasses

    from cosim.config import ConfigError

    carless = dataclasses.replace(synthetic_profiles(homes=30), ev_at_home=None,
                                  ev_trip_kwh=None)
    with pytest.raises(ConfigError, match=r"households.ev.share: the profile data has no car"):
        build(small_config, carless)
    # homes given by hand own exactly what they list
    raw = small_config.model_dump()
    raw["households"] |= {"count": 2, "homes": [
        {"profile": 0}, {"profile": 1, "ev_kwh": 50.0, "ev_kw": 7.0, "ev_v2g": True,
                         "generator_kw": 3.0}]}
    static = build(type(small_config).model_validate(raw),
                   synthetic_profiles(homes=30)).households
    assert list(static["ev_capacity_kwh"]) == [0.0, 50.0] and list(static["ev_v2g"]) == [0, 1]
    assert list(static["generator_rating_kw"]) == [0.0, 3.0]
    assert list(static["flexible_share"]) == [0.0, 0.0] and list(static["pv_kwp"]) == [0, 0]


# -- driven from outside ----------------------------------------------------------------

def _drive(config, backend, folder, seed=0):
    """Step a scenario of external households on random actions; returns what it saw."""
    from agents.households import ACTIONS

    sim = Simulation(build(config, synthetic_profiles(homes=30)), backend, folder)
    rng = np.random.default_rng(seed)
    seen = {"obs": [sim.reset()], "bill": [], "actions": [], "price": []}
    while True:
        actions = rng.uniform(-1, 1, (sim.n_households, len(ACTIONS)))
        result = sim.step(actions)
        seen["actions"].append(actions)
        seen["bill"].append(result.costs.bill)
        seen["price"].append(result.markets["price"])
        if result.done:
            break
        seen["obs"].append(result.observations)
    sim.close()
    return {k: np.array(v) for k, v in seen.items()}


def test_step_with_external_actions_is_identical_on_both_backends(ray_cluster, small_config,
                                                                  tmp_path):
    from cosim.backends import RayBackend

    from .conftest import with_policies

    config = with_policies(small_config, tmp_path, policy="external")
    local = _drive(config, LocalBackend(), tmp_path / "local")
    ray = _drive(config, RayBackend(), tmp_path / "ray")
    for key in local:
        np.testing.assert_array_equal(local[key], ray[key], err_msg=key)
    _assert_same_records(_tables(tmp_path / "local"), _tables(tmp_path / "ray"))
    # the actions decide: other actions, other bills
    other = _drive(config, LocalBackend(), tmp_path / "other", seed=1)
    assert not np.allclose(other["bill"], local["bill"])


def test_observations_are_local_and_carry_last_steps_voltage(small_config, tmp_path):
    from agents.households import ACTIONS, FIELDS

    from .conftest import with_policies

    config = with_policies(small_config, tmp_path, policy="external")
    seen = _drive(config, LocalBackend(), tmp_path / "run")
    steps, n = config.run.steps, config.households.count
    assert seen["obs"].shape == (steps, n, len(FIELDS))
    homes = pd.read_parquet(tmp_path / "run" / "households").sort_values(["step", "household"])
    recorded = homes["voltage_pu"].to_numpy().reshape(steps, n)
    voltage = seen["obs"][..., FIELDS.index("voltage")] * 0.05 + 1.0
    # before the first power flow every household reads 1 p.u.; afterwards the voltage at
    # its own connection in the previous step, exactly as the grid actor solved it
    np.testing.assert_array_equal(voltage[0], 1.0)
    np.testing.assert_allclose(voltage[1:], recorded[:-1], rtol=0, atol=1e-12)
    # its own prices: what its retailer published for the step
    buy = homes["import_price"].to_numpy().reshape(steps, n)
    np.testing.assert_allclose(seen["obs"][..., FIELDS.index("buy_price")] * 0.3, buy,
                               atol=1e-12)
    # and its own devices: the battery's state of charge at the step's start
    soc = seen["obs"][1:, :, FIELDS.index("battery_soc")]
    static = pd.read_parquet(tmp_path / "run" / "homes.parquet").sort_values("household")
    capacity = static["battery_capacity_kwh"].to_numpy()
    energy = homes["battery_energy_kwh"].to_numpy().reshape(steps, n)[:-1]
    np.testing.assert_allclose(soc, np.where(capacity > 0, energy / np.where(
        capacity > 0, capacity, 1), 0.0), atol=1e-12)
    assert len(ACTIONS) == seen["actions"].shape[-1]


def test_step_api_errors_are_clear(small_config, tmp_path):
    from .conftest import with_policies

    config = with_policies(small_config, tmp_path, policy="external")
    sim = Simulation(build(config, synthetic_profiles(homes=30)), LocalBackend())
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        sim.step()
    sim.reset()
    with pytest.raises(ValueError, match=r"60 households have policy \"external\": pass their "
                                         r"actions to step\(\)"):
        sim.step()
    with pytest.raises(ValueError, match=r"actions must be \(60, 6\)"):
        sim.step(np.zeros((60, 5)))
    bad = np.zeros((60, 6))
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match=r"household 7: actions are not finite"):
        sim.step(bad)
    for _ in range(config.run.steps):
        result = sim.step(np.zeros((60, 6)))
    assert result.done and result.observations is None
    with pytest.raises(RuntimeError, match=r"all have run; call reset\(\)"):
        sim.step(np.zeros((60, 6)))
    # reset replays the same scenario from its start, the same way
    first = sim.reset()
    again = sim.step(np.zeros((60, 6)))
    sim.reset()
    np.testing.assert_array_equal(sim.observations(), first)
    np.testing.assert_array_equal(sim.step(np.zeros((60, 6))).costs.bill, again.costs.bill)
    sim.close()


def test_records_can_be_switched_off_for_training(small_config, tmp_path):
    sim = Simulation(build(small_config, synthetic_profiles(homes=30)), LocalBackend())
    sim.reset()
    results = [sim.step() for _ in range(small_config.run.steps)]
    assert sim.close() is None and not any(tmp_path.iterdir())
    recorded = Simulation(build(small_config, synthetic_profiles(homes=30)), LocalBackend(),
                          tmp_path / "rec")
    recorded.reset()
    again = [recorded.step() for _ in range(small_config.run.steps)]
    recorded.close()
    for a, b in zip(results, again):
        np.testing.assert_array_equal(a.costs.bill, b.costs.bill)
        assert a.system == b.system
    assert results[-1].done and results[0].grid.converged
    assert set(results[0].markets) == {"market", "price", "volume_kwh", "demand_kwh",
                                       "supply_kwh", "unmatched_demand_kwh",
                                       "unmatched_supply_kwh"}


EXIT_SCRIPT = """
import sys, threading, weakref
from tests.cosim.conftest import small, synthetic_profiles
from cosim.scenario import build
from cosim.simulation import Simulation

sim = Simulation(build(small(), synthetic_profiles(homes=30)), "local", sys.argv[1])
if sys.argv[2] == "other thread":  # as the viewer steps it: the backend's worker thread
    sim.reset()
    thread = threading.Thread(target=lambda: [sim.step() for _ in range(3)])
    thread.start()
    thread.join()
sim.run(progress=False)
backend = weakref.ref(sim.backend)
del sim
print("freed" if backend() is None else "held by a thread")
"""


@pytest.mark.parametrize("driven", ["main thread", "other thread"])
def test_a_process_that_drops_its_simulation_exits_cleanly(tmp_path, driven):
    # The backend's threads once held the last reference to it: the actors were freed on
    # a daemon thread while the interpreter exited, and the process aborted (exit code 134,
    # "terminate called without an active exception") after a complete run.
    root = Path(__file__).parents[2]
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, str(tmp_path / "run"), driven],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "freed"
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "complete"
