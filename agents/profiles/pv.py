"""Rooftop PV: which homes have it, how big and how oriented, and its AC output per step.

Output chain, per home and sub-step (pvlib): plane-of-array irradiance from GHI/DNI/DHI with
the isotropic sky model, cell temperature with the Faiman model (1 m/s wind), PVWatts DC
power with a temperature coefficient, then a flat share of system losses (wiring, soiling,
inverter) and an inverter limit equal to the DC rating. Power is the step mean in kW; it is
exactly zero whenever the sun is below the horizon over the whole step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.profiles.weather import Weather


@dataclass
class PVFleet:
    """Per home: has_pv [homes] bool; kwp (DC rating, kW), tilt_deg, azimuth_deg
    (180 = south) [homes], zero where a home has no PV."""

    has_pv: np.ndarray
    kwp: np.ndarray
    tilt_deg: np.ndarray
    azimuth_deg: np.ndarray


def pv_fleet(n_homes: int, share: float, kwp: tuple[float, float], tilt: tuple[float, float],
             azimuth: tuple[float, float], rng: np.random.Generator) -> PVFleet:
    """Draw PV ownership (probability `share`) and uniform size and orientation ranges."""
    has = rng.random(n_homes) < share
    size = np.round(rng.uniform(*kwp, n_homes), 1)
    t = np.round(rng.uniform(*tilt, n_homes), 1)
    a = np.round(rng.uniform(*azimuth, n_homes), 1)
    return PVFleet(has, np.where(has, size, 0.0), np.where(has, t, 0.0), np.where(has, a, 0.0))


def pv_power(fleet: PVFleet, weather: Weather, homes: np.ndarray, losses: float,
             gamma_per_k: float) -> np.ndarray:
    """AC power [len(homes), steps] in kW of the given homes (zero rows for homes without PV)."""
    import pvlib

    out = np.zeros((len(homes), len(weather.ghi)))
    rows = np.flatnonzero(fleet.has_pv[homes])
    if not len(rows):
        return out
    idx = homes[rows]
    shape = (len(idx), 1, 1)
    poa = pvlib.irradiance.get_total_irradiance(
        fleet.tilt_deg[idx].reshape(shape), fleet.azimuth_deg[idx].reshape(shape),
        weather.sub_zenith[None], weather.sub_azimuth[None], weather.sub_dni[None],
        weather.sub_ghi[None], weather.sub_dhi[None], dni_extra=weather.sub_dni_extra[None],
        model="isotropic")["poa_global"]
    poa = np.where(weather.sub_ghi[None] > 0, np.nan_to_num(poa), 0.0)
    cell = pvlib.temperature.faiman(poa, weather.sub_temp_c[None])
    kwp = fleet.kwp[idx].reshape(shape)
    dc = pvlib.pvsystem.pvwatts_dc(poa, cell, kwp, gamma_per_k)
    ac = np.clip(dc * (1 - losses), 0.0, kwp)
    out[rows] = ac.mean(axis=2)
    return out
