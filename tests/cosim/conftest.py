"""Scenario fixtures for engine tests: synthetic but physically shaped profiles."""

from __future__ import annotations

import numpy as np
import pytest

from cosim.config import parse_config
from cosim.scenario import ProfileData


def synthetic_profiles(homes: int = 20, steps: int = 96, dt_s: int = 900,
                       start: str = "2026-06-01T00:00", seed: int = 0) -> ProfileData:
    """Evening-peaked loads around 0.5 kW, a clear-sky-like PV bell, daily price and carbon
    cycles; enough shape for the engine's bookkeeping to be exercised."""
    rng = np.random.default_rng(seed)
    time = np.datetime64(start, "s") + np.arange(steps) * np.timedelta64(dt_s, "s")
    hour = (np.arange(steps) * dt_s / 3600.0) % 24
    evening = np.exp(-0.5 * ((hour - 19) / 2.5) ** 2)
    morning = np.exp(-0.5 * ((hour - 8) / 1.5) ** 2)
    load = 0.3 + 1.2 * evening + 0.6 * morning
    load = load[None] * rng.uniform(0.5, 1.5, (homes, 1)) + rng.gamma(2, 0.05, (homes, steps))
    pv = np.clip(np.sin(np.pi * (hour - 6) / 14), 0, None) ** 1.3
    pv = pv[None] * rng.uniform(0.6, 1.0, (homes, 1))
    return ProfileData(
        time=time, load_kw=load, pv_kw_per_kwp=pv,
        temperature_c=15 + 6 * np.sin(np.pi * (hour - 9) / 12),
        ghi_w_m2=900 * np.clip(np.sin(np.pi * (hour - 6) / 14), 0, None),
        wholesale_price=0.10 + 0.08 * evening - 0.04 * pv.mean(0),
        carbon_intensity=0.20 + 0.10 * evening - 0.08 * pv.mean(0))


def scenario_config(**sections: dict) -> object:
    raw = {"profiles": {"dataset": "unused"}}
    for name, values in sections.items():
        raw[name] = values
    return parse_config(raw, "test.toml")


@pytest.fixture
def small_config():
    return scenario_config(
        run={"name": "small", "seed": 7, "steps": 12, "checkpoint_every": 4},
        grid={"feeder": "ieee13"},
        households={"count": 60, "shard_size": 25,
                    "battery": {"share": 0.5}, "pv": {"share": 0.6}},
        markets={"households_per_market": 20},
        tariff={"peak_import_price": 0.45, "peak_hours": [17, 21]},
        aggregators={"count": 1, "customer_share": 0.3},
    )
