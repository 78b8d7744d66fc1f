"""Scenario configuration: one TOML file per scenario, validated with pydantic.

The file reads as a wiring diagram: which feeder, how many households and how they are
sharded and placed, which markets they trade in, who prices what, where the profiles come
from, and how the run is stepped and recorded. Unknown keys are errors (a typo must not
silently fall back to a default), and every error names the file, the key and the reason.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A scenario file that cannot be used; names the file, the key and the reason."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Range = tuple[NonNegative, NonNegative]


class RunConfig(_Section):
    name: str = "scenario"
    seed: int = 0
    start: dt.datetime = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    steps: Annotated[int, Field(gt=0)] = 96
    dt_s: Annotated[int, Field(gt=0)] = 900  # step length, seconds
    checkpoint_every: Annotated[int, Field(gt=0)] = 24  # steps between checkpoints
    phase_timeout_s: Positive = 120.0  # a phase that takes longer fails, naming the actors
    record_messages: bool = False  # also write every message to the `messages` table


class GridConfig(_Section):
    feeder: str = "ieee123"  # shipped name or path to a master .dss file
    feeder_load_scale: NonNegative = 0.0  # the feeder's own loads; 0 = households replace them
    vmin_pu: Positive = 0.95
    vmax_pu: Positive = 1.05
    tol: Positive = 1e-9
    device: str = "auto"  # torch device of the power flow; auto: a GPU if there is one

    @model_validator(mode="after")
    def _limits(self) -> GridConfig:
        if self.vmin_pu >= self.vmax_pu:
            raise ValueError(f"vmin_pu ({self.vmin_pu}) must be below vmax_pu ({self.vmax_pu})")
        return self


class BatteryConfig(_Section):
    share: Fraction = 0.3  # fraction of households with a battery
    capacity_kwh: Range = (5.0, 13.5)  # uniform range
    power_kw: Range = (2.5, 5.0)
    efficiency: Annotated[float, Field(gt=0, le=1)] = 0.95  # each way
    soc_min: Fraction = 0.1
    soc_max: Fraction = 0.9
    soc_initial: Fraction = 0.5


class PVConfig(_Section):
    share: Fraction = 0.5  # fraction of households with PV
    kwp: Range = (2.0, 6.0)


class HomeConfig(_Section):
    """One household given explicitly (instead of drawn from the shares and ranges)."""

    profile: Annotated[int, Field(ge=0)]  # home index in the profile data
    pv_kwp: NonNegative = 0.0
    battery_kwh: NonNegative = 0.0
    battery_kw: NonNegative = 0.0


class HouseholdConfig(_Section):
    count: Annotated[int, Field(gt=0)] = 1000
    shard_size: Annotated[int, Field(gt=0)] = 500  # households per shard actor
    # "by_load": at the feeder's load connections, drawn in proportion to their kW;
    # "one_per_load": household k at load k (the European LV feeder's 55 homes)
    placement: Literal["by_load", "one_per_load"] = "by_load"
    power_factor: Annotated[float, Field(gt=0, le=1)] = 0.95  # of the household load
    # multiplies every household's load, PV and battery: 0.1 puts 10,000 households where
    # the profiles would put 1,000 (the feeder's rating stays what it is)
    size_factor: Positive = 1.0
    battery: BatteryConfig = BatteryConfig()
    pv: PVConfig = PVConfig()
    homes: list[HomeConfig] = []  # explicit households; if given, one per household

    @model_validator(mode="after")
    def _explicit(self) -> HouseholdConfig:
        if self.homes and len(self.homes) != self.count:
            raise ValueError(f"homes lists {len(self.homes)} households, count is {self.count}")
        return self


class ProfileConfig(_Section):
    """Where load, PV and exogenous series come from: a dataset written by `cosim data
    generate` (path), or the generator itself run for this scenario (generator)."""

    dataset: Path | None = None
    generator: Path | None = None  # a profile-generator config (TOML)

    @model_validator(mode="after")
    def _one_source(self) -> ProfileConfig:
        if (self.dataset is None) == (self.generator is None):
            raise ValueError("give exactly one of dataset or generator")
        return self


class MarketConfig(_Section):
    households_per_market: Annotated[int, Field(gt=0)] = 100  # one microgrid market each


class TariffConfig(_Section):
    import_price: NonNegative = 0.30  # currency/kWh, the distributor's retail tariff
    export_price: NonNegative = 0.08  # currency/kWh, its feed-in tariff
    peak_import_price: NonNegative | None = None  # time of use: price in peak hours
    peak_hours: tuple[int, int] = (17, 21)  # [start, end) local hour of the peak


class AggregatorConfig(_Section):
    count: Annotated[int, Field(ge=0)] = 0
    customer_share: Fraction = 0.3  # of households retailed by aggregators
    margin: NonNegative = 0.03  # currency/kWh over the wholesale price, both ways


class ScenarioConfig(_Section):
    run: RunConfig = RunConfig()
    grid: GridConfig = GridConfig()
    households: HouseholdConfig = HouseholdConfig()
    profiles: ProfileConfig
    markets: MarketConfig = MarketConfig()
    tariff: TariffConfig = TariffConfig()
    aggregators: AggregatorConfig = AggregatorConfig()


def load_config(path: str | Path) -> ScenarioConfig:
    """Read and validate a scenario TOML. Relative paths inside resolve against its folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: scenario file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, path)


def parse_config(raw: dict, path: str | Path = "<config>") -> ScenarioConfig:
    """Validate a scenario given as a dict (the parsed TOML)."""
    path = Path(path)
    try:
        config = ScenarioConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(part) for part in err["loc"]) or "(top level)"
            problems.append(f"{path}: {key}: {err['msg']}")
        raise ConfigError("\n".join(problems)) from None
    base = path.parent
    updates = {
        name: (value if value is None or value.is_absolute() else (base / value).resolve())
        for name in ("dataset", "generator")
        if (value := getattr(config.profiles, name)) is not None
    }
    if updates:
        config = config.model_copy(
            update={"profiles": config.profiles.model_copy(update=updates)})
    feeder = config.grid.feeder
    if feeder.lower().endswith(".dss") and not Path(feeder).is_absolute():
        grid = config.grid.model_copy(update={"feeder": str((base / feeder).resolve())})
        config = config.model_copy(update={"grid": grid})
    return config
