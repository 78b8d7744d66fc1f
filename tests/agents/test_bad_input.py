"""Bad input: CSVs with gaps, wrong units or a wrong resolution, and bad configs, each ending
in one error that names the file, the column or key, and the row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agents.profiles.config import load_config
from agents.profiles.csvinput import read_series_csv
from agents.profiles.errors import ProfileError
from agents.profiles.generate import generate, read_dataset
from agents.profiles.realdata import csv_days


def _load_csv(path, n_days=2, step_min=15, scale=1.0, homes=("a", "b")):
    times = pd.date_range("2024-01-01", periods=n_days * 1440 // step_min, freq=f"{step_min}min")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"time": times.strftime("%Y-%m-%dT%H:%M:%S")})
    for h in homes:
        frame[h] = np.round(rng.uniform(0.1, 2.0, len(times)) * scale, 4)
    frame.to_csv(path, index=False)
    return frame


def test_a_good_profile_csv_gives_whole_days(tmp_path):
    _load_csv(tmp_path / "p.csv", n_days=3, step_min=5)
    days = csv_days(tmp_path / "p.csv")
    assert len(days) == 6 and days.kw.shape == (6, 96)
    assert set(days.home) == {"csv-a", "csv-b"} and sorted(set(days.day)) == [0, 1, 2]


def test_gap_names_file_column_and_row(tmp_path):
    frame = _load_csv(tmp_path / "p.csv")
    frame.loc[41, "b"] = None
    frame.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ProfileError) as err:
        csv_days(tmp_path / "p.csv")
    msg = str(err.value)
    assert "p.csv" in msg and "column 'b'" in msg and "row 42" in msg and "fill" in msg


def test_gaps_are_filled_only_when_asked_and_linearly(tmp_path):
    frame = _load_csv(tmp_path / "p.csv")
    truth = frame["a"].to_numpy().copy()
    frame.loc[10:11, "a"] = None  # two missing values between rows 10 and 13
    frame.to_csv(tmp_path / "p.csv", index=False)
    table, step = read_series_csv(tmp_path / "p.csv", ["a"], "load", "kW", fill="linear")
    assert step == 900
    expected = np.interp([1, 2], [0, 3], [truth[9], truth[12]])
    np.testing.assert_allclose(table["a"].to_numpy()[10:12], expected)
    np.testing.assert_allclose(np.delete(table["a"].to_numpy(), [10, 11]),
                               np.delete(truth, [10, 11]))


def test_gap_too_long_or_at_the_edge_is_still_an_error(tmp_path):
    frame = _load_csv(tmp_path / "p.csv")
    frame.loc[20:30, "a"] = None  # 11 steps, 2.75 h
    frame.loc[0, "b"] = None
    frame.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ProfileError, match=r"column 'a', row 21 to 31: gap of 11 steps"):
        read_series_csv(tmp_path / "p.csv", ["a"], "load", "kW", fill="linear")
    with pytest.raises(ProfileError, match=r"column 'b', row 1: gap at the start"):
        read_series_csv(tmp_path / "p.csv", ["b"], "load", "kW", fill="linear")


def test_missing_timestamps_are_gaps(tmp_path):
    frame = _load_csv(tmp_path / "p.csv").drop(index=[50, 51])
    frame.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ProfileError, match=r"between row 50 and row 51 \(2 missing step"):
        csv_days(tmp_path / "p.csv")
    days = csv_days(tmp_path / "p.csv", fill="linear")
    assert len(days) == 4


def test_wrong_units_are_caught(tmp_path):
    _load_csv(tmp_path / "watts.csv", scale=1000)
    with pytest.raises(ProfileError) as err:
        csv_days(tmp_path / "watts.csv")
    assert "column 'a'" in str(err.value) and "wrong units" in str(err.value)
    assert "units = 'W'" in str(err.value)
    days = csv_days(tmp_path / "watts.csv", units="W")
    assert 0.1 < days.kw.mean() < 2


def test_negative_load_names_the_row(tmp_path):
    frame = _load_csv(tmp_path / "p.csv")
    frame.loc[7, "a"] = -0.5
    frame.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ProfileError, match=r"p.csv: column 'a', row 8: negative household load"):
        csv_days(tmp_path / "p.csv")


def test_wrong_resolution(tmp_path):
    _load_csv(tmp_path / "half_hour.csv", step_min=30)
    with pytest.raises(ProfileError, match=r"half_hour.csv: column 'time': resolution 1800 s: "
                                           r"the load model needs a resolution that divides 900"):
        csv_days(tmp_path / "half_hour.csv")
    frame = _load_csv(tmp_path / "irregular.csv")
    frame.loc[5, "time"] = "2024-01-01T01:20:00"  # 20 minutes after row 5, not 15
    frame.to_csv(tmp_path / "irregular.csv", index=False)
    with pytest.raises(ProfileError, match=r"irregular.csv: column 'time', row 6: irregular "
                                           r"resolution: 1200 s after the previous row, while "
                                           r"the file.s step is 900 s"):
        csv_days(tmp_path / "irregular.csv")


def test_unreadable_cells_and_columns(tmp_path):
    frame = _load_csv(tmp_path / "p.csv").astype(object)
    frame.loc[3, "a"] = "1,2"
    frame.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ProfileError, match=r"column 'a', row 4: cannot read '1,2' as a number"):
        csv_days(tmp_path / "p.csv")
    frame.loc[4, "time"] = "yesterday"
    frame.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ProfileError, match=r"column 'time', row 5: cannot read 'yesterday'"):
        csv_days(tmp_path / "p.csv")
    with pytest.raises(ProfileError, match=r"no column 'price'; columns are 'time', 'a', 'b'"):
        read_series_csv(tmp_path / "p.csv", ["price"], "price", "per_kwh")
    with pytest.raises(ProfileError, match=r"missing.csv: file not found"):
        csv_days(tmp_path / "missing.csv")


def test_price_csv_in_a_config_is_converted_and_held(tmp_path):
    times = pd.date_range("2024-01-08", periods=48, freq="h", tz="UTC")
    pd.DataFrame({"time": times.strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "eur_mwh": np.arange(48) * 10.0 + 50}).to_csv(tmp_path / "prices.csv",
                                                                index=False)
    (tmp_path / "cfg.toml").write_text(
        'homes = 2\ndays = 2\ntimezone = "UTC"\n[price]\ncsv = "prices.csv"\n'
        'column = "eur_mwh"\nunits = "per_mwh"\n')
    cfg = load_config(tmp_path / "cfg.toml")
    generate(cfg, tmp_path / "out", progress=False)
    price = read_dataset(tmp_path / "out")["exogenous"]["wholesale_price_per_kwh"].to_numpy()
    np.testing.assert_allclose(price, np.repeat(np.arange(48) * 0.01 + 0.05, 4))


def test_price_csv_that_does_not_cover_the_run(tmp_path):
    times = pd.date_range("2024-01-08", periods=24, freq="h", tz="UTC")
    pd.DataFrame({"time": times.strftime("%Y-%m-%dT%H:%M:%SZ"), "price": 0.1}).to_csv(
        tmp_path / "prices.csv", index=False)
    (tmp_path / "cfg.toml").write_text('days = 2\ntimezone = "UTC"\n[price]\ncsv = "prices.csv"\n')
    with pytest.raises(ProfileError, match=r"prices.csv: column 'price': covers .* but the run "
                                           r"needs"):
        generate(load_config(tmp_path / "cfg.toml"), tmp_path / "out", progress=False)


def test_price_in_mwh_read_as_kwh_is_caught(tmp_path):
    times = pd.date_range("2024-01-08", periods=48, freq="h", tz="UTC")
    pd.DataFrame({"time": times.strftime("%Y-%m-%dT%H:%M:%SZ"), "price": 80.0}).to_csv(
        tmp_path / "prices.csv", index=False)
    with pytest.raises(ProfileError, match=r"wrong units\? \(wholesale prices per MWh need "
                                           r"units = 'per_mwh'\)"):
        read_series_csv(tmp_path / "prices.csv", ["price"], "price", "per_kwh")


@pytest.mark.parametrize("text, match", [
    ("homes = 0\n", r"key 'homes': Input should be greater than or equal to 1"),
    ("dt_s = 700\n", r"dt_s = 700: the step must be whole minutes and divide a day"),
    ("[pv]\nshare = 1.5\n", r"key 'pv.share': Input should be less than or equal to 1"),
    ("[pv]\nkwp = [6.0, 2.0]\n", r"kwp: the low end 6.0 is above the high end 2.0"),
    ("[ev]\nshar = 0.2\n", r"key 'ev.shar': Extra inputs are not permitted"),
    ("[load]\nmodel = \"hedge\"\n", r"key 'load.model': Input should be 'trained' or 'mahtm'"),
    ("homes = \n", r"not valid TOML"),
])
def test_bad_config_names_file_and_key(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=match) as err:
        load_config(path)
    assert str(err.value).startswith(str(path))


def test_unknown_timezone_and_missing_weights(tmp_path):
    (tmp_path / "tz.toml").write_text('timezone = "Mars/Olympus"\n')
    with pytest.raises(ProfileError, match=r"unknown timezone 'Mars/Olympus'"):
        generate(load_config(tmp_path / "tz.toml"), tmp_path / "out", progress=False)
    (tmp_path / "w.toml").write_text('[load]\nweights = "nowhere.pt"\n')
    with pytest.raises(ProfileError, match=r"nowhere.pt: load model not found"):
        generate(load_config(tmp_path / "w.toml"), tmp_path / "out", progress=False)
