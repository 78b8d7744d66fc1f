"""The profile generator's config: one TOML file, validated with pydantic.

Every section and key has a default, so an empty file is a valid config (100 homes, 7 days,
15-minute steps, the trained load model). Unknown keys are errors, so a typo never falls
back to a default silently; every error names the file, the key and the reason. Relative
paths (model weights, CSVs) resolve against the config file's folder.

    seed = 0
    homes = 100
    days = 7
    start = 2024-01-08          # local date of the first day
    dt_s = 900                  # step, seconds
    timezone = "Europe/London"  # the local clock that behaviour follows

    [location]  latitude, longitude, altitude_m
    [load]      model = "trained" | "mahtm", weights (a model file from `cosim data train`)
    [pv]        share, kwp, tilt_deg, azimuth_deg, losses, gamma_per_k
    [ev]        share, battery_kwh, kwh_per_km, charger_kw, and the trip model (agents.profiles.ev)
    [heat]      heat_pump_share, loss_kw_per_k, day_base_c, night_base_c, night_from_h, night_to_h
    [clouds]    shares, persistence, means, stds, fluctuation_s   (agents.profiles.weather)
    [temperature] mean_c, ..., or csv = "file.csv" (with column, units, fill, ...)
    [price]     level, season, morning, evening, solar, noise, ..., or csv = ...
    [carbon]    the same, for kgCO2/kWh
    [mahtm]     houses = "training" | "evaluation" | "testing", and its noise and daylight
"""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agents.profiles.errors import ProfileError

Fraction = Annotated[float, Field(ge=0, le=1)]
NonNegative = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
Hour = Annotated[float, Field(ge=0, le=24)]
Tilt = Annotated[float, Field(ge=0, le=90)]
Azimuth = Annotated[float, Field(ge=0, le=360)]  # degrees clockwise from north; 180 = south


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ordered(name: str, pair: tuple[float, float]) -> None:
    if pair[0] > pair[1]:
        raise ValueError(f"{name}: the low end {pair[0]} is above the high end {pair[1]}")


class LocationConfig(_Section):
    latitude: Annotated[float, Field(ge=-90, le=90)] = 51.5
    longitude: Annotated[float, Field(ge=-180, le=180)] = -0.13
    altitude_m: float = 20.0


class LoadConfig(_Section):
    model: Literal["trained", "mahtm"] = "trained"
    weights: Path | None = None  # None: the shipped agents/profiles/weights/load_model.pt


class PVConfig(_Section):
    share: Fraction = 0.3  # fraction of homes with PV
    kwp: tuple[Positive, Positive] = (2.0, 6.0)  # DC rating, uniform range, kW
    tilt_deg: tuple[Tilt, Tilt] = (15.0, 45.0)
    azimuth_deg: tuple[Azimuth, Azimuth] = (135.0, 225.0)
    losses: Annotated[float, Field(ge=0, lt=1)] = 0.14  # wiring, soiling, inverter
    gamma_per_k: Annotated[float, Field(le=0)] = -0.004  # DC power temperature coefficient

    @model_validator(mode="after")
    def _ranges(self) -> PVConfig:
        for name in ("kwp", "tilt_deg", "azimuth_deg"):
            _ordered(name, getattr(self, name))
        return self


class EVConfig(_Section):
    """Ownership and battery, then the trip model of agents.profiles.ev (its docstring
    explains each parameter). Pairs are (weekday, weekend)."""

    share: Fraction = 0.3
    battery_kwh: list[Positive] = [40.0, 60.0, 75.0]  # drawn with equal probability
    kwh_per_km: tuple[Positive, Positive] = (0.15, 0.20)
    charger_kw: Positive = 7.4
    use_weekday: Fraction = 0.85
    use_weekend: Fraction = 0.65
    second_tour: Fraction = 0.3
    depart_h: tuple[Hour, Hour] = (7.75, 10.5)
    depart_sd_h: tuple[NonNegative, NonNegative] = (1.25, 2.0)
    dwell_h: tuple[Positive, Positive] = (8.0, 3.0)
    dwell_sigma: NonNegative = 0.4
    distance_km: tuple[Positive, Positive] = (30.0, 35.0)
    distance_sigma: NonNegative = 0.7
    second_dwell_h: Positive = 1.5
    second_distance_km: Positive = 12.0
    speed_kmh: Positive = 40.0
    home_by_h: Annotated[float, Field(ge=21, le=24)] = 23.75
    usable_share: Annotated[float, Field(gt=0, le=1)] = 0.8

    @model_validator(mode="after")
    def _ranges(self) -> EVConfig:
        if not self.battery_kwh:
            raise ValueError("battery_kwh: give at least one size")
        _ordered("kwh_per_km", self.kwh_per_km)
        return self


class HeatConfig(_Section):
    heat_pump_share: Fraction = 0.2
    loss_kw_per_k: tuple[NonNegative, NonNegative] = (0.12, 0.30)  # heat-loss coefficient
    day_base_c: float = 15.5  # balance-point temperature
    night_base_c: float = 12.0  # set-back balance point
    night_from_h: Hour = 23.0
    night_to_h: Hour = 6.0

    @model_validator(mode="after")
    def _ranges(self) -> HeatConfig:
        _ordered("loss_kw_per_k", self.loss_kw_per_k)
        return self


