"""The viewer's Mesa model over run folders (replay and live), the trade edges, the figures,
`cosim report`, and bad input: folders missing tables or columns, busy ports, bad command
lines."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cosim.cli import main
from cosim.simulation import Simulation
from cosim.viz.agents import GridAgent, HouseholdAgent, MarketAgent, RetailerAgent
from cosim.viz.figures import HouseholdFigure, MapFigure, SeriesFigure
from cosim.viz.model import FeederModel
from cosim.viz.records import RunFolderError, RunRecords
from cosim.viz.server import PortError, free_port
from cosim.viz.trades import trade_edges

from .conftest import small, synthetic_profiles

PROFILES = Path(__file__).parents[2] / "experiments" / "configs" / "profiles"

# small() of tests/cosim/conftest.py as a scenario file, for the live viewer
SMALL_TOML = """
[run]
name = "small"
seed = 7
steps = 12
checkpoint_every = 4
start = 2026-06-01T06:00:00Z

[grid]
feeder = "ieee13"

[households]
count = 60
shard_size = 25
battery = { share = 0.5 }
pv = { share = 0.6 }
ev = { share = 0.4, v2g_share = 0.5, soc_initial = 0.78 }
heat_pump = { share = 0.3, indoor_initial_c = 18.5 }
flexible_load = { share = 0.3 }
generator = { share = 0.1 }

[profiles]
dataset = "unused"

[markets]
households_per_market = 20

[tariff]
peak_import_price = 0.45
peak_hours = [17, 21]

