"""`[grid] controls = "opendss"`: the feeder's regulators act between co-simulation steps.

IEEE 13's three regulators are frozen by OpenDSS at the full design load; the small
scenario's households draw a fraction of it, so with the controls in the loop the taps come
down at the first step and stay there, carried from step to step and across a resume.
(The controls' agreement with OpenDSS over a day of moving taps is tests/grid/test_controls.)
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cosim.backends import LocalBackend, PhaseError, RayBackend
from cosim.config import ConfigError
from cosim.scenario import build
from cosim.simulation import Simulation
from grid import load_feeder
from grid.controls import Controls

from .conftest import fail_dispatch, small, synthetic_profiles

TABLES = ("grid", "buses", "controls", "households", "system")


def _run(config, folder, resume=False):
    if resume:
        sim = Simulation.resume(folder, LocalBackend(), profiles=synthetic_profiles(homes=30))
    else:
        sim = Simulation(build(config, synthetic_profiles(homes=30)), LocalBackend(), folder)
    sim.run(progress=False)
    return sim


@pytest.fixture(scope="module")
def controlled(tmp_path_factory):
    config = small(grid={"controls": "opendss"})
    folder = tmp_path_factory.mktemp("controlled")
    sim = _run(config, folder)
    return config, list(sim.scenario.connections), folder


def test_a_bad_controls_value_names_the_field():
    assert small().grid.controls == "frozen"
    with pytest.raises(ConfigError, match=r"grid\.controls: Input should be 'frozen' or "
                                          r"'opendss' \(got 'smart'\)"):
        small(grid={"controls": "smart"})


def test_frozen_runs_record_no_controls(tmp_path):
    _run(small(run={"steps": 2}), tmp_path)
    assert not (tmp_path / "controls").exists()
    assert "tap_changes" not in pd.read_parquet(tmp_path / "grid").columns


def test_taps_move_and_are_recorded_every_step(controlled):
    config, _, folder = controlled
    table = pd.read_parquet(folder / "controls")
    taps = table.pivot(index="step", columns="control", values="position")
    assert list(taps.index) == list(range(config.run.steps))
    assert sorted(taps.columns) == ["reg1", "reg2", "reg3"]
    frozen = Controls(load_feeder("ieee13")).positions()
    assert (taps.iloc[0] < pd.Series(frozen)[taps.columns]).all()  # light load: taps down
    grid = pd.read_parquet(folder / "grid")
    assert grid["controls_settled"].all() and grid["converged"].all()
    assert grid["tap_changes"].iloc[0] > 0
    # the grid table's tap moves are the steps' differences of the recorded positions
    moves = taps.diff().abs().sum(axis=1).iloc[1:].astype(int)
    assert moves.tolist() == grid["tap_changes"].iloc[1:].tolist()


def test_a_replay_through_controls_gives_the_recorded_taps_and_voltages(controlled):
    """The grid actor's loop, done again outside the co-simulation from its injections."""
    config, connections, folder = controlled
    households = pd.read_parquet(folder / "households")
    homes = pd.read_parquet(folder / "homes.parquet")
    buses = pd.read_parquet(folder / "buses")
    table = pd.read_parquet(folder / "controls")
    controls = Controls(load_feeder("ieee13"), connections)
    for step in range(config.run.steps):
        rows = households[households.step == step].merge(
            homes[["household", "connection"]], on="household", validate="1:1")
        sums = rows.groupby("connection")[["net_kw", "q_kvar"]].sum().reindex(
            range(len(connections)), fill_value=0.0)
        solved = controls.step(6 * 3600.0 + (step + 1) * config.run.dt_s, -sums.net_kw.to_numpy(),
                               -sums.q_kvar.to_numpy(), load_scale=0.0)
        recorded = table[table.step == step].set_index("control")["position"].to_dict()
        assert controls.positions() == recorded, f"step {step}"
        v_pu = buses[buses.step == step].sort_values("node")["v_pu"].to_numpy()
        ours = solved.result.vmag_pu[0].numpy()
        assert np.nanmax(np.abs(ours - v_pu)) <= 1e-7, f"step {step}"


def test_a_resumed_run_keeps_its_taps(tmp_path, monkeypatch):
    config = small(grid={"controls": "opendss"})
    full, broken = tmp_path / "full", tmp_path / "broken"
    _run(config, full)
    restore = fail_dispatch(monkeypatch)
    with pytest.raises(PhaseError):
        _run(config, broken)
    restore()
    _run(config, broken, resume=True)
    assert json.loads((broken / "manifest.json").read_text())["status"] == "complete"
    for name in TABLES:
        pd.testing.assert_frame_equal(
            pd.read_parquet(full / name).reset_index(drop=True),
            pd.read_parquet(broken / name).reset_index(drop=True), check_exact=True, obj=name)


def test_ray_gives_the_same_taps(ray_cluster, controlled, tmp_path):
    config, _, folder = controlled
    Simulation(build(config, synthetic_profiles(homes=30)), RayBackend(), tmp_path).run(
        progress=False)
    for name in TABLES:
        pd.testing.assert_frame_equal(
            pd.read_parquet(folder / name).reset_index(drop=True),
            pd.read_parquet(tmp_path / name).reset_index(drop=True), check_exact=True, obj=name)
