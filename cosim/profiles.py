"""Profile data for a scenario: a dataset from `cosim data generate`, the profile
generator run on the spot, or a documented synthetic family for tests and benchmarks."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from cosim.config import ConfigError, ScenarioConfig
from cosim.scenario import ProfileData


def synthetic(homes: int = 20, steps: int = 96, dt_s: int = 900,
              start: str = "2026-06-01T00:00", seed: int = 0) -> ProfileData:
    """A deterministic synthetic family: evening- and morning-peaked loads around 0.7 kW
    with gamma noise, a clear-sky-like PV bell (kW per kWp), daily wholesale price and
    carbon cycles that dip at midday, and a daily commute per home (out between 07 and 09,
    back between 16:30 and 19, 4 to 12 kWh driven, spread over the steps away). Shaped
    enough to exercise every part of the engine; not a substitute for `cosim data
    generate`."""
    rng = np.random.default_rng(seed)
    time = np.datetime64(start, "s") + np.arange(steps) * np.timedelta64(dt_s, "s")
    hour = (np.arange(steps) * dt_s / 3600.0) % 24
    evening = np.exp(-0.5 * ((hour - 19) / 2.5) ** 2)
    morning = np.exp(-0.5 * ((hour - 8) / 1.5) ** 2)
    load = 0.3 + 1.2 * evening + 0.6 * morning
    load = load[None] * rng.uniform(0.5, 1.5, (homes, 1)) + rng.gamma(2, 0.05, (homes, steps))
    sun = np.clip(np.sin(np.pi * (hour - 6) / 14), 0, None)
    pv = sun[None] ** 1.3 * rng.uniform(0.6, 1.0, (homes, 1))
    # a step is away if any part of it is: [h, h + dt) overlaps [leave, back)
    leave, back = rng.uniform(7, 9, (homes, 1)), rng.uniform(16.5, 19, (homes, 1))
    dt_h = dt_s / 3600.0

    def away(h: np.ndarray) -> np.ndarray:
        return (h + dt_h > leave) & (h < back)

    per_day = away(np.arange(round(24 / dt_h)) * dt_h).sum(axis=1, keepdims=True)
    out = away(hour[None])
    return ProfileData(
        time=time, load_kw=load, pv_kw_per_kwp=pv,
        temperature_c=15 + 6 * np.sin(np.pi * (hour - 9) / 12), ghi_w_m2=900 * sun,
        wholesale_price=0.10 + 0.08 * evening - 0.04 * pv.mean(0),
        carbon_intensity=0.20 + 0.10 * evening - 0.08 * pv.mean(0),
        ev_at_home=~out, ev_trip_kwh=out * rng.uniform(4, 12, (homes, 1)) / per_day)


def load_profiles(config: ScenarioConfig, cache: Path | None = None) -> ProfileData:
    """The profiles a scenario names, covering its run.

    A dataset folder (from `cosim data generate`) is read as it is. A generator config is
    run for this scenario: its seed, step and dates come from the scenario (so one seed
    governs the whole run), with as many homes as households up to 1,000 (households beyond
    that share homes' profiles). The generated folder goes to `cache` if given, and is
    reused from there when it is already complete (a resumed run).
    """
    from agents.profiles import ProfileError, generate, read_dataset
    from agents.profiles import load_config as load_generator_config

    source = config.profiles.dataset or config.profiles.generator
    try:
        if config.profiles.dataset is not None:
            for name in ("households.parquet", "homes.parquet", "exogenous.parquet",
                         "manifest.json"):
                if not (config.profiles.dataset / name).exists():
                    raise ConfigError(f"profiles.dataset: {config.profiles.dataset} is not a "
                                      f"profile data set (no {name})")
            tables = read_dataset(config.profiles.dataset)
        else:
            run = config.run
            first = run.start.astimezone(dt.UTC)
            last = first + dt.timedelta(seconds=run.steps * run.dt_s)
            cfg = load_generator_config(
                config.profiles.generator, seed=run.seed, dt_s=run.dt_s,
                homes=min(config.households.count, 1000),
                # whole local days around the run, whatever the generator's time zone
                start=(first - dt.timedelta(days=1)).date(),
                days=(last - first).days + 3)
            folder = cache or Path(tempfile.mkdtemp(prefix="cosim-profiles-"))
            made = folder / "manifest.json"
            if not made.exists():
                generate(cfg, folder, config_file=config.profiles.generator)
            elif json.loads(made.read_text()).get("config") != cfg.model_dump(mode="json"):
                # a reused run folder: its profiles belong to another scenario or seed
                old = json.loads(made.read_text()).get("config", {})
                raise ConfigError(
                    f"{folder}: holds profiles generated for another scenario (seed "
                    f"{old.get('seed')}, {old.get('homes')} homes from {old.get('start')}; "
                    f"this one needs seed {cfg.seed}, {cfg.homes} homes from {cfg.start}); "
                    "choose another --out, or delete that folder")
            tables = read_dataset(folder)
    except ProfileError as exc:
        raise ConfigError(f"profiles: {exc}") from None
    return _from_tables(tables, str(source))


# What a scenario reads of a data set (agents.profiles documents the layout), per table
# file; the car columns of households.parquet only when some home has a car (has_ev).
REQUIRED_COLUMNS = {
    "homes": ("home", "pv_kwp"),
    "households": ("home", "time", "load_kw", "pv_kw"),
    "exogenous": ("time", "outdoor_temp_c", "ghi_w_m2", "wholesale_price_per_kwh",
                  "carbon_kg_per_kwh"),
}
CAR_COLUMNS = ("ev_at_home", "ev_trip_kwh")
# A household's appliance load averages 0.1 to 5 kW and rarely peaks above 30 kW. A home
# whose load_kw averages above LOAD_MEAN_LIMIT_KW or peaks above LOAD_PEAK_LIMIT_KW is read
# as load given in W (a factor 1000 too large), not as a very large home.
LOAD_MEAN_LIMIT_KW = 50.0
LOAD_PEAK_LIMIT_KW = 200.0


def check_tables(tables: dict, source: str) -> None:
    """Raise ConfigError for a data set that would break or silently misalign a run, naming
    `source` (the data set), the table file, the column, and the home and timestamp where
    they apply: a missing column; a home listed twice, or in households.parquet but not in
    homes.parquet; a missing, duplicated or off-grid timestamp (the grid runs every dt_s
    seconds, from the manifest or else the smallest spacing, from the first to the last
    timestamp of either table); a NaN or infinite value; household load in W."""
    homes, steps, exo = tables["homes"], tables["households"], tables["exogenous"]
    cars = "has_ev" in homes and bool(homes["has_ev"].any())
    read = {**REQUIRED_COLUMNS,
            "households": REQUIRED_COLUMNS["households"] + (CAR_COLUMNS if cars else ())}
    for table, columns in read.items():
        have = list(tables[table].columns)
        for column in columns:
            if column not in have:
                raise ConfigError(f"{source}: {table}.parquet has no column {column!r} "
                                  f"(it has {', '.join(map(str, have))})")

    for table, columns in read.items():
        frame = tables[table]
        for column in (c for c in columns if c not in ("home", "time")):
            values = pd.to_numeric(frame[column], errors="coerce").to_numpy(float)
            bad = ~np.isfinite(values)
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                where = " and ".join(f"{key} {frame[key].iloc[k]}" for key in ("home", "time")
                                     if key in frame)
                given = frame[column].iloc[k]  # nan, inf, None, or a string
                shown = repr(given) if isinstance(given, str) else str(given)
                raise ConfigError(f"{source}: {table}.parquet: {column} is {shown} at {where}"
                                  + (f" ({int(bad.sum())} such rows)" if bad.sum() > 1 else ""))

    ids = homes["home"]
    if ids.duplicated().any():
        raise ConfigError(f"{source}: homes.parquet lists home {ids[ids.duplicated()].iloc[0]} "
                          "twice")
    stranger = ~steps["home"].isin(ids)
    if stranger.any():
        raise ConfigError(f"{source}: households.parquet has rows of home "
                          f"{steps['home'][stranger].iloc[0]}, which homes.parquet lacks")

    exo_time = pd.DatetimeIndex(pd.to_datetime(exo["time"], utc=True))
    home_time = pd.DatetimeIndex(pd.to_datetime(steps["time"], utc=True))
    for table, stamps in (("exogenous", exo_time), ("households", home_time)):
        if stamps.isna().any():
            k = int(np.flatnonzero(stamps.isna())[0])
            raise ConfigError(f"{source}: {table}.parquet: time is missing in row {k}")
    dt_s = tables.get("manifest", {}).get("dt_s")
    if dt_s is None:  # the smallest spacing of the exogenous series
        gaps = np.diff(exo_time.sort_values().unique().asi8) // 10**9
        dt_s = int(gaps[gaps > 0].min()) if (gaps > 0).any() else 1
    step = pd.Timedelta(seconds=int(dt_s))
    first = min(exo_time.min(), home_time.min())
    grid = pd.date_range(first, max(exo_time.max(), home_time.max()), freq=step)

    def on_grid(table: str, stamps: pd.DatetimeIndex, home: pd.Series | None) -> np.ndarray:
        """Step index of each timestamp; error on one between steps."""
        offset = stamps - first
        off = np.flatnonzero(offset % step != pd.Timedelta(0))
        if len(off):
            k = int(off[0])
            who = f"home {home.iloc[k]}: " if home is not None else ""
            raise ConfigError(f"{source}: {table}.parquet: {who}time {stamps[k]} is not on the "
                              f"grid of {int(dt_s)} s steps from {first} (irregular spacing)")
        return np.asarray(offset // step, dtype=np.int64)

    at = on_grid("exogenous", exo_time, None)
    count = np.bincount(at, minlength=len(grid))
    if (count > 1).any():
        raise ConfigError(f"{source}: exogenous.parquet: time {grid[np.argmax(count > 1)]} "
                          "appears twice")
    if (count == 0).any():
        raise ConfigError(f"{source}: exogenous.parquet lacks the step at "
                          f"{grid[np.argmax(count == 0)]} ({int((count == 0).sum())} of "
                          f"{len(grid)} steps of {int(dt_s)} s missing from {grid[0]} to "
                          f"{grid[-1]})")
    order = np.sort(ids.to_numpy())
    row = np.searchsorted(order, steps["home"].to_numpy())
    at = on_grid("households", home_time, steps["home"])
    count = np.bincount(row * len(grid) + at, minlength=len(order) * len(grid))
    count = count.reshape(len(order), len(grid))
    for bad, what in ((count > 1, "has the step at {} twice"),
                      (count == 0, "lacks the step at {}")):
        if bad.any():  # the first in home, then time order
            h, t = np.unravel_index(np.argmax(bad), bad.shape)
            raise ConfigError(f"{source}: households.parquet: home {order[h]} "
                              f"{what.format(grid[t])} ({int(bad.sum())} of {bad.size} "
                              "home-steps like this)")

    load = steps.groupby("home")["load_kw"].agg(["mean", "max"])
    big = (load["mean"] > LOAD_MEAN_LIMIT_KW) | (load["max"] > LOAD_PEAK_LIMIT_KW)
    if big.any():
        home = load.index[big.to_numpy()][0]
        raise ConfigError(
            f"{source}: households.parquet: load_kw of home {home} averages "
            f"{load['mean'][home]:.4g} and peaks at {load['max'][home]:.4g}; that looks like "
            f"W, and load_kw must be in kW (a home above {LOAD_MEAN_LIMIT_KW:g} kW on average "
            f"or {LOAD_PEAK_LIMIT_KW:g} kW at its peak is taken for W; "
            f"{int(big.sum())} of {len(load)} homes are)")


def _from_tables(tables: dict, source: str) -> ProfileData:
    """ProfileData from the generator's tables (checked by `check_tables` first): load and
    PV per home per step, PV turned into output per kWp (homes without PV get the mean
    shape of those with it), and car use (homes without a car borrow the pattern of an
    owner, in turn)."""
    check_tables(tables, source)
    homes, steps, exo = tables["homes"], tables["households"], tables["exogenous"]
    time = np.sort(steps["time"].unique())
    n_homes, n_steps = len(homes), len(time)
    ordered = steps.sort_values(["home", "time"])
    load = ordered["load_kw"].to_numpy().reshape(n_homes, n_steps)
    pv = ordered["pv_kw"].to_numpy().reshape(n_homes, n_steps)
    kwp = homes.sort_values("home")["pv_kwp"].to_numpy()
    has = kwp > 0
    if not has.any():
        raise ConfigError(f"{source}: no home has PV, so there is no PV shape to give the "
                          "scenario's PV owners; raise the generator's pv.share")
    per_kwp = np.empty_like(pv)
    per_kwp[has] = pv[has] / kwp[has, None]
    per_kwp[~has] = per_kwp[has].mean(axis=0)
    cars: dict[str, np.ndarray] = {}
    owners = np.flatnonzero(homes.sort_values("home")["has_ev"].to_numpy(bool)) \
        if "has_ev" in homes else np.array([], int)
    if len(owners):
        lender = np.arange(n_homes)
        others = np.setdiff1d(lender, owners)
        lender[others] = owners[np.arange(len(others)) % len(owners)]
        for name in ("ev_at_home", "ev_trip_kwh"):
            cars[name] = ordered[name].to_numpy().reshape(n_homes, n_steps)[lender]
    exo = exo.sort_values("time")
    as_utc = pd.to_datetime(time, utc=True).tz_localize(None).to_numpy().astype("datetime64[s]")
    return ProfileData(
        time=as_utc, load_kw=load, pv_kw_per_kwp=per_kwp,
        temperature_c=exo["outdoor_temp_c"].to_numpy(), ghi_w_m2=exo["ghi_w_m2"].to_numpy(),
        wholesale_price=exo["wholesale_price_per_kwh"].to_numpy(),
        carbon_intensity=exo["carbon_kg_per_kwh"].to_numpy(), **cars)