[aggregators]
count = 1
customer_share = 0.3
"""


def make_run(folder: Path) -> Path:
    """small(): 60 households with every device, 3 markets and an aggregator on IEEE 13,
    12 steps, recorded into `folder` (about a second)."""
    Simulation.from_config(small(), record=True, out=folder,
                           profiles=synthetic_profiles(60, 96)).run(progress=False)
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("viz") / "run")


@pytest.fixture(scope="module")
def model(run_dir) -> FeederModel:
    return FeederModel(run_dir)


# -- trades as edges ---------------------------------------------------------------------------
def test_trade_edges_give_each_household_its_fill_and_stay_in_its_market():
    rng = np.random.default_rng(3)
    household = np.arange(40)
    market = rng.integers(0, 3, 40)
    kwh = rng.normal(0, 1, 40)
    for m in range(3):  # a market clears: bought equals sold
        mine = market == m
        sold, bought = -kwh[mine & (kwh < 0)].sum(), kwh[mine & (kwh > 0)].sum()
        kwh[mine & (kwh > 0)] *= sold / bought
    seller, buyer, energy = trade_edges(household, market, kwh)
    assert (energy > 0).all() and (kwh[seller] < 0).all() and (kwh[buyer] > 0).all()
    assert (market[seller] == market[buyer]).all()
    out = np.bincount(seller, energy, 40) - np.bincount(buyer, energy, 40)
    np.testing.assert_allclose(out, -kwh, atol=1e-12)
    assert len(energy) <= sum(np.unique(market[kwh != 0], return_counts=True)[1])


# -- the model ---------------------------------------------------------------------------------
def test_agents_sit_on_the_feeder_at_its_bus_coordinates(model):
    feeder = model.layout.feeder
    homes = model.records.homes
    assert len(model.agents_by_type[HouseholdAgent]) == 60
    assert len(model.agents_by_type[MarketAgent]) == homes["market"].nunique() == 3
    assert {a.name for a in model.agents_by_type[RetailerAgent]} == {"distributor",
                                                                   "aggregator-0"}
    assert len(model.agents_by_type[GridAgent]) == 1
    for agent in model.households[::7]:
        bus = homes["connection_name"][agent.index].split(".")[0]
        assert agent.cell.coordinate == bus
        assert model.grid.G.nodes[bus]["pos"] == pytest.approx(feeder.bus_coords[bus])
    # a household sits near its bus, closer than to any other bus with households
    home = model.layout.home_xy[0]
    bus_xy = model.layout.bus_xy[model.layout.home_bus[0]]
    others = model.layout.bus_xy[np.unique(model.layout.home_bus)]
    assert np.linalg.norm(home - bus_xy) == pytest.approx(
        np.linalg.norm(others - home, axis=1).min())


def test_stepping_and_seeking_show_the_recorded_step(model, run_dir):
    households = pd.read_parquet(run_dir / "households")
    buses = pd.read_parquet(run_dir / "buses")
    model.seek(0)
    assert model.steps == 0 and model.running
    model.step()
    model.step()
    assert model.steps == model.frame.step == 2
    expected = households[households.step == 2].sort_values("household")["net_kw"]
    np.testing.assert_allclose([h.net_kw for h in model.households], expected)
    # a bus's colour is its lowest phase's voltage
    node = model.layout.feeder.node_index("675.1")
    bus = model.layout.node_bus[node]
    phases = [model.layout.feeder.node_index(f"675.{p}") for p in (1, 2, 3)]
    v = buses[(buses.step == 2) & buses.node.isin(phases)]["v_pu"]
    assert model.frame.bus_v[bus] == pytest.approx(v.min())
    model.seek(99)  # past the end: the last step, and the model stops
    assert model.steps == model.frame.step == 11 and not model.running
    model.step()
    assert model.steps == 11 and model.error is None
    model.seek(5)
    assert model.steps == model.frame.step == 5 and model.running


def test_the_live_model_runs_the_simulation_and_matches_its_replay(tmp_path, run_dir):
    config = tmp_path / "small.toml"
    config.write_text(SMALL_TOML)
    live = FeederModel(config, live=True, live_folder=tmp_path / "live",
                       profiles=synthetic_profiles(60, 96))
    try:
        assert live.records.n_steps == 1 and live.last_step == 11
        live.step()
        live.seek(3)  # runs the simulation up to step 3
        assert live.records.n_steps == 4 and live.steps == 3
        replay = FeederModel(run_dir)
        replay.seek(3)
        np.testing.assert_allclose(live.frame.households["net_kw"],
                                   replay.frame.households["net_kw"])
        np.testing.assert_allclose(live.frame.bus_v, replay.frame.bus_v)
    finally:
        live.close()


def test_figures_change_with_the_step_and_only_then(model):
    figure = MapFigure(model.layout, model.records)
    model.seek(4)
    first = figure.draw(model.frame, model.frame.soc)
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure.draw(model.frame, model.frame.soc) == first
    soc = figure.draw(model.frame, model.frame.soc, "soc")
    model.seek(9)
    later = figure.draw(model.frame, model.frame.soc)
    assert len({first, soc, later}) == 3
    series = SeriesFigure(model.records)
    household = HouseholdFigure(model.records)
    assert series.draw(3) != series.draw(4)
    assert household.draw(5, 3) != household.draw(6, 3)


# -- bad input ---------------------------------------------------------------------------------
def _copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "copy"))


def test_a_folder_missing_a_table_or_column_names_what_is_missing(run_dir, tmp_path, capsys):
    folder = _copy(run_dir, tmp_path)
    shutil.rmtree(folder / "buses")
    with pytest.raises(RunFolderError, match="the 'buses' table is missing"):
        RunRecords(folder)
    assert main(["viz", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'buses'" in err and "Traceback" not in err

    folder = _copy(run_dir, tmp_path / "old")
    for part in (folder / "households").glob("*.parquet"):  # as an older version wrote it
        table = pq.read_table(part)
        pq.write_table(table.drop_columns(["voltage_pu", "bid_kwh"]), part)
    with pytest.raises(RunFolderError, match="lacks the column.s. bid_kwh, voltage_pu"):
        RunRecords(folder)

    (folder / "manifest.json").unlink()
    with pytest.raises(RunFolderError, match="no manifest.json"):
        RunRecords(folder)
    manifest = {"created": "2025-01-01"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunFolderError, match="older version"):
        RunRecords(folder)


@pytest.mark.parametrize("argv, message", [
    (["viz", "{missing}"], "no such run folder"),
    (["viz", "{run}", "--live"], "--live runs a scenario file"),
    (["viz", "{run}/manifest.json"], "replay takes a run folder"),
    (["viz", "{run}", "--port", "http"], "must be a port number"),
    (["report", "{run}", "--steps", "40"], "the run recorded steps 0 to 11"),
    (["report", "{missing}"], "no such run folder"),
])
def test_bad_command_lines_exit_2_with_one_clear_line(run_dir, tmp_path, capsys, argv,
                                                      message):
    argv = [a.format(run=run_dir, missing=tmp_path / "nowhere") for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_busy_port_moves_to_the_next_free_one_or_says_none_is():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert free_port("127.0.0.1", port) not in (port, 0)
        with pytest.raises(PortError, match=f"ports {port} to {port} on 127.0.0.1 are all in"):
            free_port("127.0.0.1", port, tries=1)


# -- the report ----------------------------------------------------------------------------------
SCENARIO = f"""
[run]
name = "report"
seed = 3
start = 2024-06-03T10:00:00Z
steps = 4
dt_s = 3600

[grid]
feeder = "ieee13"

[households]
count = 20
shard_size = 10
battery = {{ share = 0.5 }}

[profiles]
generator = "{PROFILES / 'mahtm.toml'}"
"""


def test_cosim_run_names_the_report_which_writes_every_picture(tmp_path, capsys):
    config = tmp_path / "scenario.toml"
    config.write_text(SCENARIO)
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    assert f"cosim report {out}" in capsys.readouterr().out
    assert main(["report", str(out), "--steps", "0", "3"]) == 0
    markdown = out / "report" / "report.md"
    assert f"report: {markdown}" in capsys.readouterr().out
    text = markdown.read_text()
    for name in ("voltage_profile", "voltage_heatmap", "prices", "trades", "stored_energy",
                 "bills"):
        png = out / "report" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert f"]({name}.png)" in text
    assert "(steps 0, 3)" in text and "20 households on ieee13, 4 of 4 steps" in text
