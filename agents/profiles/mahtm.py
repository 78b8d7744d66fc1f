"""MAHTM's household family (Cuadrado et al., ICLR 2023 workshop), to reproduce its experiments.

Three normalised demand profiles, each scaled by a home's `peak_load`:
- family: a morning peak and an early-afternoon peak;
- business (working from home): one broad midday peak;
- teenagers: high from late afternoon into the early morning.
The paper describes the shapes only in those words, so the curves here are ours: a base
of 0.15 plus Gaussian bumps in clock hours (`SHAPES`), scaled to peak at one. Load noise is
Normal(0, `load_noise_std`) on the normalised value.

PV is a half sine rising at `sunrise_h` and setting `daylight_h` later, scaled by the home's
`pv_peak`, with Normal(0, `pv_noise_std`) noise on the normalised value for clouds; both are
clipped at zero, and PV is zero outside daylight.

The houses of the paper's training, evaluation and testing sets (`HOUSES`) cycle through the
profile types family, business, teenagers; peak load and PV peak are read as kW and
battery capacity as kWh. Battery settings common to all houses are in `BATTERY`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from agents.profiles.config import MahtmConfig
from agents.profiles.timegrid import TimeGrid

PROFILES = ("family", "business", "teenagers")
# profile -> [(centre hour, width hours, height)]
SHAPES = {
    "family": [(7.5, 1.25, 0.85), (13.5, 1.75, 0.7)],
    "business": [(12.5, 2.5, 0.85)],
    "teenagers": [(21.5, 3.5, 0.85)],
}
BASE = 0.15
# set -> columns: peak_load (kW), battery_capacity (kWh), pv_peak (kW)
HOUSES = {
    "training": {"peak_load": [1, 1, 1, 0.5, 0.3, 0.2],
                 "battery_capacity": [1, 1, 1, 1, 1, 1],
                 "pv_peak": [1, 1, 1, 0.0, 1, 0.6]},
    "evaluation": {"peak_load": [1, 0.8, 0.5, 0.2, 0.3, 0.2],
                   "battery_capacity": [1, 1, 1, 0.5, 0.9, 0.9],
                   "pv_peak": [0.5, 1, 0, 1, 0.3, 0.6]},
    "testing": {"peak_load": [1, 1, 1, 0.2, 0.6, 0.4, 0.4, 1, 0.1, 1],
                "battery_capacity": [1, 1, 1, 1, 1, 1, 0.8, 0.2, 1, 0.2],
                "pv_peak": [0, 0, 0, 0.7, 1, 0.7, 1, 1, 1, 0]},
}
BATTERY = {"battery_efficiency": 1.0, "battery_soc_min": 0.1, "battery_soc_max": 0.9,
           "battery_p_charge_max": 0.8, "battery_p_discharge_max": 0.8,
           "battery_random_soc_0": False}


def _raw_shape(profile: str, hour: np.ndarray) -> np.ndarray:
    out = np.full_like(hour, BASE, dtype=float)
    for centre, width, height in SHAPES[profile]:
        d = np.abs((hour - centre + 12) % 24 - 12)  # clock distance, wrapping at midnight
        out += height * np.exp(-d * d / (2 * width * width))
    return out


def shape(profile: str, hour: np.ndarray) -> np.ndarray:
    """Normalised demand (peak one) of `profile` at clock hours `hour`."""
    peak = _raw_shape(profile, np.arange(0, 24, 1 / 60)).max()
    return _raw_shape(profile, hour) / peak


def homes_table(cfg: MahtmConfig, n_homes: int) -> pd.DataFrame:
    """Per home: its profile and the paper's house values, cycling through the chosen set."""
    houses = HOUSES[cfg.houses]
    row = np.arange(n_homes) % len(houses["peak_load"])
    return pd.DataFrame({
        "home": np.arange(n_homes, dtype=np.int32),
        "behaviour": [PROFILES[i % 3] for i in row],
        "peak_load_kw": np.asarray(houses["peak_load"], float)[row],
        "pv_kwp": np.asarray(houses["pv_peak"], float)[row],
        "battery_kwh": np.asarray(houses["battery_capacity"], float)[row],
        **{k: np.full(n_homes, v) for k, v in BATTERY.items()},
    })


def load_and_pv(homes: pd.DataFrame, grid: TimeGrid, cfg: MahtmConfig, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """(load_kw, pv_kw), each [homes, steps], evaluated at each step's local midpoint."""
    hour = (grid.minute + grid.dt_s / 120) / 60
    n = len(homes)
    base = np.stack([shape(p, hour) for p in homes["behaviour"]])
    load = homes["peak_load_kw"].to_numpy()[:, None] * np.clip(
        base + rng.normal(0, cfg.load_noise_std, (n, grid.n_steps)), 0, None)
    phase = (hour - cfg.sunrise_h) / cfg.daylight_h
    day = (phase > 0) & (phase < 1)
    sun = np.where(day, np.sin(np.pi * np.clip(phase, 0, 1)), 0.0)
    noisy = np.clip(sun + rng.normal(0, cfg.pv_noise_std, (n, grid.n_steps)), 0, None)
    pv = homes["pv_kwp"].to_numpy()[:, None] * np.where(day, noisy, 0.0)
    return load, pv
