"""richardsonpy's stochastic UK demand model (Richardson et al. 2010) as a source of home-days.

Each home gets its own seed, occupant count, appliance set and lighting configuration, and
is then simulated for consecutive days: that is what the feeder's one-day-per-home profiles
lack, and what the day-to-day Markov chains are counted from.

richardsonpy draws from Python's global `random` module; it is seeded per home here and its
state restored afterwards, so a home depends only on (seed, home number) and any subset of
homes can be regenerated alone (the validator regenerates the held-out ones).

Modelling choices:
- Occupants per home follow the UK household-size shares in `OCCUPANT_SHARES`.
- Electric space and water heating appliances are excluded (`prev_heat_dev`): heating is
  generated separately as heat demand.
- Homes start on different dates (spread through the year), so months and seasons mix.
- Lighting uses the irradiance of richardsonpy's bundled test-reference-year weather file.
"""

from __future__ import annotations

import datetime as dt
import os
import random
from contextlib import contextmanager

import numpy as np
from tqdm import tqdm

from agents.profiles.realdata import DaySet, to_model_steps

# Share of households with 1..5 occupants (UK, rounded; 5 stands for 5 or more).
OCCUPANT_SHARES = (0.29, 0.35, 0.16, 0.13, 0.07)
FIRST_MONDAY = dt.date(2021, 1, 4)  # the calendar the homes are placed on


@contextmanager
def _seeded_random(seed: int):
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def home_seed(seed: int, number: int) -> int:
    """The seed of home `number` in a data set seeded with `seed`."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def _irradiance() -> np.ndarray:
    from richardsonpy.functions import load_radiation

    direct, diffuse = load_radiation.get_rad_from_try_path()
    return np.asarray(direct, float) + np.asarray(diffuse, float)  # hourly W/m2, one year


def simulate_home(seed: int, number: int, days: int, irradiance: np.ndarray | None = None
                  ) -> tuple[np.ndarray, dt.date, int]:
    """One home for `days` consecutive days: ([days, 1440] kW, first date, occupants)."""
    import richardsonpy
    from richardsonpy.classes import appliance, lighting, occupancy
    from richardsonpy.classes.electric_load import ElectricLoad
    from richardsonpy.classes.stochastic_el_load_wrapper import ElectricityProfile

    root = os.path.dirname(richardsonpy.__file__)
    irradiance = _irradiance() if irradiance is None else irradiance
    with _seeded_random(home_seed(seed, number)):
        occupants = random.choices(range(1, 6), weights=OCCUPANT_SHARES)[0]
        # Spread start dates over the year, keeping the whole run inside the weather file.
        first = FIRST_MONDAY + dt.timedelta(days=random.randrange(0, 364 - days))
        occ = occupancy.Occupancy(number_occupants=occupants, initial_day=first.isoweekday(),
                                  nb_days=days)
        appliances = appliance.Appliances(
            os.path.join(root, "inputs", "Appliances.csv"),
            annual_consumption=0.91 * ElectricLoad.standard_consumption["SFH"][occupants],
            randomize_appliances=True, prev_heat_dev=True)
        bulbs = lighting.load_lighting_profile(os.path.join(root, "inputs", "LightBulbs.csv"),
                                               index=random.randrange(100))
        profile = ElectricityProfile(appliances, bulbs)
        doy0 = first.timetuple().tm_yday - 1
        out = np.empty((days, 1440))
        for i in range(days):
            doy = doy0 + i
            light = np.interp(np.arange(1440), np.arange(24) * 60,
                              irradiance[doy * 24:(doy + 1) * 24])
            watts, _, _ = profile.power_sim(irradiation=light,
                                            weekend=(first + dt.timedelta(days=i)).weekday() >= 5,
                                            day=doy, occupancy=occ.occupancy[144 * i:144 * (i + 1)])
            out[i] = np.asarray(watts) / 1000
    return out, first, occupants


def richardson_days(seed: int, numbers: list[int], days: int, progress: bool = True) -> DaySet:
    """Homes `numbers` of the richardsonpy data set seeded `seed`, `days` days each."""
    irradiance = _irradiance()
    kw, home, day, weekend = [], [], [], []
    for number in tqdm(numbers, desc="richardsonpy homes", disable=not progress):
        minute_kw, first, _ = simulate_home(seed, number, days, irradiance)
        kw.append(to_model_steps(minute_kw, 60))
        home += [f"rich-{number}"] * days
        day.append(np.arange(days))
        weekend += [(first + dt.timedelta(days=i)).weekday() >= 5 for i in range(days)]
    n = len(home)
    return DaySet(np.concatenate(kw), np.array(home), np.concatenate(day), np.array(weekend),
                  np.full(n, "richardsonpy"))