class CloudConfig(_Section):
    # share of clear, mixed and overcast days
    shares: tuple[NonNegative, NonNegative, NonNegative] = (0.25, 0.45, 0.30)
    persistence: Fraction = 0.5
    means: tuple[Fraction, Fraction, Fraction] = (0.95, 0.65, 0.30)  # clear-sky index
    stds: tuple[NonNegative, NonNegative, NonNegative] = (0.03, 0.20, 0.08)
    fluctuation_s: Positive = 1800.0

    @model_validator(mode="after")
    def _shares(self) -> CloudConfig:
        if sum(self.shares) <= 0:
            raise ValueError("shares: at least one regime needs a positive share")
        return self


class CsvSource(_Section):
    """A series read from a CSV instead of the synthetic model (see agents.profiles.csvinput)."""

    csv: Path | None = None
    column: str = "value"
    time_column: str = "time"
    units: str | None = None  # None: the quantity's canonical unit
    fill: Literal["none", "linear"] = "none"
    max_gap_s: Positive = 3600.0
    timezone: str = "UTC"  # of naive timestamps


class TemperatureConfig(CsvSource):
    column: str = "temperature"
    mean_c: float = 11.0
    season_amplitude_c: NonNegative = 7.0
    warmest_day: Annotated[int, Field(ge=1, le=366)] = 200
    day_amplitude_c: NonNegative = 4.0
    anomaly_std_c: NonNegative = 2.5
    anomaly_day_corr: Annotated[float, Field(ge=0, lt=1)] = 0.7


class SeriesConfig(CsvSource):
    """A synthetic series of agents.profiles.prices (its docstring has the formula)."""

    level: float
    season: float
    morning: float
    evening: float
    solar: float
    noise: NonNegative
    noise_time_s: Positive = 3 * 3600.0
    weekend_discount: Fraction = 0.0
    floor: float | None = None
    coldest_day: Annotated[int, Field(ge=1, le=366)] = 20


class PriceConfig(SeriesConfig):
    column: str = "price"
    level: float = 0.08  # currency/kWh
    season: float = 0.2
    morning: float = 0.03
    evening: float = 0.07
    solar: float = 0.04
    noise: NonNegative = 0.012
    weekend_discount: Fraction = 0.1


class CarbonConfig(SeriesConfig):
    column: str = "carbon"
    level: float = 0.20  # kgCO2/kWh
    season: float = 0.15
    morning: float = 0.02
    evening: float = 0.05
    solar: float = 0.10
    noise: NonNegative = 0.02
    floor: float | None = 0.02


class MahtmConfig(_Section):
    houses: Literal["training", "evaluation", "testing"] = "training"
    load_noise_std: NonNegative = 0.01  # on the normalised load
    pv_noise_std: NonNegative = 0.1  # on the normalised PV
    sunrise_h: Hour = 5.0
    daylight_h: Annotated[float, Field(gt=0, le=24)] = 14.0


class GenerateConfig(_Section):
    seed: int = 0
    homes: Annotated[int, Field(ge=1)] = 100
    days: Annotated[int, Field(ge=1)] = 7
    start: dt.date = dt.date(2024, 1, 8)
    dt_s: Annotated[int, Field(ge=60, le=86_400)] = 900
    timezone: str = "Europe/London"
    location: LocationConfig = LocationConfig()
    load: LoadConfig = LoadConfig()
    pv: PVConfig = PVConfig()
    ev: EVConfig = EVConfig()
    heat: HeatConfig = HeatConfig()
    clouds: CloudConfig = CloudConfig()
    temperature: TemperatureConfig = TemperatureConfig()
    price: PriceConfig = PriceConfig()
    carbon: CarbonConfig = CarbonConfig()
    mahtm: MahtmConfig = MahtmConfig()

    @model_validator(mode="after")
    def _step(self) -> GenerateConfig:
        if 86_400 % self.dt_s or self.dt_s % 60:
            raise ValueError(f"dt_s = {self.dt_s}: the step must be whole minutes and divide a "
                             "day (e.g. 60, 300, 900, 1800, 3600)")
        return self


def _where(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def load_config(path: str | Path, **overrides) -> GenerateConfig:
    """Read and validate a generator TOML; `overrides` (e.g. homes=10) replace top-level keys.

    Raises ProfileError naming the file, the key and the reason.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        cfg = GenerateConfig.model_validate(raw)
    except ValidationError as exc:
        reasons = "; ".join(f"key '{_where(e['loc'])}': {e['msg']}" for e in exc.errors())
        raise ProfileError(f"{path}: {reasons}") from None
    return _resolve_paths(cfg, path.parent)


def _resolve_paths(cfg: GenerateConfig, base: Path) -> GenerateConfig:
    def resolved(value: Path | None) -> Path | None:
        return value if value is None or value.is_absolute() else (base / value).resolve()

    update = {"load": cfg.load.model_copy(update={"weights": resolved(cfg.load.weights)})}
    for name in ("temperature", "price", "carbon"):
        section = getattr(cfg, name)
        update[name] = section.model_copy(update={"csv": resolved(section.csv)})
    return cfg.model_copy(update=update)
