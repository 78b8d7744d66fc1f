"""From a scenario config and profile data to the actors of a run.

Households are placed on the feeder's own load connections, in proportion to the loads'
nominal power (so 1,000 households on IEEE 123 reproduce its load pattern), grouped into
microgrid markets by electrical locality, retailed by the distributor or an aggregator,
given PV and batteries by the config's shares and ranges, and cut into shards. Every draw
comes from one generator seeded by the config.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from cosim.actors.base import Actor
from cosim.actors.feed import ExogenousFeed
from cosim.actors.grid import GridActor
from cosim.actors.households import HouseholdArrays, HouseholdShard
from cosim.actors.market import MicrogridOperator
from cosim.actors.retail import Aggregator, Distributor
from cosim.config import ConfigError, ScenarioConfig
from grid import Feeder, load_feeder
from grid.feeder import GROUND


@dataclass
class ProfileData:
    """Load and PV per home and the exogenous series, on the run's time grid.

    time: [steps] UTC timestamps of step starts; load_kw, pv_kw_per_kwp: [homes, steps],
    means over each step; the rest [steps]: outdoor temperature (C), global horizontal
    irradiance (W/m2), wholesale price (currency/kWh), grid carbon intensity (kgCO2/kWh).
    """

    time: np.ndarray
    load_kw: np.ndarray
    pv_kw_per_kwp: np.ndarray
    temperature_c: np.ndarray
    ghi_w_m2: np.ndarray
    wholesale_price: np.ndarray
    carbon_intensity: np.ndarray

    def window(self, start: dt.datetime, steps: int, dt_s: int, source: str) -> ProfileData:
        """The `steps` steps from `start`; errors if the data does not cover them at dt."""
        time = self.time.astype("datetime64[s]")
        if len(time) > 1 and int((time[1] - time[0]).astype(int)) != dt_s:
            raise ConfigError(f"{source}: profile step is {(time[1] - time[0]).astype(int)} s, "
                              f"the run's dt_s is {dt_s}")
        first = np.datetime64(start.astimezone(dt.UTC).replace(tzinfo=None), "s")
        begin = int(np.searchsorted(time, first))
        if begin >= len(time) or time[begin] != first or begin + steps > len(time):
            raise ConfigError(f"{source}: profiles cover {time[0]} to {time[-1]}, the run needs "
                              f"{steps} steps from {first}")
        cut = slice(begin, begin + steps)
        return ProfileData(self.time[cut], self.load_kw[:, cut], self.pv_kw_per_kwp[:, cut],
                           self.temperature_c[cut], self.ghi_w_m2[cut],
                           self.wholesale_price[cut], self.carbon_intensity[cut])


@dataclass
class ActorSpec:
    """How to build one actor: its class and keyword arguments (shipped to Ray as is)."""

    name: str
    cls: type[Actor]
    kwargs: dict[str, object] = field(default_factory=dict)


@dataclass
class Scenario:
    config: ScenarioConfig
    actors: list[ActorSpec]
    households: dict[str, np.ndarray]  # one row per household, for the records and summary
    connections: list[str]
    n_markets: int
    time: np.ndarray  # [steps] datetime64


def build(config: ScenarioConfig, profiles: ProfileData, feeder: Feeder | None = None) -> Scenario:
    run, hh = config.run, config.households
    rng = np.random.default_rng(np.random.SeedSequence([run.seed, 1]))
    feeder = feeder or load_feeder(config.grid.feeder)
    data = profiles.window(run.start, run.steps, run.dt_s, "profiles")
    n = hh.count

    # Placement: each household on one of the feeder's load branches.
    branches = [(a, b, ld.kw / len(ld.branches())) for ld in feeder.loads
                for a, b, _ in ld.branches()]
    if not branches:
        raise ConfigError(f"grid.feeder: {feeder.name} has no loads to place households at")
    if hh.placement == "one_per_load":
        if n > len(feeder.loads):
            raise ConfigError(f"households.count: {n} households, but {feeder.name} has only "
                              f"{len(feeder.loads)} loads for placement = \"one_per_load\"")
        first_branch = np.cumsum([0] + [len(ld.branches()) for ld in feeder.loads])
        pick = first_branch[:n]
    else:  # in proportion to the loads' nominal power
        weight = np.array([w for *_, w in branches])
        pick = rng.choice(len(branches), size=n, p=weight / weight.sum())
    used = np.unique(pick)
    connections = [_spec(feeder, *branches[k][:2]) for k in used]
    connection = np.searchsorted(used, pick)

    # Markets: households in connection order, cut into groups of households_per_market.
    order = np.argsort(connection, kind="stable")
    per = config.markets.households_per_market
    market = np.empty(n, dtype=np.int64)
    market[order] = np.arange(n) // per
    n_markets = int(market.max()) + 1

    # Retailers: aggregators take customer_share of the households, the distributor the rest.
    agg = config.aggregators
    retailer = np.full(n, "distributor", dtype=object)
    if agg.count:
        theirs = rng.random(n) < agg.customer_share
        retailer[theirs] = [f"aggregator-{k}" for k in rng.integers(0, agg.count, theirs.sum())]

    homes = rng.permutation(n) % data.load_kw.shape[0]
    has_pv = rng.random(n) < hh.pv.share
    size = hh.size_factor
    kwp = np.where(has_pv, rng.uniform(*hh.pv.kwp, n), 0.0) * size
    has_battery = rng.random(n) < hh.battery.share
    battery_kwh = np.where(has_battery, rng.uniform(*hh.battery.capacity_kwh, n), 0.0) * size
    battery_kw = np.where(has_battery, rng.uniform(*hh.battery.power_kw, n), 0.0) * size
    if hh.homes:  # explicit households replace the draws
        homes = np.array([h.profile for h in hh.homes])
        kwp = np.array([h.pv_kwp for h in hh.homes]) * size
        battery_kwh = np.array([h.battery_kwh for h in hh.homes]) * size
        battery_kw = np.array([h.battery_kw for h in hh.homes]) * size
        missing = homes >= data.load_kw.shape[0]
        if missing.any():
            raise ConfigError(f"households.homes[{int(np.flatnonzero(missing)[0])}].profile: "
                              f"the profile data has {data.load_kw.shape[0]} homes")
    load_kw = data.load_kw[homes] * size
    pv_kw = data.pv_kw_per_kwp[homes] * kwp[:, None]

    households = {"household": np.arange(n), "connection": connection, "market": market,
                  "retailer": retailer.astype(str), "home": homes, "pv_kwp": kwp,
                  "battery_kwh": battery_kwh, "battery_power_kw": battery_kw}

    seed = run.seed
    specs = [
        ActorSpec("feed", ExogenousFeed, dict(
            seed=seed, temperature_c=data.temperature_c, ghi_w_m2=data.ghi_w_m2,
            wholesale_price=data.wholesale_price, carbon_intensity=data.carbon_intensity,
            dt_s=run.dt_s)),
        ActorSpec("distributor", Distributor, dict(
            seed=seed, n_markets=n_markets, customers=retailer == "distributor", dt_s=run.dt_s,
            import_price=config.tariff.import_price, export_price=config.tariff.export_price,
            peak_import_price=config.tariff.peak_import_price,
            peak_hours=config.tariff.peak_hours,
            hours=data.time.astype("datetime64[h]").astype(int) % 24)),
    ]
    for k in range(agg.count):
        name = f"aggregator-{k}"
        specs.append(ActorSpec(name, Aggregator, dict(
            seed=seed, n_markets=n_markets, customers=retailer == name, dt_s=run.dt_s,
            wholesale=data.wholesale_price, margin=agg.margin)))
    specs.append(ActorSpec("market", MicrogridOperator, dict(
        seed=seed, n_markets=n_markets, n_households=n)))
    for k, start in enumerate(range(0, n, hh.shard_size)):
        rows = order[start: start + hh.shard_size]
        rows = np.sort(rows)
        specs.append(ActorSpec(f"shard-{k:04d}", HouseholdShard, dict(
            seed=seed, dt_s=run.dt_s, homes=HouseholdArrays(
                household=rows, connection=connection[rows], market=market[rows],
                retailer=retailer[rows].astype(str), load_kw=load_kw[rows],
                pv_kw=pv_kw[rows], battery_kwh=battery_kwh[rows], battery_kw=battery_kw[rows],
                efficiency=hh.battery.efficiency, soc_min=hh.battery.soc_min,
                soc_max=hh.battery.soc_max, soc_initial=hh.battery.soc_initial,
                power_factor=hh.power_factor))))
    g = config.grid
    specs.append(ActorSpec("grid", GridActor, dict(
        seed=seed, feeder=g.feeder, connections=connections, n_households=n, feeder_load_scale=g.feeder_load_scale,
        vmin_pu=g.vmin_pu, vmax_pu=g.vmax_pu, tol=g.tol, device=g.device)))
    return Scenario(config, specs, households, connections, n_markets, data.time)


def _spec(feeder: Feeder, a: int, b: int) -> str:
    """Connection spec of a node pair: "bus.p" to ground, "bus.p.q" between phases."""
    bus, pa = feeder.nodes[a].rsplit(".", 1)
    if b == GROUND:
        return f"{bus}.{pa}"
    return f"{bus}.{pa}.{feeder.nodes[b].rsplit('.', 1)[1]}"
