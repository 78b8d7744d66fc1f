"""Profile data for a scenario: a dataset from `cosim data generate`, the profile
generator run on the spot, or a documented synthetic family for tests and benchmarks."""

from __future__ import annotations

import datetime as dt
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
            if not (config.profiles.dataset / "households.parquet").exists():
                raise ConfigError(f"profiles.dataset: {config.profiles.dataset} is not a "
                                  "profile data set (no households.parquet)")
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
            if not (folder / "manifest.json").exists():
                generate(cfg, folder, config_file=config.profiles.generator)
            tables = read_dataset(folder)
    except ProfileError as exc:
        raise ConfigError(f"profiles: {exc}") from None
    return _from_tables(tables, str(source))


def _from_tables(tables: dict, source: str) -> ProfileData:
    """ProfileData from the generator's tables: load and PV per home per step, PV turned
    into output per kWp (homes without PV get the mean shape of those with it), and car
    use (homes without a car borrow the pattern of an owner, in turn)."""
    homes, steps, exo = tables["homes"], tables["households"], tables["exogenous"]
    time = np.sort(steps["time"].unique())
    n_homes, n_steps = len(homes), len(time)
    if len(steps) != n_homes * n_steps:
        raise ConfigError(f"{source}: households table has {len(steps)} rows, expected "
                          f"{n_homes} homes x {n_steps} steps")
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
