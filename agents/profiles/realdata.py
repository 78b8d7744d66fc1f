"""Measured household days the load model learns from, at the model's 15-minute resolution.

Sources:
- `eulv_days`: the 100 one-minute daily load profiles shipped with the IEEE European LV test
  feeder (kW, one day each, 100 different homes). Their calendar day is not documented; the
  trainer treats them as weekdays (see `TrainConfig.eulv_day_type`).
- `csv_days`: a user's profiles, one column per home (see `csvinput` for the checks).
- `agents.profiles.richardson`: several consecutive days per home from richardsonpy, the
  second source, which is what gives day-to-day transitions of one home.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.profiles.csvinput import read_series_csv
from agents.profiles.errors import ProfileError

MODEL_STEP_S = 900  # the load model's resolution
STEPS = 86_400 // MODEL_STEP_S


@dataclass
class DaySet:
    """Home-days of load. Row i is one day of one home.

    Attributes:
        kw: [n, STEPS] mean power per 15-minute step, kW.
        home: [n] home key, unique across sources (e.g. "eulv-7", "rich-1003").
        day: [n] day number within the home; consecutive days differ by one.
        weekend: [n] True on Saturday or Sunday.
        source: [n] "eulv", "richardsonpy" or "csv".
    """

    kw: np.ndarray
    home: np.ndarray
    day: np.ndarray
    weekend: np.ndarray
    source: np.ndarray

    def __len__(self) -> int:
        return len(self.kw)

    def subset(self, mask: np.ndarray) -> DaySet:
        return DaySet(self.kw[mask], self.home[mask], self.day[mask], self.weekend[mask],
                      self.source[mask])

    @staticmethod
    def concat(parts: list[DaySet]) -> DaySet:
        return DaySet(*(np.concatenate([getattr(p, f) for p in parts])
                        for f in ("kw", "home", "day", "weekend", "source")))

    def daily_kwh(self) -> np.ndarray:
        return self.kw.sum(axis=1) * MODEL_STEP_S / 3600


def to_model_steps(kw: np.ndarray, step_s: int) -> np.ndarray:
    """Average [..., 86400/step_s] power to [..., STEPS]; step_s must divide 900 s."""
    per = MODEL_STEP_S // step_s
    return kw.reshape(*kw.shape[:-1], STEPS, per).mean(axis=-1)


def eulv_dir() -> Path:
    from grid.feeder import FEEDER_DIR

    return FEEDER_DIR / "eulv" / "Daily_1min_100profiles"


def eulv_days(weekend: bool = False) -> DaySet:
    """The European LV feeder's daily profiles (numbered 1..100), one day per home."""
    folder = eulv_dir()
    numbers = list(range(1, 101))
    rows = []
    for n in numbers:
        path = folder / f"load_profile_{n}.txt"
        kw = np.loadtxt(path)
        if kw.shape != (1440,) or not np.isfinite(kw).all() or (kw < 0).any():
            raise ProfileError(f"{path}: expected 1440 non-negative one-minute kW values")
        rows.append(to_model_steps(kw, 60))
    n = len(numbers)
    return DaySet(np.array(rows), np.array([f"eulv-{k}" for k in numbers]), np.zeros(n, int),
                  np.full(n, weekend), np.full(n, "eulv"))


def csv_days(path: str | Path, units: str = "kW", fill: str = "none",
             max_gap_s: float = 3600.0, timezone: str = "UTC") -> DaySet:
    """Whole local days of every home column of a load CSV.

    The resolution must divide 15 minutes (it is averaged up to it). Partial days at the
    ends, and days whose length is not 24 h (daylight-saving changes), are skipped, and so
    are days with no energy at all, which have no shape to learn.
    """
    def usable(step_s: int) -> str | None:
        if MODEL_STEP_S % step_s:
            return f"the load model needs a resolution that divides {MODEL_STEP_S} s"
        return None

    table, step_s = read_series_csv(path, None, "load", units, fill=fill, max_gap_s=max_gap_s,
                                    timezone=timezone, resolution_ok=usable)
    local = table.index.tz_convert(timezone)
    date = local.normalize().tz_localize(None)
    per_day = 86_400 // step_s
    kw, home, day, weekend = [], [], [], []
    first = date[0]
    for d in date.unique():
        rows = np.flatnonzero(date == d)
        if len(rows) != per_day or local[rows[0]].hour or local[rows[0]].minute:
            continue
        block = table.to_numpy()[rows].T  # [homes, steps]
        for name, values in zip(table.columns, block):
            if values.sum() <= 0:
                continue
            kw.append(to_model_steps(values, step_s))
            home.append(f"csv-{name}")
            day.append((d - first).days)
            weekend.append(d.weekday() >= 5)
    if not kw:
        raise ProfileError(f"{path}: no whole local day ({timezone}) with non-zero load")
    n = len(kw)
    return DaySet(np.array(kw), np.array(home), np.array(day), np.array(weekend),
                  np.full(n, "csv"))
