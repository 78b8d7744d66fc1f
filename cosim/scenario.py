"""From a scenario config and profile data to the actors of a run.

Households are placed on the feeder's own load connections, in proportion to the loads'
nominal power (so 1,000 households on IEEE 123 reproduce its load pattern), grouped into
microgrid markets by electrical locality, retailed by the distributor or an aggregator,
given PV, batteries, electric cars, heat pumps, flexible appliances and generators by the
config's shares and ranges (agents.households composes them), and cut into shards. Every
draw comes from generators seeded by the config's seed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from agents.devices import DeviceError, steps_to_departure
from agents.households import Households, HouseholdType, PlacementError, place
from agents.households.placement import connection_spec, load_branches
from cosim.actors.base import Actor
from cosim.actors.feed import ExogenousFeed
from cosim.actors.grid import GridActor
from cosim.actors.households import HouseholdArrays, HouseholdShard
from cosim.actors.market import MarketOperator
from cosim.actors.retail import Aggregator, Distributor
from cosim.config import ConfigError, HouseholdConfig, ScenarioConfig, auto_shard_size
from grid import Feeder, load_feeder


@dataclass
class ProfileData:
    """Load, PV and car use per home and the exogenous series, on the run's time grid.

    time: [steps] UTC timestamps of step starts; load_kw, pv_kw_per_kwp: [homes, steps],
    means over each step; temperature_c, ghi_w_m2, wholesale_price, carbon_intensity:
    [steps] outdoor temperature (C), global horizontal irradiance (W/m2), wholesale price
    (currency/kWh), grid carbon intensity (kgCO2/kWh). Car use, None when the data has no
    cars: ev_at_home [homes, steps] bool (home for the whole step), ev_trip_kwh [homes,
    steps] (energy driven within the step); ev_steps_left [homes, steps], the at-home
    steps before the next departure, this one included (inf while away or when no departure
    follows in the data), is filled in by `window` from the whole series.
    """

    time: np.ndarray
    load_kw: np.ndarray
    pv_kw_per_kwp: np.ndarray
    temperature_c: np.ndarray
    ghi_w_m2: np.ndarray
    wholesale_price: np.ndarray
    carbon_intensity: np.ndarray
    ev_at_home: np.ndarray | None = None
    ev_trip_kwh: np.ndarray | None = None
    ev_steps_left: np.ndarray | None = None

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
        cars = None
        if self.ev_at_home is not None:
            # departures beyond the window still count: a car due out just after the run
            # must be charged by its end
            left = steps_to_departure(torch.from_numpy(self.ev_at_home),
                                      end_is_departure=False).numpy()
            cars = (self.ev_at_home[:, cut], self.ev_trip_kwh[:, cut], left[:, cut])
        return ProfileData(self.time[cut], self.load_kw[:, cut], self.pv_kw_per_kwp[:, cut],
                           self.temperature_c[cut], self.ghi_w_m2[cut],
                           self.wholesale_price[cut], self.carbon_intensity[cut],
                           *(cars or ()))


@dataclass
class ActorSpec:
    """How to build one actor: its class and keyword arguments (shipped to Ray as is).
    Actors of one `group` (shards and the market operator serving them) talk only among
    themselves and with actors of no group; on Ray a group lives in one process."""

    name: str
    cls: type[Actor]
    kwargs: dict[str, object] = field(default_factory=dict)
    group: str | None = None


@dataclass
class Scenario:
    config: ScenarioConfig
    actors: list[ActorSpec]
    households: dict[str, np.ndarray]  # one row per household, for the records and summary
    connections: list[str]
    n_markets: int
    time: np.ndarray  # [steps] datetime64
    copies: int = 1  # independent copies stacked as households (`build`)


def build(config: ScenarioConfig, profiles: ProfileData, feeder: Feeder | None = None,
          copies: int = 1) -> Scenario:
    """The actors of `config`. With `copies` > 1, that many independent copies of the
    scenario run as one: the same households (ids copy * count + k), each copy with its
    own markets (ids copy * markets + m) and its own feeder, solved as one batch of the
    power flow; copies differ only through what drives them (actions, bids)."""
    run, hh = config.run, config.households
    rng = np.random.default_rng(np.random.SeedSequence([run.seed, 1]))
    feeder = feeder or load_feeder(config.grid.feeder)
    data = profiles.window(run.start, run.steps, run.dt_s, "profiles")
    n = hh.count

    # Placement: each household on one of the feeder's load branches; the connections the
    # power flow sees are the branches used, in the feeder's order.
    try:
        placement = place(feeder, n, hh.placement, seed=int(rng.integers(2**63)))
    except PlacementError as exc:
        raise ConfigError(f"households.placement: {exc}") from None
    branch = np.asarray(placement.branch)
    used = np.unique(branch)
    branches = load_branches(feeder)
    connections = [connection_spec(feeder, *branches[k][1:3]) for k in used]
    connection = np.searchsorted(used, branch)

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
    if hh.homes:
        homes = np.array([h.profile for h in hh.homes])
        missing = homes >= data.load_kw.shape[0]
        if missing.any():
            raise ConfigError(f"households.homes[{int(np.flatnonzero(missing)[0])}].profile: "
                              f"the profile data has {data.load_kw.shape[0]} homes")
    sizes = _draw_sizes(hh, rng, run.seed)
    try:  # fail here, naming the household and field, rather than in a shard mid-start
        fleet = Households.create(range(n), **_devices(hh, sizes))
    except DeviceError as exc:
        raise ConfigError(f"households: {exc}") from None
    policy = _policies(hh, run.seed)
    kind = fleet.kind
    one = n  # households in one copy
    if copies > 1:
        _check_copies(config, copies)
        copy = np.repeat(np.arange(copies), n)
        connection = np.tile(connection, copies) + copy * len(connections)
        market = np.tile(market, copies) + copy * n_markets
        n_markets *= copies
        retailer, homes, policy, kind = (np.tile(x, copies) for x in
                                         (retailer, homes, policy, kind))
        sizes = {k: np.tile(v, copies) for k, v in sizes.items()}
        order = np.argsort(connection, kind="stable")
        n = n * copies
    devices = _devices(hh, sizes)
    has_ev = sizes["ev_capacity_kwh"] > 0
    if has_ev.any() and data.ev_at_home is None:
        raise ConfigError("households.ev.share: the profile data has no car use to drive the "
                          "scenario's electric cars; give it EVs (the generator's ev.share)")
    load_kw = data.load_kw[homes] * hh.size_factor
    # trips scale with the car: a tenth-size car drives a tenth of its home's trip energy
    trip_kwh = None if data.ev_trip_kwh is None else data.ev_trip_kwh[homes] * hh.size_factor
    pv_kw = data.pv_kw_per_kwp[homes] * sizes["pv_kwp"][:, None]
    local = pd.DatetimeIndex(data.time, tz="UTC").tz_convert(run.timezone)
    clock = dict(hour=np.asarray(local.hour + local.minute / 60.0, dtype=float),
                 weekend=np.asarray(local.day_of_week >= 5, dtype=float),
                 outdoor_c=np.asarray(data.temperature_c, dtype=float))

    households = {"household": np.arange(n), "connection": connection, "market": market,
                  "retailer": retailer.astype(str), "home": homes, "kind": kind,
                  "kind_label": np.array([HouseholdType(k).label for k in kind]),
                  **{k: v for k, v in sizes.items() if k != "v2g"},
                  "ev_v2g": sizes["v2g"], "policy": policy,
                  **({"copy": np.arange(n) // one} if copies > 1 else {})}
    mpc = {k: v for k, v in config.policies.mpc.model_dump().items() if v is not None}
    mpc.setdefault("horizon", run.forecast_horizon)

    initial = dict(battery_soc=hh.battery.soc_initial, ev_soc=hh.ev.soc_initial,
                   indoor_c=hh.heat_pump.indoor_initial_c)

    def arrays(rows: np.ndarray, bank: bool = True) -> HouseholdArrays:
        """Everything the households `rows` need to be simulated (a shard, a leader's
        model of its members, which follow its own model rather than their bank)."""
        cars = has_ev[rows].any()
        return HouseholdArrays(
            household=rows, connection=connection[rows], market=market[rows],
            retailer=retailer[rows].astype(str), load_kw=load_kw[rows], pv_kw=pv_kw[rows],
            ev_at_home=data.ev_at_home[homes[rows]] & has_ev[rows, None] if cars else None,
            ev_trip_kwh=trip_kwh[rows] * has_ev[rows, None] if cars else None,
            ev_steps_left=data.ev_steps_left[homes[rows]] if cars else None,
            devices=_rows(devices, rows), initial=initial, power_factor=hh.power_factor,
            policy=policy[rows], mpc=mpc,
            # every copy's household k is the bank's agent k
            bank=_bank(config.policies.bank.path, rows[policy[rows] == "bank"] % one)
            if bank else None, **clock)

    seed = run.seed
    specs = [
        ActorSpec("feed", ExogenousFeed, dict(
            seed=seed, temperature_c=data.temperature_c, ghi_w_m2=data.ghi_w_m2,
            wholesale_price=data.wholesale_price, carbon_intensity=data.carbon_intensity,
            dt_s=run.dt_s)),
        distributor := ActorSpec("distributor", Distributor, dict(
            seed=seed, n_markets=n_markets, customers=retailer == "distributor", dt_s=run.dt_s,
            import_price=config.tariff.import_price, export_price=config.tariff.export_price,
            peak_import_price=config.tariff.peak_import_price,
            peak_hours=config.tariff.peak_hours, hours=clock["hour"],
            forecast_steps=run.forecast_horizon, copies=copies,
            **(dict(mahtm=config.markets.mahtm.model_dump(), market=market,
                    wholesale=data.wholesale_price, carbon=data.carbon_intensity)
               if config.markets.mechanism == "mahtm" else {}))),
    ]
    steps_per_day = max(1, round(86400 / run.dt_s))
    if config.markets.mechanism != "double_auction":
        _check_pools(config, Distributor(distributor.name, **distributor.kwargs), data.time)
    if agg.count:
        from agents.profiles.weather import ar1

        rt_rng = np.random.default_rng(np.random.SeedSequence([seed, 4]))
        real_time = data.wholesale_price + ar1(rt_rng, run.steps, agg.real_time_correlation,
                                               agg.real_time_std)
    net_kwh = (load_kw - pv_kw) * (run.dt_s / 3600.0)  # each household's plain net load
    leading = agg.pricing == "stackelberg"
    if leading:  # the leader's members' outside option: the distributor's prices
        outside = Distributor(distributor.name, **distributor.kwargs).table()
        start, end = config.tariff.peak_hours
        peak = (clock["hour"] >= start) & (clock["hour"] < end)
    for k in range(agg.count):
        name = f"aggregator-{k}"
        mine = retailer == name
        if leading and agg.stackelberg.method == "bilevel":
            other = mine & ((sizes["ev_capacity_kwh"] > 0) | (sizes["heat_pump_rating_kw"] > 0)
                            | (sizes["flexible_share"] > 0) | (sizes["generator_rating_kw"] > 0))
            if other.any():
                raise ConfigError(
                    f"aggregators.stackelberg.method: \"bilevel\" models members with PV and "
                    f"a battery only; household {int(np.flatnonzero(other)[0])} of {name} "
                    "owns more (use method = \"iterate\")")
        leader = dict(stackelberg=agg.stackelberg.model_dump(),
                      members=arrays(np.flatnonzero(mine), bank=False), outside=outside,
                      peak=peak) if leading else {}
        specs.append(ActorSpec(name, Aggregator, dict(
            seed=seed, n_markets=n_markets, customers=mine, dt_s=run.dt_s,
            wholesale=data.wholesale_price, margin=agg.margin,
            forecast_steps=run.forecast_horizon, real_time=real_time,
            baseline_kwh=net_kwh[mine].sum(0), steps_per_day=steps_per_day,
            penalty=agg.imbalance_penalty, **leader)))
    # copies are stacked into shards as auto sizes them for all households, whatever
    # shard_size says for one copy: a copy's households gain nothing from a shard of
    # their own (and copies never record)
    size = (max(hh.shard_size, auto_shard_size(n, records=False)) if copies > 1
            else hh.shard_size)
    bounds = _shard_bounds(n, size, per, copies)
    groups = _market_groups(bounds, per, one)
    kind, settings = _mechanism(config)
    coalition = None
    if kind == "cooperative":
        coalition = dict(config.markets.cooperative.model_dump(), seed=seed)
    for g, shards in enumerate(groups):
        rows = np.sort(order[bounds[shards[0]][0]: bounds[shards[-1]][1]])
        specs.append(ActorSpec(f"market-{g:04d}", MarketOperator, dict(
            seed=seed, kind=kind, settings=settings, markets=np.unique(market[rows]),
            households=rows, home_market=market[rows], coalition=coalition,
            steps_per_day=steps_per_day, steps=run.steps), group=f"group-{g:04d}"))
    group_of = {k: g for g, shards in enumerate(groups) for k in shards}
    for k, (first, end) in enumerate(bounds):
        rows = np.sort(order[first: end])
        specs.append(ActorSpec(
            f"shard-{k:04d}", HouseholdShard, group=f"group-{group_of[k]:04d}", kwargs=dict(
                seed=seed, dt_s=run.dt_s, homes=arrays(rows),
                telemetry_every=steps_per_day if leading and agg.count else 0)))
    g = config.grid
    specs.append(ActorSpec("grid", GridActor, dict(
        seed=seed, feeder=g.feeder, connections=connections, copies=copies,
        feeder_load_scale=g.feeder_load_scale, vmin_pu=g.vmin_pu, vmax_pu=g.vmax_pu, tol=g.tol,
        device=g.device, controls_load_scale=g.controls_load_scale, controls=g.controls,
        dt_s=run.dt_s, clock_s=float(clock["hour"][0]) * 3600.0)))
    return Scenario(config, specs, households, connections, n_markets, data.time, copies)


def _check_copies(config: ScenarioConfig, copies: int) -> None:
    """What copies cannot share: an aggregator's wholesale position and a feeder's
    regulator taps are one per run."""
    if config.aggregators.count:
        raise ConfigError(f"aggregators.count: copies ({copies}) run without aggregators "
                          "(an aggregator's day-ahead position spans its whole portfolio)")
    if config.grid.controls != "frozen":
        raise ConfigError(f"grid.controls: copies ({copies}) need \"frozen\" controls (the "
                          "feeder's regulators keep one set of taps)")


def _shard_bounds(n: int, shard_size: int, per_market: int,
                  copies: int = 1) -> list[tuple[int, int]]:
    """[start, end) of each shard in connection order. As many shards as `shard_size`
    asks for, but where a shard can hold whole markets it does: markets are dealt out
    evenly, so a market's bids and results stay with one shard and its operator. Copies
    (of n / copies households each) are dealt out whole, or cut alike if one is larger
    than a shard."""
    if copies > 1:
        one = n // copies
        if shard_size >= one:
            return [(int(c[0]) * one, (int(c[-1]) + 1) * one)
                    for c in np.array_split(np.arange(copies), -(-n // shard_size))]
        return [(j * one + a, j * one + b) for j in range(copies)
                for a, b in _shard_bounds(one, shard_size, per_market)]
    count = -(-n // shard_size)
    if shard_size < per_market:  # markets larger than shards: cut where shard_size says
        return [(k * shard_size, min((k + 1) * shard_size, n)) for k in range(count)]
    markets = np.array_split(np.arange(-(-n // per_market)), count)
    return [(int(m[0]) * per_market, min((int(m[-1]) + 1) * per_market, n)) for m in markets]


def _market_groups(bounds: list[tuple[int, int]], per_market: int,
                   one: int) -> list[list[int]]:
    """Shards (as runs of consecutive indices) that share markets: shards and markets both
    cut the households of a copy (`one` households) in connection order, so shard k and
    k + 1 share one exactly when a market straddles their boundary."""
    groups = [[0]]
    for k in range(1, len(bounds)):
        if bounds[k][0] % one % per_market:
            groups[-1].append(k)
        else:
            groups.append([k])
    return groups


def _mechanism(config: ScenarioConfig) -> tuple[str, dict[str, object]]:
    """The market mechanism and its settings (cosim.actors.market.mechanism)."""
    m = config.markets
    if m.mechanism == "double_auction":
        return m.mechanism, dict(m.double_auction.model_dump(), price_caps=m.price_caps)
    if m.mechanism == "mahtm":
        return m.mechanism, dict(fee=m.mahtm.fee, gain=m.mahtm.gain, price_caps=m.price_caps)
    # the cooperative game: members share one meter (a pool without a spread, paid at
    # the pool price)
    return m.mechanism, dict(fee=0.0, gain=1.0, price_caps=m.price_caps)


def _check_pools(config: ScenarioConfig, distributor: Distributor, time: np.ndarray) -> None:
    """MAHTM's and the cooperative game's pools price between the distributor's export and
    import prices and bill everyone at them: they need import >= export at every step and
    every household retailed by the distributor."""
    mechanism = config.markets.mechanism
    if config.aggregators.count:
        raise ConfigError(f"markets.mechanism: \"{mechanism}\" prices every microgrid against "
                          "the distributor's prices; aggregators.count must be 0")
    table = distributor.table()
    bad = np.flatnonzero(table[:, 1] > table[:, 0])
    if len(bad):
        k = int(bad[0])
        what = ("the wholesale price plus its carbon cost" if mechanism == "mahtm"
                else "the import price")
        raise ConfigError(f"tariff.export_price: at {time[k]} (step {k}) the export price "
                          f"{table[k, 1]:g} is above {what}, {table[k, 0]:g}; a pool needs "
                          "import >= export at every step")


def _policies(hh: HouseholdConfig, seed: int) -> np.ndarray:
    """Each household's policy: `policy`, except the shares of `policy_groups` (drawn from
    a stream of their own, so groups leave every other draw where it was) and explicit
    homes that name one."""
    n = hh.count
    policy = np.full(n, hh.policy, dtype=object)
    draw = np.random.default_rng(np.random.SeedSequence([seed, 3])).random(n)
    low = 0.0
    for group in hh.policy_groups:
        policy[(draw >= low) & (draw < low + group.share)] = group.policy
        low += group.share
    for k, home in enumerate(hh.homes):
        if home.policy is not None:
            policy[k] = home.policy
    return policy.astype(str)


def _bank(path: Path | None, households: np.ndarray) -> object | None:
    """The policies of some `bank` households (household k is agent k of the bank file),
    read here so that shards on other machines need no access to the file; an unusable
    file fails here, naming the key, rather than in a shard mid-start."""
    if not len(households):
        return None
    from agents.households import ACTIONS, FIELDS
    from agents.policies.bank import BankError, PolicyBank

    try:
        return PolicyBank.load(path, agents=households, fields=FIELDS, actions=ACTIONS)
    except BankError as exc:
        raise ConfigError(f"policies.bank.path: {exc}") from None


def _draw_sizes(hh: HouseholdConfig, rng: np.random.Generator,
                seed: int) -> dict[str, np.ndarray]:
    """Device sizes per household (kW, kWh; zero without the device), from the config's
    shares and ranges or its explicit homes, scaled by size_factor. PV and batteries come
    from the scenario's generator as always; the other devices from their own stream, so
    adding cars to a scenario leaves its PV and batteries where they were."""
    n = hh.count

    # exclusive devices: one uniform draw per household picks at most one of them, the
    # shares laid end to end on [0, 1) (from a stream of its own)
    pick = np.random.default_rng(np.random.SeedSequence([seed, 5])).random(n)
    edges = np.cumsum([0.0, hh.battery.share, hh.heat_pump.share, hh.generator.share,
                       hh.ev.share])
    exclusive = {name: (pick >= edges[k]) & (pick < edges[k + 1])
                 for k, name in enumerate(("battery", "heat_pump", "generator", "ev"))}

    def drawn(r: np.random.Generator, share: float, *ranges: tuple[float, float],
              device: str = ""):
        owns = r.random(n) < share
        if hh.exclusive_devices and device:
            owns = exclusive[device]
        return [np.where(owns, r.uniform(*bounds, n), 0.0) for bounds in ranges]

    kwp, = drawn(rng, hh.pv.share, hh.pv.kwp)
    battery_kwh, battery_kw = drawn(rng, hh.battery.share, hh.battery.capacity_kwh,
                                    hh.battery.power_kw, device="battery")
    more = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    ev_kwh, ev_kw = drawn(more, hh.ev.share, hh.ev.capacity_kwh, hh.ev.charge_kw, device="ev")
    v2g = (more.random(n) < hh.ev.v2g_share) & (ev_kwh > 0)
    heat_kw, = drawn(more, hh.heat_pump.share, hh.heat_pump.power_kw, device="heat_pump")
    flexible = np.where(more.random(n) < hh.flexible_load.share,
                        hh.flexible_load.flexible_share, 0.0)
    generator_kw, = drawn(more, hh.generator.share, hh.generator.max_kw, device="generator")
    if hh.homes:  # explicit households replace the draws, every device of them
        kwp, battery_kwh, battery_kw, ev_kwh, ev_kw, heat_kw, flexible, generator_kw = (
            np.array([getattr(h, f) for h in hh.homes], dtype=float)
            for f in ("pv_kwp", "battery_kwh", "battery_kw", "ev_kwh", "ev_kw", "heat_pump_kw",
                      "flexible_share", "generator_kw"))
        v2g = np.array([h.ev_v2g for h in hh.homes], dtype=bool)
    size = hh.size_factor
    return {"pv_kwp": kwp * size, "battery_capacity_kwh": battery_kwh * size,
            "battery_power_kw": battery_kw * size, "ev_capacity_kwh": ev_kwh * size,
            "ev_charge_kw": ev_kw * size, "v2g": v2g, "heat_pump_rating_kw": heat_kw * size,
            "flexible_share": flexible, "generator_rating_kw": generator_kw * size}


def _devices(hh: HouseholdConfig, sizes: dict[str, np.ndarray]) -> dict[str, dict[str, object]]:
    """Keyword arguments of `Households.create` for every household: per-household arrays
    where households differ, the config's scalars where they do not; `sizes` are already
    scaled by size_factor, and the house and generator cost are scaled here to match."""
    b, ev, hp, fl, gen = hh.battery, hh.ev, hh.heat_pump, hh.flexible_load, hh.generator
    return {
        # PV delivers what its profile says (the profile already is AC output per kWp)
        "pv": {"inverter_kw": np.where(sizes["pv_kwp"] > 0, np.inf, 0.0)},
        "battery": {"capacity_kwh": sizes["battery_capacity_kwh"],
                    "power_kw": sizes["battery_power_kw"],
                    "eta_charge": b.efficiency, "eta_discharge": b.efficiency,
                    "soc_min": b.soc_min, "soc_max": b.soc_max,
                    "degradation_cost": b.degradation_cost},
        "ev": {"capacity_kwh": sizes["ev_capacity_kwh"], "charge_kw": sizes["ev_charge_kw"],
               "v2g": sizes["v2g"], "eta_charge": ev.efficiency, "eta_discharge": ev.efficiency,
               "target_soc": np.where(sizes["ev_capacity_kwh"] > 0, ev.target_soc, 0.0),
               "degradation_cost": ev.degradation_cost},
        # the house scales with its heat pump: heat-loss coefficient (1 / R) and thermal
        # mass C by size_factor, so R C, and with it the indoor temperature, is unchanged
        "heat_pump": {"power_kw": sizes["heat_pump_rating_kw"], "cop": hp.cop,
                      "resistance_k_per_kw": hp.resistance_k_per_kw / hh.size_factor,
                      "capacitance_kwh_per_k": hp.capacitance_kwh_per_k * hh.size_factor,
                      "comfort_low_c": hp.comfort_c[0], "comfort_high_c": hp.comfort_c[1],
                      "setback_low_c": hp.setback_c[0], "setback_high_c": hp.setback_c[1]},
        "flexible_load": {"share": sizes["flexible_share"], "window_h": fl.window_h},
        # cost (c1 p + c2 p^2) scales with the size at the same share of the rating only
        # if c2 goes the other way
        "generator": {"max_kw": sizes["generator_rating_kw"], "cost_linear": gen.cost_linear,
                      "cost_quadratic": gen.cost_quadratic / hh.size_factor},
    }


def _rows(devices: dict[str, dict[str, object]], rows: np.ndarray) -> dict[str, dict[str, object]]:
    """The devices of some households: per-household arrays cut to `rows`."""
    return {name: {k: (v[rows] if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
            for name, kw in devices.items()}
