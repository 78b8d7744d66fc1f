"""Scenario configuration: one TOML file per scenario, validated with pydantic.

The file reads as a wiring diagram: which feeder, how many households and how they are
sharded and placed, which markets they trade in, who prices what, where the profiles come
from, and how the run is stepped and recorded. Unknown keys are errors (a typo must not
silently fall back to a default), and every error names the file, the key and the reason.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
import zoneinfo
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from agents.households.typology import pairing_error


class ConfigError(ValueError):
    """A scenario file that cannot be used; names the file, the key and the reason."""


# Numbers are taken as written: a string or a boolean where a number belongs is a typo
# (`count = "10"`, `share = true`), not something to coerce, and TOML's inf and nan are
# never a sensible size, price or temperature. Integers still pass where floats belong.
Number = Annotated[float, Strict(), AllowInfNan(False)]
Integer = Annotated[int, Strict()]
Boolean = Annotated[bool, Strict()]  # only true or false, not 1 or "yes"
Positive = Annotated[Number, Field(gt=0)]
NonNegative = Annotated[Number, Field(ge=0)]
Fraction = Annotated[Number, Field(ge=0, le=1)]
PositiveInt = Annotated[Integer, Field(gt=0)]
NonNegativeInt = Annotated[Integer, Field(ge=0)]


def _has_offset(value: dt.datetime) -> dt.datetime:
    # a TOML local datetime would be read in the machine's own time zone, so the same
    # file would start at different instants on different machines
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value.isoformat()} has no UTC offset; add Z (UTC) or an offset, "
                         f"e.g. {value.isoformat()}Z or {value.isoformat()}+01:00")
    return value


AwareDatetime = Annotated[dt.datetime, AfterValidator(_has_offset)]
Range = tuple[NonNegative, NonNegative]  # [low, high], drawn uniformly
PolicyKind = Literal["rule", "mpc", "bank", "external", "bidder"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _ranges_ordered(self) -> _Section:
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if info.annotation == Range and value[0] > value[1]:
                raise ValueError(f"{name} = {list(value)}: the low end is above the high end")
        return self


class RunConfig(_Section):
    name: str = "scenario"
    seed: NonNegativeInt = 0
    start: AwareDatetime = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    steps: PositiveInt = 96
    dt_s: PositiveInt = 900  # step length, seconds
    # steps between checkpoints, each of which writes the records of the steps since the
    # last. "auto" (the default) resolves by the household count when the scenario is read:
    # AUTO_CHECKPOINT_HOUSEHOLD_STEPS / count steps, at least 24 and at most 960, and no
    # more than AUTO_MOST_HOUSEHOLD_STEPS household-steps (see there)
    checkpoint_every: PositiveInt = 24
    # a phase that takes longer fails, naming the actors (on Ray, a plan of the steps that
    # took a quarter of it: Simulation.run)
    phase_timeout_s: Positive = 120.0
    record_messages: Boolean = False  # also write every message to the `messages` table
    # a step whose power flow does not converge: "stop" the run with an error naming the
    # step and the worst bus, or "record" it as not converged and go on
    on_nonconvergence: Literal["stop", "record"] = "stop"
    # steps of price forecast each PriceSignal carries (MPC plans over them); default: a day
    forecast_steps: PositiveInt | None = None
    # the local clock of the households and tariffs (comfort hours, commutes, peak hours);
    # an IANA name such as "Europe/London". Records stay in UTC.
    timezone: str = "UTC"

    @model_validator(mode="before")
    @classmethod
    def _every(cls, data: object) -> object:
        every = data.get("checkpoint_every") if isinstance(data, dict) else None
        if isinstance(every, str) and every != "auto":
            raise ValueError(f'checkpoint_every must be a positive integer or "auto", got '
                             f"{every!r}")
        return data

    @model_validator(mode="after")
    def _zone(self) -> RunConfig:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {self.timezone!r} is not an IANA time zone") from None
        return self

    @property
    def forecast_horizon(self) -> int:
        """Steps of price forecast in each PriceSignal (`forecast_steps`, or one day)."""
        return self.forecast_steps or max(1, round(86400 / self.dt_s))


class GridConfig(_Section):
    feeder: str = "ieee123"  # shipped name or path to a master .dss file
    feeder_load_scale: NonNegative = 0.0  # the feeder's own loads; 0 = households replace them
    # the loading (x the feeder's loads) at which OpenDSS sets the regulator taps and
    # capacitors, which then stay fixed; near the households' share of the design load
    controls_load_scale: Positive = 1.0
    # "frozen": taps and capacitors stay where controls_load_scale set them; "opendss": the
    # feeder's RegControls and CapControls act after every step's power flow, as OpenDSS's
    # static control mode does (grid.controls), and the `controls` table records them
    controls: Literal["frozen", "opendss"] = "frozen"
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
    efficiency: Annotated[Number, Field(gt=0, le=1)] = 0.95  # each way
    soc_min: Fraction = 0.1
    soc_max: Fraction = 0.9
    soc_initial: Fraction = 0.5
    degradation_cost: NonNegative = 0.0  # currency per kWh of throughput (wear)

    @model_validator(mode="after")
    def _soc(self) -> BatteryConfig:
        if not self.soc_min <= self.soc_initial <= self.soc_max:
            raise ValueError(f"need soc_min <= soc_initial <= soc_max, got {self.soc_min}, "
                             f"{self.soc_initial}, {self.soc_max}")
        return self


class PVConfig(_Section):
    share: Fraction = 0.5  # fraction of households with PV
    kwp: Range = (2.0, 6.0)


class EVConfig(_Section):
    """Electric cars. Owners drive the trips of their home's profile (homes of the profile
    data without a car lend an owner's pattern) and must reach `target_soc` by each
    departure; with V2G they may also discharge into the home."""

    share: Fraction = 0.0  # fraction of households with a car
    capacity_kwh: Range = (40.0, 75.0)
    charge_kw: Range = (3.7, 11.0)  # home charger
    v2g_share: Fraction = 0.0  # fraction of car owners whose charger can discharge
    target_soc: Fraction = 0.8
    soc_initial: Fraction = 0.8
    efficiency: Annotated[Number, Field(gt=0, le=1)] = 0.93  # each way
    degradation_cost: NonNegative = 0.0  # currency per kWh of throughput (wear)


class HeatPumpConfig(_Section):
    """Heat pumps heating a 1R1C house within a comfort band (agents.devices.heat_pump)."""

    share: Fraction = 0.0  # fraction of households with a heat pump
    power_kw: Range = (1.5, 4.0)  # electric rating
    cop: Annotated[Number, Field(ge=1)] = 3.0
    resistance_k_per_kw: Positive = 5.0  # house: 1 / heat-loss coefficient
    capacitance_kwh_per_k: Positive = 5.0  # house: thermal mass
    comfort_c: Range = (18.0, 22.0)  # band in the comfort hours (07-10, 17-22 local)
    setback_c: Range = (16.0, 24.0)  # band otherwise
    indoor_initial_c: Number = 20.0


class FlexibleLoadConfig(_Section):
    """Appliance demand that may wait (washing, dishwashing): a share of each owner's load
    can be served up to `window_h` later."""

    share: Fraction = 0.0  # fraction of households with flexible appliances
    flexible_share: Fraction = 0.2  # of their load
    window_h: NonNegative = 4.0


class GeneratorConfig(_Section):
    """Controllable generators (a micro-CHP or diesel set), run when cheaper than imports."""

    share: Fraction = 0.0
    max_kw: Range = (2.0, 5.0)
    cost_linear: NonNegative = 0.25  # currency/kWh
    cost_quadratic: NonNegative = 0.0  # currency/kW2h


class HomeConfig(_Section):
    """One household given explicitly (instead of drawn from the shares and ranges)."""

    profile: NonNegativeInt  # home index in the profile data
    pv_kwp: NonNegative = 0.0
    battery_kwh: NonNegative = 0.0
    battery_kw: NonNegative = 0.0
    ev_kwh: NonNegative = 0.0
    ev_kw: NonNegative = 0.0
    ev_v2g: Boolean = False
    heat_pump_kw: NonNegative = 0.0
    flexible_share: Fraction = 0.0  # of the home's load that may wait
    generator_kw: NonNegative = 0.0
    policy: PolicyKind | None = None  # this home's policy; default: households.policy

    @model_validator(mode="after")
    def _paired(self) -> HomeConfig:
        if (error := pairing_error(self)) is not None:
            raise ValueError(error)
        return self


class PolicyGroup(_Section):
    """A share of the households (drawn with the scenario's seed) that runs `policy`."""

    policy: PolicyKind
    share: Fraction


# households per shard at least, under shard_size = "auto". The same as the Ray backend's
# ONE_HOST_PER_CPU: on one machine Ray keeps every actor in one process up to that many
# households per CPU, so smaller shards never run side by side there (nor ever on the
# local backend), and each one more only adds its fixed cost per step: at 10,000
# households one shard stepped 1.26x as fast as two of 5,000 (2026-12-02, 2 cores)
AUTO_MIN_SHARD = 30_000
# households per shard at most, under "auto", when records are written: a shard's arrays
# then stay small enough to share the caches with the records writer, which encodes the
# last checkpoint's records beside the stepping. Bigger shards lost the overlap
# (2026-12-02, 2-core AMD EPYC, every record written, turns taken in one process): 50,000
# households in two shards took 0.70-0.77x the time of one shard of 50,000, whose run
# took as long as writing in line; 100,000 in four shards 0.74-0.82x of two, and in
# three 1.03x; 30,000 in two shards as long as in one. Without records one big shard
# stays faster (50,000: 1.2x the time in two shards), so copies, which never record,
# are not capped.
AUTO_MAX_SHARD = 25_000


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def auto_shard_size(count: int, cpus: int | None = None, records: bool = True) -> int:
    """Households per shard for `count` households on `cpus` CPUs (this machine's
    usable ones by default): one shard per CPU, each at least AUTO_MIN_SHARD households,
    and, when `records` are written, at most AUTO_MAX_SHARD."""
    if cpus is None:
        cpus = usable_cpus()
    shards = max(1, min(cpus, count // AUTO_MIN_SHARD))
    if records:
        shards = max(shards, -(-count // AUTO_MAX_SHARD))
    return -(-count // shards)


# household-steps between checkpoints under run.checkpoint_every = "auto", in steps at
# least AUTO_MIN_CHECKPOINT and at most AUTO_MAX_CHECKPOINT. Each checkpoint writes a
# Parquet file per table and actor, a fixed cost of a few milliseconds each that small
# runs pay per step, and its writer thread slows the stepping beside it (on the 2-core
# VMs a 1,000-household step took 1.3x as long while it wrote); big runs gain from writing
# often, beside the stepping, rather than all at the end. Measured (2026-12-03, 2-core
# AMD EPYC, every record written, turns in one process, runs of 96 steps), time with
# one checkpoint against four: 100 households 0.74x to 0.78x, 1,000 0.87x; 3,000 1.3x
# (and three against four 1.0x); 10,000 1.2x (two against four 1.04x).
AUTO_CHECKPOINT_HOUSEHOLD_STEPS = 96_000
AUTO_MIN_CHECKPOINT = 24
# a small run's records in memory stay a few tens of MB, and a crash loses seconds
AUTO_MAX_CHECKPOINT = 960
# but never more than this many household-steps in one checkpoint, which bounds
# AUTO_MIN_CHECKPOINT from 33,334 households up: the records writer starts on a big run's
# first steps sooner and is left with less at the end, when nothing steps beside it.
# Measured (2026-12-03, 2-core AMD EPYC, turns in one process, 96 steps): 100,000
# households every 8 steps against every 24: 0.76x-0.91x the time in three runs of 3 to 8
# turns and 1.09x in a fourth of 3 on the local backend, 0.71x on Ray (two hosts); 50,000
# every 16 or 8 as long as every 24; 10,000 every 8 or 12 1.05x-1.11x (each checkpoint has
# a fixed cost)
AUTO_MOST_HOUSEHOLD_STEPS = 800_000


def auto_checkpoint_every(count: int) -> int:
    """Steps between checkpoints for a run of `count` households (run.checkpoint_every =
    "auto"): about AUTO_CHECKPOINT_HOUSEHOLD_STEPS household-steps of records in each,
    within the bounds above."""
    every = min(AUTO_MAX_CHECKPOINT,
                max(AUTO_MIN_CHECKPOINT, AUTO_CHECKPOINT_HOUSEHOLD_STEPS // count))
    return max(1, min(every, AUTO_MOST_HOUSEHOLD_STEPS // count))


class HouseholdConfig(_Section):
    count: PositiveInt = 1000
    # households per shard actor: as many shards as this asks for, each holding whole
    # markets when a shard is larger than a market. "auto" (the default) sizes them by the
    # machine: one shard per CPU, but at least AUTO_MIN_SHARD households each and at most
    # AUTO_MAX_SHARD (25,000), so a run of up to 25,000 households has one shard (each
    # shard-step has a fixed cost of a few milliseconds) and one of 100,000 has four (a
    # cluster's runs may want smaller shards, and runs without records bigger ones: set
    # here). It is
    # resolved when the config is read, the same for the local and the Ray backend (so
    # both give the same records), and the run's manifest keeps the number.
    shard_size: PositiveInt = 500
    # "by_load": at the feeder's load connections, drawn in proportion to their kW;
    # "one_per_load": household k at load k (the European LV feeder's 55 homes)
    placement: Literal["by_load", "one_per_load"] = "by_load"
    power_factor: Annotated[Number, Field(gt=0, le=1)] = 0.95  # of the household load
    # makes every household this many times its size, in every respect: load, PV kWp,
    # battery capacity and power, car battery, charger and trip energy, heat-pump rating,
    # the house's heat-loss coefficient and thermal mass (resistance / factor, capacitance x
    # factor, so indoor temperatures evolve as at full size), generator rating (and its
    # quadratic cost / factor, so its marginal cost at a given share of the rating stays).
    # Energy flows and bills scale by the factor; states of charge, indoor temperatures and
    # prices do not. 0.1 puts 10,000 households where the profiles would put 1,000 (the
    # feeder's rating stays what it is). Efficiencies, shares, SoC bounds, comfort bands and
    # per-kWh costs are not sizes and stay as given.
    size_factor: Positive = 1.0
    battery: BatteryConfig = BatteryConfig()
    pv: PVConfig = PVConfig()
    ev: EVConfig = EVConfig()
    heat_pump: HeatPumpConfig = HeatPumpConfig()
    flexible_load: FlexibleLoadConfig = FlexibleLoadConfig()
    generator: GeneratorConfig = GeneratorConfig()
    homes: list[HomeConfig] = []  # explicit households; if given, one per household
    # who decides each home's setpoints: "rule" (self-consumption), "mpc" (receding-horizon
    # cheapest plan), "bank" (a trained policy bank, [policies.bank]), "external" (actions
    # passed to Simulation.step), "bidder" (devices by the rule, its local market's limit
    # price from Simulation.step(bids=...): a learned bidding strategy); policy_groups
    # give shares of the households other policies, and an explicit home's `policy`
    # overrides both
    policy: PolicyKind = "rule"
    policy_groups: list[PolicyGroup] = []
    # true: each household owns at most one controllable device (battery, heat pump,
    # generator or car), the shares of those four then being exclusive fractions of the
    # households (GradMAP's one device per agent); false: each is drawn on its own
    exclusive_devices: bool = False

    @model_validator(mode="before")
    @classmethod
    def _auto_shards(cls, data: object) -> object:
        size = data.get("shard_size", "auto") if isinstance(data, dict) else None
        if isinstance(size, str) and size != "auto":
            raise ValueError(f'shard_size must be a positive integer or "auto", got {size!r}')
        if isinstance(data, dict) and size == "auto":
            count = data.get("count", cls.model_fields["count"].default)
            data = {k: v for k, v in data.items() if k != "shard_size"}
            if isinstance(count, int) and count > 0:  # else count's own error says why
                data["shard_size"] = auto_shard_size(count)
        return data

    @model_validator(mode="after")
    def _explicit(self) -> HouseholdConfig:
        if self.homes and len(self.homes) != self.count:
            raise ValueError(f"homes lists {len(self.homes)} households, count is {self.count}")
        if self.exclusive_devices:
            total = (self.battery.share + self.heat_pump.share + self.generator.share
                     + self.ev.share)
            if total > 1 + 1e-12:
                raise ValueError(f"exclusive_devices: the battery, heat_pump, generator and ev "
                                 f"shares add up to {total:g}, more than 1")
        total = sum(group.share for group in self.policy_groups)
        if total > 1 + 1e-12:
            raise ValueError(f"policy_groups: the shares add up to {total:g}, more than 1")
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


class DoubleAuctionSettings(_Section):
    """The peer-to-peer double auction (markets.double_auction)."""

    pricing: Literal["uniform", "pay_as_bid"] = "uniform"
    k: Fraction = 0.5  # uniform price = seller's limit + k (buyer's limit - seller's limit)


class MAHTMSettings(_Section):
    """MAHTM's three layers (markets.mahtm): microgrid pools, the distributor's pool
    between microgrids, the grid. The distributor retails grid energy at the wholesale
    price plus the carbon cost of its energy, and buys surplus at the tariff's
    export_price."""

    fee: NonNegative = 0.01  # currency/kWh, a pool's buy - sell spread (both layers)
    gain: Annotated[Number, Field(gt=0, le=1)] = 1.0  # share of the way to the target price
    carbon_price: NonNegative = 0.1  # currency per kgCO2 (0.1 = 100 per tonne)


class CooperativeSettings(_Section):
    """The cooperative game (markets.cooperative): each market's members share one meter
    and split each day's saving (every 24 h from the run's start, and at its end) by the
    game's nucleolus or Shapley value, exactly up to
    `exact_limit` members and over `clusters` K-means clusters beyond."""

    allocation: Literal["nucleolus", "shapley"] = "nucleolus"
    clusters: PositiveInt = 8  # more than exact_limit: Monte Carlo Shapley over clusters
    exact_limit: Annotated[Integer, Field(ge=1, le=12)] = 12
    mc_samples: PositiveInt = 500  # permutations for Monte Carlo Shapley
    split: Literal["potential", "cost", "equal"] = "potential"  # a cluster's payoff to members


class MarketConfig(_Section):
    households_per_market: PositiveInt = 100  # one microgrid market each
    mechanism: Literal["double_auction", "mahtm", "cooperative"] = "double_auction"
    # orders with limits outside these (currency/kWh) are rejected
    price_caps: tuple[Number, Number] = (-1.0, 5.0)
    double_auction: DoubleAuctionSettings = DoubleAuctionSettings()
    mahtm: MAHTMSettings = MAHTMSettings()
    cooperative: CooperativeSettings = CooperativeSettings()

    @field_validator("price_caps")
    @classmethod
    def _caps(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not value[0] < value[1]:
            raise ValueError(f"{list(value)}: the low cap must be below the high cap")
        return value


class TariffConfig(_Section):
    import_price: NonNegative = 0.30  # currency/kWh, the distributor's retail tariff
    export_price: NonNegative = 0.08  # currency/kWh, its feed-in tariff
    peak_import_price: NonNegative | None = None  # time of use: price in peak hours
    peak_hours: tuple[Integer, Integer] = (17, 21)  # [start, end) hour of run.timezone

    @field_validator("peak_hours")
    @classmethod
    def _hours(cls, value: tuple[int, int]) -> tuple[int, int]:
        # [start, end) within one local day; a peak across midnight is not supported
        start, end = value
        if not 0 <= start < end <= 24:
            raise ValueError(f"{list(value)}: need 0 <= start < end <= 24 (hours of the day)")
        return value


class StackelbergSettings(_Section):
    """An aggregator leading a Stackelberg game (markets.stackelberg): at the start of each
    day (every 24 h from the run's start) it picks a tariff, wholesale + markup (+ a peak
    adder in the tariff's peak hours) to buy and wholesale - sell_discount to sell, by
    best-response iteration against a model of its members (their devices, forecasts and
    the state they report at the end of each day), each member staying only while the
    tariff costs it no more than the distributor's."""

    markups: Annotated[list[NonNegative], Field(min_length=1)] = [
        0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.15, 0.2]  # currency/kWh
    peak_adders: Annotated[list[NonNegative], Field(min_length=1)] = [0.0, 0.05, 0.1]
    sell_discount: NonNegative = 0.03  # currency/kWh below wholesale
    peak_price: NonNegative = 0.0  # currency per kW of the portfolio's daily peak import
    follower: Literal["rule", "mpc"] = "rule"  # how the leader models its members
    # "iterate": best-response iteration; "bilevel": the exact optimum as one MILP, for
    # members who own nothing but PV and a battery (their MPC checks the answer)
    method: Literal["iterate", "bilevel"] = "iterate"
    max_iterations: PositiveInt = 20
    damping: Annotated[Number, Field(gt=0, le=1)] = 1.0
    # true: the leader's best response uses its members' price slope (a Stackelberg
    # leader); false: it best-responds to their current response only (no anticipation)
    anticipate: bool = True


class AggregatorConfig(_Section):
    count: NonNegativeInt = 0
    customer_share: Fraction = 0.3  # of households retailed by aggregators
    # "margin": wholesale + margin to buy, - margin to sell; "stackelberg": a leader
    pricing: Literal["margin", "stackelberg"] = "margin"
    margin: NonNegative = 0.03  # currency/kWh over the wholesale price, both ways
    stackelberg: StackelbergSettings = StackelbergSettings()
    # wholesale (markets.wholesale): a day-ahead position per step (persistence: the same
    # step a day earlier, the members' net load the first day; a Stackelberg leader takes
    # the response its model of the members expects), deviations settled at the
    # real-time price with dual pricing. The real-time price is the day-ahead price plus
    # an AR(1) deviation drawn from the scenario's seed.
    real_time_std: NonNegative = 0.02  # currency/kWh
    real_time_correlation: Annotated[Number, Field(ge=0, lt=1)] = 0.7  # step to step
    imbalance_penalty: NonNegative = 0.0  # currency/kWh on every deviation


class MPCSettings(_Section):
    """The receding-horizon MPC (agents.policies.mpc); a key left out keeps MPCConfig's
    default. It re-plans every step over the price forecast, with perfect foresight of
    the household's own load, PV, car use and weather."""

    horizon: PositiveInt | None = None  # steps; default: run.forecast_steps
    solver: Literal["HIGHS", "CLARABEL"] | None = None
    households_per_problem: PositiveInt | None = None
    discomfort_cost: NonNegative | None = None  # currency per K h outside the band
    ev_shortfall_cost: NonNegative | None = None  # currency per kWh missing at departure
    ev_topup_cost: NonNegative | None = None  # currency per kWh charged away from home
    terminal_value: NonNegative | None = None  # currency per kWh stored at the horizon


class BankSettings(_Section):
    """A saved policy bank (`cosim bank init`, or a trainer's checkpoint): one independent
    policy per household, each applied to its own household's local observation."""

    path: Path | None = None


class PoliciesConfig(_Section):
    mpc: MPCSettings = MPCSettings()
    bank: BankSettings = BankSettings()


class ScenarioConfig(_Section):
    run: RunConfig = RunConfig()
    grid: GridConfig = GridConfig()
    households: HouseholdConfig = HouseholdConfig()
    profiles: ProfileConfig
    markets: MarketConfig = MarketConfig()
    tariff: TariffConfig = TariffConfig()
    aggregators: AggregatorConfig = AggregatorConfig()
    policies: PoliciesConfig = PoliciesConfig()

    @model_validator(mode="before")
    @classmethod
    def _auto_checkpoints(cls, data: object) -> object:
        # resolved here, where the household count is known, as households.shard_size is:
        # the manifest keeps the number
        run = data.get("run", {}) if isinstance(data, dict) else None
        if not isinstance(run, dict) or run.get("checkpoint_every", "auto") != "auto":
            return data
        households = data.get("households", {})
        count = (households.get("count", HouseholdConfig.model_fields["count"].default)
                 if isinstance(households, dict) else getattr(households, "count", None))
        run = {k: v for k, v in run.items() if k != "checkpoint_every"}
        if isinstance(count, int) and count > 0:  # else count's own error says why
            run["checkpoint_every"] = auto_checkpoint_every(count)
        return data | {"run": run}

    @model_validator(mode="after")
    def _policies(self) -> ScenarioConfig:
        used = {self.households.policy, *(g.policy for g in self.households.policy_groups),
                *(h.policy for h in self.households.homes if h.policy)}
        if "bank" in used and self.policies.bank.path is None:
            raise ValueError("households use policy \"bank\" but policies.bank.path is not "
                             "set (make one with `cosim bank init`)")
        horizon = self.policies.mpc.horizon
        if "mpc" in used and horizon and horizon > self.run.forecast_horizon:
            raise ValueError(f"policies.mpc.horizon ({horizon}) is longer than the price "
                             f"forecast (run.forecast_steps = {self.run.forecast_horizon})")
        return self

    def everyone(self, policy: str, bank: str | Path | None = None) -> ScenarioConfig:
        """The same scenario with every household on `policy` (groups and explicit homes'
        own policies dropped), and `bank` as the policy-bank file when given: how the RL
        environments, `cosim evaluate` and the baseline comparisons put one policy on all."""
        hh = self.households.model_copy(update={
            "policy": policy, "policy_groups": [],
            "homes": [h.model_copy(update={"policy": None}) for h in self.households.homes]})
        update: dict[str, object] = {"households": hh}
        if bank is not None:
            update["policies"] = self.policies.model_copy(update={
                "bank": self.policies.bank.model_copy(update={"path": Path(bank)})})
        # validated again: a bank policy needs its file
        return ScenarioConfig.model_validate(self.model_copy(update=update).model_dump())


def load_config(path: str | Path, overrides: dict[str, object] | None = None
                ) -> ScenarioConfig:
    """Read and validate a scenario TOML. Relative paths inside resolve against its folder.
    `overrides` set keys by dotted name before validation, e.g. {"run.steps": 8,
    "households.policy": "external"}; they are checked like the file's own keys."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: scenario file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key, value in (overrides or {}).items():
        *sections, name = key.split(".")
        table = raw
        for section in sections:
            table = table.setdefault(section, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: override {key}: {section} is not a table")
        table[name] = value
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
            # the value as written, where it is one (a whole section is too long to show,
            # and our own checks, the value errors, name their values themselves)
            given = err.get("input")
            spelled = str(given).lower() if isinstance(given, bool) else repr(given)  # true
            shown = (f" (got {spelled})" if isinstance(given, (str, int, float, list, tuple))
                     and err["type"] != "value_error" else "")
            problems.append(f"{path}: {key}: {err['msg']}{shown}")
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
    bank = config.policies.bank.path
    if bank is not None and not bank.is_absolute():
        policies = config.policies.model_copy(update={"bank": config.policies.bank.model_copy(
            update={"path": (base / bank).resolve()})})
        config = config.model_copy(update={"policies": policies})
    feeder = config.grid.feeder
    if feeder.lower().endswith(".dss") and not Path(feeder).is_absolute():
        grid = config.grid.model_copy(update={"feeder": str((base / feeder).resolve())})
        config = config.model_copy(update={"grid": grid})
    return config
