"""Generated data sets: reproducible per seed, physically plausible, consistent across steps."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pvlib

from agents.profiles.config import GenerateConfig
from agents.profiles.generate import generate, read_dataset
from agents.profiles.heat import balance_temperature
from agents.profiles.timegrid import make_grid

HOUSEHOLD_COLUMNS = ["home", "time", "load_kw", "pv_kw", "ev_at_home", "ev_trip_kwh",
                     "heat_demand_kw", "cluster"]


def _wide(households: pd.DataFrame, column: str) -> np.ndarray:
    """[homes, steps] of one column (the table is sorted by home, then time)."""
    n = households["home"].nunique()
    return households[column].to_numpy().reshape(n, -1)


def test_schema_and_units(spring_week):
    cfg, data = spring_week
    h, homes, exo, manifest = (data["households"], data["homes"], data["exogenous"],
                               data["manifest"])
    assert list(h.columns) == HOUSEHOLD_COLUMNS
    assert str(h["time"].dt.tz) == "UTC" and h["ev_at_home"].dtype == bool
    assert len(homes) == cfg.homes and homes["home"].tolist() == list(range(cfg.homes))
    assert len(h) == cfg.homes * len(exo) == cfg.homes * manifest["steps"]
    assert (h.groupby("home")["time"].apply(lambda t: t.is_monotonic_increasing)).all()
    assert manifest["dt_s"] == 900 and manifest["seed"] == cfg.seed
    assert manifest["load_model"]["sha256"] and manifest["versions"]["pvlib"]
    assert {"outdoor_temp_c", "ghi_w_m2", "wholesale_price_per_kwh",
            "carbon_kg_per_kwh"} <= set(exo.columns)
    assert homes["behaviour"].str.startswith(("weekday: ", "weekend: ")).all()


def test_clock_change_week_is_whole_local_days(spring_week):
    cfg, data = spring_week
    exo = data["exogenous"]
    # 2024-03-31 is 23 hours long in London: 7 days of 15-minute steps less four.
    assert len(exo) == 7 * 96 - 4
    local = exo["time"].dt.tz_convert(cfg.timezone)
    assert local.iloc[0].hour == 0 and local.iloc[-1] == pd.Timestamp(
        "2024-04-03 23:45", tz=cfg.timezone)


def test_reproducible_per_seed(tmp_path):
    cfg = GenerateConfig(homes=6, days=3, seed=11, ev={"share": 1.0}, pv={"share": 1.0})
    a = generate(cfg, tmp_path / "a", progress=False)
    generate(cfg, tmp_path / "b", progress=False)
    generate(cfg.model_copy(update={"seed": 12}), tmp_path / "c", progress=False)
    ta, tb, tc = (read_dataset(tmp_path / k) for k in "abc")
    for name in ("homes", "households", "exogenous"):
        pd.testing.assert_frame_equal(ta[name], tb[name])
    assert not np.allclose(ta["households"]["load_kw"], tc["households"]["load_kw"])
    assert not np.allclose(ta["exogenous"]["outdoor_temp_c"], tc["exogenous"]["outdoor_temp_c"])
    assert a["config"]["seed"] == 11


def test_load_is_non_negative_and_bounded(spring_week):
    _, data = spring_week
    load = _wide(data["households"], "load_kw")
    assert (load >= 0).all() and load.max() < 10
    daily = load.reshape(load.shape[0], -1).sum(axis=1) * 0.25 / 7
    assert 1 < np.median(daily) < 30  # kWh per day, the range of real homes


def test_pv_zero_at_night_and_within_rating(spring_week):
    cfg, data = spring_week
    h, homes, exo = data["households"], data["homes"], data["exogenous"]
    pv = _wide(h, "pv_kw")
    site = pvlib.location.Location(cfg.location.latitude, cfg.location.longitude)
    start = site.get_solarposition(pd.DatetimeIndex(exo["time"]))["elevation"].to_numpy()
    end = site.get_solarposition(pd.DatetimeIndex(exo["time"]) + pd.Timedelta(minutes=15)
                                 )["elevation"].to_numpy()
    night = (start < 0) & (end < 0)
    assert night.sum() > 200 and (pv[:, night] == 0).all()
    assert (pv >= 0).all() and (pv <= homes["pv_kwp"].to_numpy()[:, None] + 1e-9).all()
    has = homes["has_pv"].to_numpy()
    assert (pv[~has] == 0).all() and (pv[has].max(axis=1) > 0.2 * homes["pv_kwp"][has]).all()


def test_ev_energy_within_battery_and_trips_only_away(spring_week):
    cfg, data = spring_week
    h, homes = data["households"], data["homes"]
    trip, home = _wide(h, "ev_trip_kwh"), _wide(h, "ev_at_home")
    has = homes["has_ev"].to_numpy()
    assert has.sum() > 10
    assert (trip >= 0).all() and (trip[~has] == 0).all() and (~home[~has]).all()
    # Driving happens only in steps the car is away; every away spell includes driving.
    assert not (home & (trip > 0)).any()
    for i in np.flatnonzero(has):
        away = np.diff(np.r_[0, (~home[i]).astype(int), 0])
        for a, b in zip(np.flatnonzero(away == 1), np.flatnonzero(away == -1)):
            assert trip[i, a:b].sum() > 0
    # A local day's driving never needs more than the usable share of the battery.
    local_day = pd.DatetimeIndex(data["exogenous"]["time"]).tz_convert(cfg.timezone).date
    days = np.unique(local_day)
    per_day = np.stack([trip[:, local_day == d].sum(axis=1) for d in days], axis=1)
    limit = cfg.ev.usable_share * homes["ev_battery_kwh"].to_numpy()[:, None]
    assert (per_day <= limit + 1e-9).all() and per_day[has].mean() > 1
    # Cars are home at every local midnight.
    midnights = np.flatnonzero((data["exogenous"]["time"].dt.tz_convert(cfg.timezone).dt.hour == 0)
                               & (data["exogenous"]["time"].dt.minute == 0))
    assert home[has][:, midnights].all()


def test_heat_demand_follows_the_degree_hour_model(spring_week):
    cfg, data = spring_week
    h, homes, exo = data["households"], data["homes"], data["exogenous"]
    grid = make_grid(cfg.start, cfg.days, cfg.dt_s, cfg.timezone)
    base = balance_temperature(grid, cfg.heat.day_base_c, cfg.heat.night_base_c,
                               cfg.heat.night_from_h, cfg.heat.night_to_h)
    expected = homes["heat_loss_kw_per_k"].to_numpy()[:, None] * np.maximum(
        base - exo["outdoor_temp_c"].to_numpy(), 0)
    np.testing.assert_allclose(_wide(h, "heat_demand_kw"), expected, rtol=1e-12)
    assert expected.max() > 1  # a cold spring night needs heat


def test_hourly_run_is_the_15_minute_run_averaged(tmp_path):
    """The same seed at 3600 s and at 900 s: same homes, load, PV and driving energy."""
    base = dict(homes=5, days=2, seed=5, start=dt.date(2024, 6, 3), pv={"share": 1.0},
                ev={"share": 1.0})
    generate(GenerateConfig(**base, dt_s=900), tmp_path / "q", progress=False)
    generate(GenerateConfig(**base, dt_s=3600), tmp_path / "h", progress=False)
    q, hr = read_dataset(tmp_path / "q"), read_dataset(tmp_path / "h")
    pd.testing.assert_frame_equal(q["homes"], hr["homes"])
    for column in ("load_kw", "pv_kw"):
        fine = _wide(q["households"], column).reshape(5, -1, 4).mean(axis=2)
        np.testing.assert_allclose(_wide(hr["households"], column), fine, atol=1e-9)
    np.testing.assert_allclose(_wide(hr["households"], "ev_trip_kwh"),
                               _wide(q["households"], "ev_trip_kwh").reshape(5, -1, 4).sum(axis=2),
                               atol=1e-9)


def test_other_resolutions_keep_daily_energy(tmp_path):
    base = dict(homes=3, days=1, seed=2, timezone="UTC", ev={"share": 0.0})
    energy = {}
    for dt_s in (300, 900, 1200):
        generate(GenerateConfig(**base, dt_s=dt_s), tmp_path / str(dt_s), progress=False)
        load = _wide(read_dataset(tmp_path / str(dt_s))["households"], "load_kw")
        assert load.shape[1] == 86_400 // dt_s
        energy[dt_s] = load.sum(axis=1) * dt_s / 3600
    np.testing.assert_allclose(energy[300], energy[900])
    np.testing.assert_allclose(energy[1200], energy[900])


def test_mahtm_family(tmp_path):
    from agents.profiles.config import load_config

    cfg = load_config("experiments/configs/profiles/mahtm.toml")
    generate(cfg, tmp_path, progress=False)
    data = read_dataset(tmp_path)
    homes, h = data["homes"], data["households"]
    assert homes["behaviour"].tolist() == ["family", "business", "teenagers"] * 2
    assert homes["peak_load_kw"].tolist() == [1, 1, 1, 0.5, 0.3, 0.2]
    assert homes["battery_soc_max"].eq(0.9).all() and len(data["exogenous"]) == 24
    load, pv = _wide(h, "load_kw"), _wide(h, "pv_kw")
    peak_hour = load.argmax(axis=1)
    assert 6 <= peak_hour[0] <= 8 and 11 <= peak_hour[1] <= 14
    assert peak_hour[2] >= 19 or peak_hour[2] <= 1  # teenagers: late evening into the night
    np.testing.assert_allclose(load.max(axis=1), homes["peak_load_kw"], rtol=0.1)
    assert (pv[:, :5] == 0).all() and (pv[:, 19:] == 0).all() and (pv[3] == 0).all()
    assert 0.8 < pv[0].max() < 1.5 and (load >= 0).all()
    assert not h["ev_at_home"].any() and (h["ev_trip_kwh"] == 0).all()
