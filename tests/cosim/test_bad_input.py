"""Bad profile data sets for a scenario: each ends in one ConfigError naming the data set,
the table file, the column, and the home and timestamp where they apply."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from cosim.config import ConfigError, parse_config
from cosim.profiles import load_profiles, synthetic

HOMES, STEPS = 3, 8
START = "2026-06-01T00:00"


def _tables() -> dict:
    """A tiny data set in the layout of `cosim data generate` (agents.profiles), from the
    synthetic family: 3 homes (two with PV and a car), 8 steps of 15 minutes."""
    p = synthetic(homes=HOMES, steps=STEPS, start=START)
    time = pd.DatetimeIndex(p.time, tz="UTC")
    kwp = np.array([4.0, 0.0, 3.0])
    home = np.repeat(np.arange(HOMES, dtype=np.int32), STEPS)
    return {
        "homes": pd.DataFrame({"home": np.arange(HOMES, dtype=np.int32), "pv_kwp": kwp,
                               "has_ev": [True, False, True]}),
        "households": pd.DataFrame({
            "home": home, "time": np.tile(time, HOMES), "load_kw": p.load_kw.ravel(),
            "pv_kw": (p.pv_kw_per_kwp * kwp[:, None]).ravel(),
            "ev_at_home": p.ev_at_home.ravel(), "ev_trip_kwh": p.ev_trip_kwh.ravel()}),
        "exogenous": pd.DataFrame({
            "time": time, "outdoor_temp_c": p.temperature_c, "ghi_w_m2": p.ghi_w_m2,
            "wholesale_price_per_kwh": p.wholesale_price,
            "carbon_kg_per_kwh": p.carbon_intensity}),
        "manifest": {"dt_s": 900, "steps": STEPS},
    }


def _load(tmp_path, tables: dict):
    """Write `tables` as a data set folder and read it as a scenario would."""
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    for name in ("homes", "households", "exogenous"):
        tables[name].to_parquet(folder / f"{name}.parquet")
    (folder / "manifest.json").write_text(json.dumps(tables["manifest"]))
    config = parse_config({"profiles": {"dataset": "data"}}, tmp_path / "scenario.toml")
    return load_profiles(config)


def test_a_good_data_set_loads_whatever_its_row_order(tmp_path):
    tables = _tables()
    tables["households"] = tables["households"].sample(frac=1.0, random_state=0)
    data = _load(tmp_path, tables)
    expected = synthetic(homes=HOMES, steps=STEPS, start=START)
    np.testing.assert_allclose(data.load_kw, expected.load_kw)
    np.testing.assert_allclose(data.temperature_c, expected.temperature_c)
    assert data.time[0] == np.datetime64(START, "s") and data.load_kw.shape == (HOMES, STEPS)


def _drop_column(table: str, column: str):
    def edit(t: dict) -> None:
        t[table] = t[table].drop(columns=column)
    return edit


def _drop_row(table: str, home: int | None, step: int):
    def edit(t: dict) -> None:
        frame = t[table]
        hit = frame["time"] == pd.Timestamp(START, tz="UTC") + step * pd.Timedelta("15min")
        if home is not None:
            hit &= frame["home"] == home
        t[table] = frame[~hit]
    return edit


def _set(table: str, column: str, row: int, value: object):
    def edit(t: dict) -> None:
        frame = t[table].copy()
        if column == "time":
            frame[column] = frame[column].astype(object)
        frame.loc[frame.index[row], column] = value
        if column == "time":
            frame[column] = pd.to_datetime(frame[column], utc=True)
        t[table] = frame
    return edit


def _scale(table: str, column: str, factor: float):
    def edit(t: dict) -> None:
        t[table] = t[table].assign(**{column: t[table][column] * factor})
    return edit


def _duplicate(table: str, row: int):
    def edit(t: dict) -> None:
        t[table] = pd.concat([t[table], t[table].iloc[[row]]])
    return edit


def _at(step: int) -> str:
    return re.escape(str(pd.Timestamp(START, tz="UTC") + step * pd.Timedelta("15min")))


@pytest.mark.parametrize(("edit", "pattern"), [
    # missing columns
    (_drop_column("households", "load_kw"),
     r"households.parquet has no column 'load_kw' \(it has home, time, pv_kw"),
    (_drop_column("households", "ev_trip_kwh"), r"households.parquet has no column 'ev_trip_"),
    (_drop_column("exogenous", "carbon_kg_per_kwh"),
     r"exogenous.parquet has no column 'carbon_kg_per_kwh'"),
    (_drop_column("homes", "pv_kwp"), r"homes.parquet has no column 'pv_kwp'"),
    # missing, duplicated and off-grid timestamps
    (_drop_row("households", 1, 3), rf"households.parquet: home 1 lacks the step at {_at(3)} "
                                    r"\(1 of 24 home-steps like this\)"),
    (_drop_row("households", 2, 0), rf"households.parquet: home 2 lacks the step at {_at(0)}"),
    (_drop_row("households", None, STEPS - 1),  # every home ends early
     rf"households.parquet: home 0 lacks the step at {_at(STEPS - 1)} \(3 of 24 home-steps"),
    (_drop_row("exogenous", None, 5), rf"exogenous.parquet lacks the step at {_at(5)} "
                                      r"\(1 of 8 steps of 900 s missing"),
    (_duplicate("households", 4), rf"households.parquet: home 0 has the step at {_at(4)} twice"),
    (_duplicate("exogenous", 2), rf"exogenous.parquet: time {_at(2)} appears twice"),
    (_set("households", "time", STEPS + 2,  # home 1, step 2, seven minutes late
          pd.Timestamp(START, tz="UTC") + pd.Timedelta("37min")),
     r"households.parquet: home 1: time 2026-06-01 00:37:00\+00:00 is not on the grid of "
     r"900 s steps from 2026-06-01 00:00:00\+00:00 \(irregular spacing\)"),
    (_set("exogenous", "time", 3, pd.Timestamp(START, tz="UTC") + pd.Timedelta("50min")),
     r"exogenous.parquet: time 2026-06-01 00:50:00\+00:00 is not on the grid"),
    # values that are not numbers
    (_set("households", "load_kw", 2 * STEPS + 4, np.nan),
     rf"households.parquet: load_kw is nan at home 2 and time {_at(4)}"),
    (_set("households", "pv_kw", 1, np.inf),
     rf"households.parquet: pv_kw is inf at home 0 and time {_at(1)}"),
    (_set("households", "ev_trip_kwh", STEPS, -np.inf),
     rf"households.parquet: ev_trip_kwh is -inf at home 1 and time {_at(0)}"),
    (_set("exogenous", "outdoor_temp_c", 6, np.nan),
     rf"exogenous.parquet: outdoor_temp_c is nan at time {_at(6)}"),
    (_set("exogenous", "wholesale_price_per_kwh", 0, np.inf),
     rf"exogenous.parquet: wholesale_price_per_kwh is inf at time {_at(0)}"),
    (_set("exogenous", "carbon_kg_per_kwh", 7, np.nan),
     rf"exogenous.parquet: carbon_kg_per_kwh is nan at time {_at(7)}"),
    (_set("homes", "pv_kwp", 2, np.nan), r"homes.parquet: pv_kwp is nan at home 2"),
    # units
    (_scale("households", "load_kw", 1000.0),
     r"households.parquet: load_kw of home 0 averages \d+(\.\d+)? and peaks at \d+(\.\d+)?; "
     r"that looks like W, and load_kw must be in kW .* 3 of 3 homes are"),
])
def test_bad_data_set_names_data_set_table_column_and_where(tmp_path, edit, pattern):
    tables = _tables()
    edit(tables)
    with pytest.raises(ConfigError, match=pattern) as err:
        _load(tmp_path, tables)
    assert str(err.value).startswith(f"{tmp_path / 'data'}: "), err.value


def test_a_single_huge_peak_also_reads_as_watts(tmp_path):
    tables = _tables()
    tables["households"].loc[STEPS + 5, "load_kw"] = 3000.0  # home 1: 3 kW written as W
    with pytest.raises(ConfigError, match=r"load_kw of home 1 averages .* and peaks at 3000; "
                                          r"that looks like W"):
        _load(tmp_path, tables)


def test_a_folder_without_a_table_is_not_a_data_set(tmp_path):
    tables = _tables()
    _load(tmp_path, tables)
    (tmp_path / "data" / "exogenous.parquet").unlink()
    config = parse_config({"profiles": {"dataset": "data"}}, tmp_path / "scenario.toml")
    with pytest.raises(ConfigError, match=rf"profiles.dataset: {re.escape(str(tmp_path))}/data "
                                          r"is not a profile data set \(no exogenous.parquet\)"):
        load_profiles(config)
