"""MAHTM's four household types, by the assets that matter to its pricing layers.

- passive consumer: no PV, no battery;
- passive prosumer: PV only;
- active prosumer: PV and a battery;
- active consumer: a battery only.
Only households with a battery act in MAHTM. EVs, heat pumps, flexible loads and
generators are orthogonal to the type (a passive consumer may still own a heat pump).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import IntEnum

import numpy as np


class HouseholdType(IntEnum):
    PASSIVE_CONSUMER = 0
    PASSIVE_PROSUMER = 1
    ACTIVE_PROSUMER = 2
    ACTIVE_CONSUMER = 3

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


def pairing_error(home: object) -> str | None:
    """Why a home's device sizes do not make devices, or None: a store without power (or
    power without a store) is a typo, not a device, and V2G needs a car. Reads the
    attributes battery_kwh, battery_kw, ev_kwh, ev_kw and ev_v2g."""
    for energy, power in (("battery_kwh", "battery_kw"), ("ev_kwh", "ev_kw")):
        if (getattr(home, energy) > 0) != (getattr(home, power) > 0):
            return (f"{energy} = {getattr(home, energy)} and {power} = "
                    f"{getattr(home, power)}: give both or neither")
    if home.ev_v2g and not home.ev_kwh:
        return "ev_v2g needs a car (ev_kwh and ev_kw)"
    return None


def has_pv(kind: object) -> np.ndarray:
    k = np.asarray(kind)
    return (k == HouseholdType.PASSIVE_PROSUMER) | (k == HouseholdType.ACTIVE_PROSUMER)


def has_battery(kind: object) -> np.ndarray:
    k = np.asarray(kind)
    return (k == HouseholdType.ACTIVE_PROSUMER) | (k == HouseholdType.ACTIVE_CONSUMER)


def classify(pv: object, battery: object) -> np.ndarray:
    """Type codes [households] from PV and battery ownership (bools)."""
    pv, battery = np.asarray(pv, bool), np.asarray(battery, bool)
    return np.select([pv & battery, pv, battery],
                     [HouseholdType.ACTIVE_PROSUMER, HouseholdType.PASSIVE_PROSUMER,
                      HouseholdType.ACTIVE_CONSUMER], HouseholdType.PASSIVE_CONSUMER).astype(int)


def draw_types(n: int, shares: Mapping[HouseholdType | str, float] | Sequence[float],
               seed: int) -> np.ndarray:
    """`n` type codes in the given shares (exact counts by largest remainder), shuffled
    with `seed`. `shares`: four numbers in HouseholdType order, or a mapping by type or
    label ("active prosumer"); they are normalised."""
    if isinstance(shares, Mapping):
        w = np.zeros(len(HouseholdType))
        for key, value in shares.items():
            kind = key if isinstance(key, HouseholdType) else _by_label(str(key))
            w[kind] = value
    else:
        w = np.asarray(shares, float)
    if w.shape != (len(HouseholdType),) or (w < 0).any() or not np.isfinite(w).all() \
            or w.sum() <= 0:
        raise ValueError(f"household type shares {list(w)}: need four non-negative numbers "
                         f"with a positive sum, in the order {[t.label for t in HouseholdType]}")
    exact = w / w.sum() * n
    counts = np.floor(exact).astype(int)
    counts[np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]] += 1
    kinds = np.repeat(np.arange(len(HouseholdType)), counts)
    return np.random.default_rng(seed).permutation(kinds)


def _by_label(label: str) -> HouseholdType:
    for kind in HouseholdType:
        if label.lower().replace("_", " ") == kind.label:
            return kind
    raise ValueError(f"unknown household type {label!r}; known: "
                     f"{[t.label for t in HouseholdType]}")
