"""Weather over the run: sun and clouds (irradiance) and outdoor temperature, one series for
the whole area (homes on one feeder share their weather).

Irradiance = pvlib clear sky (Ineichen, with pvlib's Linke turbidity climatology) times a
stochastic clear-sky index k:
- each local day has a sky regime, clear, mixed or overcast, following a Markov chain: the
  regime persists to the next day with probability `persistence`, otherwise the next day's
  regime is drawn from `shares`;
- within a day, k is the regime's mean plus an AR(1) fluctuation with time constant
  `fluctuation_s` and the regime's standard deviation, clipped to [0.05, 1.1] (values just
  above one are cloud-edge enhancement);
- GHI = k * clear-sky GHI, split into DNI and DHI with the Erbs model.

Temperature (degrees C) = annual mean + a seasonal cosine peaking on `warmest_day` + a daily
cosine peaking at 15:00 local time, whose amplitude is `day_amplitude_c` on clear days and
shrinks with clouds (`DAY_SWING`: 100 %, 70 %, 40 % of it), + an AR(1) anomaly with
standard deviation `anomaly_std_c` whose correlation over one day is `anomaly_day_corr`.
Defaults are round numbers for southern England; every parameter is in the config
(`[clouds]`, `[temperature]`).

Instantaneous quantities are evaluated at sub-step midpoints and averaged over each step
(sub-steps of at most 15 minutes), so a step's irradiance is its mean, and a step whose
every sub-step has the sun below the horizon has exactly zero irradiance.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from agents.profiles.config import CloudConfig, LocationConfig, TemperatureConfig
from agents.profiles.timegrid import TimeGrid

REGIMES = ("clear", "mixed", "overcast")
DAY_SWING = (1.0, 0.7, 0.4)  # share of the daily temperature swing, per regime
SUB_STEP_S = 900  # longest sub-step for instantaneous physics


@dataclass
class Weather:
    """Per grid step (means over the step), plus the sub-step detail PV needs.

    Attributes:
        ghi, dni, dhi: [steps] W/m2.
        clear_sky_index: [steps] GHI over clear-sky GHI (step mean of the instantaneous k).
        temp_c: [steps] outdoor air temperature, degrees C.
        sub_*: [steps, n_sub] the same at sub-step midpoints, plus solar zenith/azimuth (deg)
            and extraterrestrial DNI, for the plane-of-array irradiance of each PV system.
    """

    ghi: np.ndarray
    dni: np.ndarray
    dhi: np.ndarray
    clear_sky_index: np.ndarray
    temp_c: np.ndarray
    sub_ghi: np.ndarray
    sub_dni: np.ndarray
    sub_dhi: np.ndarray
    sub_zenith: np.ndarray
    sub_azimuth: np.ndarray
    sub_dni_extra: np.ndarray
    sub_temp_c: np.ndarray


def sub_steps(dt_s: int) -> int:
    """How many sub-steps a step of `dt_s` seconds is evaluated at."""
    return dt_s // math.gcd(dt_s, SUB_STEP_S) if dt_s > SUB_STEP_S else 1


def ar1(rng: np.random.Generator, n: int, phi: float, std: np.ndarray | float) -> np.ndarray:
    """Stationary AR(1) with lag-one correlation `phi` and marginal std `std` (per step)."""
    from scipy.signal import lfilter

    eps = rng.standard_normal(n)
    # x[0] = eps[0] starts in the stationary distribution; x[i] = phi x[i-1] + sqrt(1-phi^2) e[i]
    rest = lfilter([math.sqrt(1 - phi * phi)], [1.0, -phi], eps[1:], zi=[phi * eps[0]])[0]
    return np.concatenate([eps[:1], rest]) * std


def make_weather(grid: TimeGrid, location: LocationConfig, clouds: CloudConfig,
                 temperature: TemperatureConfig, rng: np.random.Generator) -> Weather:
    """Synthetic weather for `grid` (see the module docstring)."""
    import pvlib

    n_sub = sub_steps(grid.dt_s)
    sub_s = grid.dt_s / n_sub
    offsets = pd.to_timedelta((np.arange(n_sub) + 0.5) * sub_s, unit="s")
    utc = grid.times.tz_convert(None).to_numpy()
    times = pd.DatetimeIndex((utc[:, None] + offsets.to_numpy()[None]).ravel()).tz_localize("UTC")
    site = pvlib.location.Location(location.latitude, location.longitude,
                                   altitude=location.altitude_m)
    with warnings.catch_warnings():
        # pvlib itself still calls pandas' deprecated DatetimeIndex.dayofyear; nothing a
        # user of the generator can act on.
        warnings.filterwarnings("ignore", message=r"DatetimeIndex\.dayofyear is deprecated")
        sun = site.get_solarposition(times)
        clear = site.get_clearsky(times, solar_position=sun)
        dni_extra = pvlib.irradiance.get_extra_radiation(times).to_numpy()
    zenith = sun["apparent_zenith"].to_numpy()
    up = zenith < 90
    ghi_clear = np.where(up, clear["ghi"].to_numpy(), 0.0)

    # Sky regime per local day, then the clear-sky index at each sub-step.
    shares = np.asarray(clouds.shares) / np.sum(clouds.shares)
    regime = np.empty(grid.days, dtype=np.int64)
    regime[0] = rng.choice(3, p=shares)
    for d in range(1, grid.days):
        regime[d] = regime[d - 1] if rng.random() < clouds.persistence else rng.choice(3, p=shares)
    sub_regime = np.repeat(regime[grid.day], n_sub)
    phi = math.exp(-sub_s / clouds.fluctuation_s)
    k = (np.asarray(clouds.means)[sub_regime]
         + ar1(rng, len(times), phi, np.asarray(clouds.stds)[sub_regime]))
    k = np.clip(k, 0.05, 1.1)
    ghi = ghi_clear * k
    split = pvlib.irradiance.erbs(ghi, zenith, times.day_of_year.to_numpy())
    dni = np.where(up, split["dni"], 0.0)
    dhi = np.where(up, split["dhi"], 0.0)

    doy = times.day_of_year.to_numpy()
    local = times.tz_convert(grid.timezone)
    local_hour = local.hour.to_numpy() + local.minute.to_numpy() / 60
    swing = temperature.day_amplitude_c * np.asarray(DAY_SWING)[sub_regime]
    day_corr = temperature.anomaly_day_corr ** (sub_s / 86_400)
    temp = (temperature.mean_c
            + temperature.season_amplitude_c * np.cos(2 * np.pi * (doy - temperature.warmest_day)
                                                      / 365.25)
            + swing * np.cos(2 * np.pi * (local_hour - 15) / 24)
            + ar1(rng, len(times), day_corr, temperature.anomaly_std_c))

    def per_step(x: np.ndarray) -> np.ndarray:
        return x.reshape(grid.n_steps, n_sub)

    return Weather(
        ghi=per_step(ghi).mean(axis=1), dni=per_step(dni).mean(axis=1),
        dhi=per_step(dhi).mean(axis=1), clear_sky_index=per_step(k).mean(axis=1),
        temp_c=per_step(temp).mean(axis=1),
        sub_ghi=per_step(ghi), sub_dni=per_step(dni), sub_dhi=per_step(dhi),
        sub_zenith=per_step(zenith), sub_azimuth=per_step(sun["azimuth"].to_numpy()),
        sub_dni_extra=per_step(dni_extra), sub_temp_c=per_step(temp),
    )
