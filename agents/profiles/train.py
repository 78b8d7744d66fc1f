"""`cosim data train`: fit the household load model from the data the project ships.

Reads top to bottom:
1. Collect home-days: the European LV feeder's 100 daily profiles, richardsonpy homes over
   consecutive days, and optionally a user CSV (`realdata`, `richardson`).
2. Calibrate: richardsonpy's German-calibrated consumption is scaled by one factor so its
   median daily energy equals the feeder's, which anchors magnitudes to the feeder's homes
   while richardsonpy supplies day-to-day dynamics and weekend days.
3. Hold out `test_share` of the homes of each source (by home, never by day) for
   `cosim data validate`; everything below sees the training homes only.
4. Fit behaviour clusters, Markov chains and the size distribution (`behaviour`).
5. Train one GAN per (day type, cluster) on that cluster's normalised days (`gan`), and
   record the limits generated days are held to (`loadmodel`).

Deterministic from `seed`: richardsonpy homes are seeded one by one, K-means and the
split are seeded, and each GAN is trained on one torch thread from its own seed.
"""

from __future__ import annotations

import math
import platform
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from agents.profiles.behaviour import DAY_TYPES, Behaviour, normalise
from agents.profiles.errors import ProfileError
from agents.profiles.gan import GanConfig, train_shape_generator
from agents.profiles.loadmodel import LoadModel
from agents.profiles.realdata import DaySet, csv_days, eulv_days
from agents.profiles.richardson import richardson_days
from agents.profiles.timegrid import WEEKDAY, WEEKEND


@dataclass
class TrainConfig:
    """What `cosim data train` fits, and on what."""

    seed: int = 0
    clusters: int = 4  # behaviour clusters per day type
    brackets: int = 8  # relative daily-energy brackets of the size chain
    eulv: bool = True  # use the European LV feeder's profiles
    eulv_day_type: str = WEEKDAY  # their undocumented calendar day: weekday or weekend
    richardson_homes: int = 48
    richardson_days: int = 28  # consecutive days per richardsonpy home
    csv: str | None = None  # a user load CSV, one column per home (see csvinput)
    csv_units: str = "kW"
    csv_fill: str = "none"
    csv_max_gap_s: float = 3600.0
    csv_timezone: str = "UTC"
    test_share: float = 0.2  # share of each source's homes held out for validation
    gan: GanConfig = field(default_factory=GanConfig)

    def check(self) -> None:
        if self.eulv_day_type not in (WEEKDAY, WEEKEND):
            raise ProfileError(f"eulv_day_type must be {WEEKDAY!r} or {WEEKEND!r}")
        if not 0 < self.test_share < 1:
            raise ProfileError(f"test_share must be between 0 and 1, got {self.test_share}")
        if self.richardson_homes and not 2 <= self.richardson_days <= 300:
            raise ProfileError("richardson_days must be between 2 and 300")
        if self.clusters < 1 or self.brackets < 1:
            raise ProfileError("clusters and brackets must be at least 1")
        if not (self.eulv or self.richardson_homes or self.csv):
            raise ProfileError("no training data: enable eulv, richardsonpy homes or a csv")


@dataclass
class RealData:
    """The real home-days of a training run, split by home."""

    train: DaySet
    test: DaySet
    richardson_scale: float  # factor applied to richardsonpy power


@contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def held_out_homes(cfg: TrainConfig) -> dict[str, list[int]]:
    """The held-out homes of the shipped sources: EU LV profile numbers (1..100) and
    richardsonpy home numbers. CSV homes are split in `collect`, once their names are known."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1]))

    def pick(ids: list) -> list:
        n = math.ceil(cfg.test_share * len(ids)) if len(ids) > 1 else 0
        return sorted(ids[i] for i in rng.permutation(len(ids))[:n])

    return {"eulv": pick(list(range(1, 101))) if cfg.eulv else [],
            "richardsonpy": pick(list(range(cfg.richardson_homes)))}


def collect(cfg: TrainConfig, richardson_numbers: list[int] | None = None,
            richardson_scale: float | None = None, progress: bool = True) -> RealData:
    """Read and split the real data of `cfg`.

    `richardson_numbers` limits which richardsonpy homes are simulated (the validator
    regenerates a sample); pass the model's recorded `richardson_scale` with it, so the
    calibration is the training run's and not the sample's.
    """
    cfg.check()
    held = held_out_homes(cfg)
    parts = []
    if cfg.eulv:
        parts.append(eulv_days(weekend=cfg.eulv_day_type == WEEKEND))
    scale = 1.0
    if cfg.richardson_homes:
        numbers = (list(range(cfg.richardson_homes)) if richardson_numbers is None
                   else richardson_numbers)
        rich = richardson_days(cfg.seed, numbers, cfg.richardson_days, progress=progress)
        if richardson_scale is not None:
            scale = richardson_scale
        elif cfg.eulv:
            scale = float(np.median(parts[0].daily_kwh()) / np.median(rich.daily_kwh()))
        rich.kw = rich.kw * scale
        parts.append(rich)
    if cfg.csv:
        days = csv_days(cfg.csv, cfg.csv_units, cfg.csv_fill, cfg.csv_max_gap_s,
                        cfg.csv_timezone)
        names = sorted(set(days.home))
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2]))
        n = math.ceil(cfg.test_share * len(names)) if len(names) > 1 else 0
        held["csv"] = sorted(names[i] for i in rng.permutation(len(names))[:n])
        parts.append(days)
    data = DaySet.concat(parts)
    test_keys = ({f"eulv-{k}" for k in held["eulv"]}
                 | {f"rich-{k}" for k in held["richardsonpy"]} | set(held.get("csv", [])))
    is_test = np.isin(data.home, sorted(test_keys))
    return RealData(train=data.subset(~is_test), test=data.subset(is_test),
                    richardson_scale=scale)


def train(cfg: TrainConfig, progress: bool = True) -> LoadModel:
    """Fit the load model of `cfg` (see the module docstring)."""
    real = collect(cfg, progress=progress)
    behaviour, labels = Behaviour.fit(real.train, cfg.clusters, cfg.brackets, cfg.seed)
    shapes = normalise(real.train.kw)
    generators, caps = {}, {}
    jobs = [(w, kind, k) for w, kind in enumerate(DAY_TYPES) for k in range(cfg.clusters)]
    sizes = {}
    with _one_thread():
        for w, kind, k in tqdm(jobs, desc="GAN per cluster", disable=not progress):
            rows = (real.train.weekend == bool(w)) & (labels == k)
            sizes[f"{kind}/{k}"] = int(rows.sum())
            caps[f"{kind}/{k}"] = shapes[rows].max(axis=0)
            seed = int(np.random.SeedSequence([cfg.seed, 3, w, k]).generate_state(1)[0])
            generators[f"{kind}/{k}"] = train_shape_generator(shapes[rows], cfg.gan, seed)
    meta = {
        "train": {k: v for k, v in asdict(cfg).items() if k != "gan"},
        "gan": asdict(cfg.gan),
        "richardson_scale": real.richardson_scale,
        "test_homes": held_out_of(real),
        "days": {"train": len(real.train), "test": len(real.test),
                 "train_weekday": int((~real.train.weekend).sum()),
                 "train_weekend": int(real.train.weekend.sum())},
        "cluster_days": sizes,
        "versions": _versions(),
    }
    return LoadModel(behaviour, generators, caps, float(real.train.kw.max()), meta)


def held_out_of(real: RealData) -> dict[str, list[str]]:
    """Held-out home keys by source, as recorded in the model file."""
    out: dict[str, list[str]] = {}
    for key, source in zip(real.test.home, real.test.source):
        if key not in out.setdefault(source, []):
            out[source].append(key)
    return out


def _versions() -> dict[str, str]:
    import richardsonpy
    import sklearn

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "scikit-learn": sklearn.__version__,
            "richardsonpy": getattr(richardsonpy, "__version__", "?")}
