"""A run's records against references that do not share its bookkeeping.

The engine checks itself from what each actor booked (the `system` table's money_balance,
market_imbalance_kwh and kcl_mismatch_kw). These tests rebuild the same quantities from the
raw records instead, and solve the recorded grid cases again in OpenDSS:

- physics: the households' recorded draws, summed per connection and solved by OpenDSS,
  give the recorded substation power, losses and node voltages;
- money: each party's net receipts, rebuilt from the trades, the meters, the retailers'
  published prices, the wholesale price and the substation energy, equal its ledger, and
  every household's bill is its trades plus its retailer's tariff on its meter;
- markets: the trades table alone balances energy and money in every market and step, at
  the market's one price, within every order's limit.

The last test perturbs copies of the records and shows each check fails, so none passes
vacuously. One run of the small IEEE 13 scenario serves the whole module.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest

from agents.households.bill import energy_bill
from cosim.backends import LocalBackend
from cosim.scenario import build
from cosim.simulation import Simulation
from grid import Feeder, load_feeder
from grid.reference import OpenDSSReference

from .conftest import small, synthetic_profiles

TABLES = ("households", "trades", "markets", "prices", "exogenous", "grid", "buses", "system",
          "positions")

# Bookkeeping (kWh, kW, currency): the records are sums of the same float64 numbers in
# another order, a few hundred terms of order one, so they agree to ~1e-14; a booking error
# worth a name (one trade, one household's meter, one price) is many orders larger.
BOOKS_TOL = 1e-12
# Node voltages against OpenDSS, p.u.: both solvers converge far tighter than this (ours to
# grid.tol = 1e-9 relative change, OpenDSS to 1e-12); they agree to ~2e-9 p.u. here. One
# kilowatt misplaced moves IEEE 13's voltages by ~1e-5 p.u.
V_TOL_PU = 1e-7
# Substation power and losses against OpenDSS, as a share of the substation's apparent
# power (as tests/grid/test_powerflow_opendss.py): the stiff 115 kV source turns a 1e-9
# p.u. voltage difference into ~1e-5 kW, about 2e-8 of |S| here (~780 kVA, mostly the
# capacitors' vars), so 1e-6 of |S| (< 1 W) leaves a margin of 50 and still sees a watt.
POWER_REL_TOL = 1e-6
# A uniform price within every limit holds exactly (the price is the midpoint of two limits
# that bracket every filled order's); allow only rounding.
PRICE_TOL = 1e-12


class Run(NamedTuple):
    config: object
    connections: list[str]  # the grid actor's connections, indexed by homes' `connection`
    tables: dict[str, pd.DataFrame]  # the run's tables, plus "homes" (homes.parquet)

    @property
    def dt_h(self) -> float:
        return self.config.run.dt_s / 3600.0


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    # small_config, with the feeder keeping a third of its own loads too, so that the
    # distributor's purchase for them is booked
    config = small(grid={"feeder_load_scale": 0.3, "controls_load_scale": 0.3})
    scenario = build(config, synthetic_profiles(homes=30))
    folder = tmp_path_factory.mktemp("independent")
    Simulation(scenario, LocalBackend(), folder).run(progress=False)
    tables = {name: pd.read_parquet(folder / name) for name in TABLES}
    tables["homes"] = pd.read_parquet(folder / "homes.parquet")
    return Run(config, list(scenario.connections), tables)


@pytest.fixture(scope="module")
def opendss(run) -> tuple[Feeder, OpenDSSReference]:
    g = run.config.grid
    feeder = load_feeder(g.feeder, vmin_pu=g.vmin_pu, vmax_pu=g.vmax_pu,
                         controls_load_scale=g.controls_load_scale)
    return feeder, OpenDSSReference(feeder, run.connections)


# -- physics ---------------------------------------------------------------------------------
def connection_injections(run: Run, households: pd.DataFrame, step: int
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Per grid connection, what its households put in at `step` (kW, kvar; generation
    positive): the case the grid actor should have solved."""
    rows = households[households.step == step].merge(
        run.tables["homes"][["household", "connection"]], on="household", validate="1:1")
    sums = rows.groupby("connection")[["net_kw", "q_kvar"]].sum().reindex(
        range(len(run.connections)), fill_value=0.0)
    return -sums.net_kw.to_numpy(), -sums.q_kvar.to_numpy()


def opendss_feeder_load_kw(ref: OpenDSSReference) -> float:
    """Real power the feeder's own loads draw in the last OpenDSS solution, read from the
    load elements themselves."""
    total = 0.0
    for name in ref.load_names:
        ref.ctx.Circuit.SetActiveElement(f"Load.{name}")
        total += float(np.sum(ref.ctx.CktElement.Powers()[0::2]))
    return total


def check_grid_step(run: Run, households: pd.DataFrame, step: int, feeder: Feeder,
                    ref: OpenDSSReference) -> None:
    """The recorded power flow of `step` is OpenDSS's answer to the households' draws."""
    p, q = connection_injections(run, households, step)
    ref.set_case(load_scale=run.config.grid.feeder_load_scale, p_kw=p, q_kvar=q)
    v, converged = ref.solve()
    assert converged, f"OpenDSS did not converge at step {step}"
    source, losses, caps = ref.powers()
    losses += caps  # ours count the capacitors' vars as (negative) losses, OpenDSS apart
    grid = run.tables["grid"].set_index("step").loc[step]
    tol = POWER_REL_TOL * abs(source)
    for name, ours, theirs in [("substation_kw", grid.substation_kw, source.real),
                               ("substation_kvar", grid.substation_kvar, source.imag),
                               ("losses_kw", grid.losses_kw, losses.real),
                               ("losses_kvar", grid.losses_kvar, losses.imag),
                               ("feeder_loads_kw", grid.feeder_loads_kw,
                                opendss_feeder_load_kw(ref))]:
        assert abs(ours - theirs) <= tol, (f"step {step}: {name} {ours} vs OpenDSS {theirs} "
                                           f"(tolerance {tol:.2g})")
    buses = run.tables["buses"]
    recorded = buses[buses.step == step].sort_values("node").v_pu.to_numpy()
    assert len(recorded) == len(feeder.nodes)
    theirs = np.abs(v) / (feeder.node_base_kv * 1e3)
    worst = int(np.argmax(np.abs(recorded - theirs)))
    assert abs(recorded[worst] - theirs[worst]) <= V_TOL_PU, (
        f"step {step}: node {feeder.nodes[worst]} at {recorded[worst]} p.u., OpenDSS "
        f"{theirs[worst]} p.u.")


def sampled_steps(run: Run) -> list[int]:
    """The first step (a cold start: no warm start from a previous solution) and the steps
    drawing most and least from the substation."""
    grid = run.tables["grid"].set_index("step")
    return sorted({0, int(grid.substation_kw.idxmax()), int(grid.substation_kw.idxmin())})


def test_records_cover_every_household_node_and_step(run):
    # the reconstructions below sum over these rows: a missing or doubled one would bias them
    homes, steps = run.tables["homes"], run.config.run.steps
    assert list(homes.household) == list(range(run.config.households.count))
    names = np.array(run.connections)[homes.connection]
    assert (homes.connection_name.to_numpy() == names).all()
    households = run.tables["households"]
    assert not households.duplicated(["step", "household"]).any()
    assert len(households) == steps * len(homes)
    buses = run.tables["buses"]
    assert not buses.duplicated(["step", "node"]).any()
    assert set(buses.node) == set(range(buses.node.max() + 1))
    for name in ("grid", "exogenous", "system"):
        assert sorted(run.tables[name].step) == list(range(steps)), name


def test_recorded_grid_is_opendss_on_the_recorded_injections(run, opendss):
    households, grid = run.tables["households"], run.tables["grid"].set_index("step")
    assert grid.converged.all()
    # every step: the grid actor summed exactly what the shards recorded drawing
    injected = -households.groupby("step").net_kw.sum()
    np.testing.assert_allclose(grid.injections_kw, injected.reindex(grid.index),
                               rtol=0, atol=BOOKS_TOL, err_msg="injections_kw")
    steps = sampled_steps(run)
    assert len(steps) >= 2
    for step in steps:
        p, _ = connection_injections(run, households, step)
        assert abs(p.sum() - grid.injections_kw[step]) <= BOOKS_TOL
        check_grid_step(run, households, step, *opendss)


# -- money -----------------------------------------------------------------------------------
def meters(run: Run, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per step and household: its retailer, what it traded and paid in its market (the
    trades table; nothing without a trade), its meter (what it drew from its connection
    less what it bought from peers) and its retailer's published prices (the prices
    table, not what the household recorded seeing)."""
    homes = tables["homes"][["household", "retailer"]]
    trades = tables["trades"].groupby(["step", "household"])[["kwh", "payment"]].sum()
    out = tables["households"][["step", "household", "net_kw"]].merge(
        homes, on="household", validate="m:1")
    out = out.join(trades, on=["step", "household"]).fillna({"kwh": 0.0, "payment": 0.0})
    out["meter_kwh"] = out.net_kw * run.dt_h - out.kwh
    prices = tables["prices"].rename(columns={"source": "retailer"})
    out = out.merge(prices[["step", "retailer", "import_price", "export_price"]],
                    on=["step", "retailer"], how="left", validate="m:1")
    assert out.import_price.notna().all(), "a household's retailer published no price"
    out["tariff"] = energy_bill(out.meter_kwh.to_numpy(), out.import_price.to_numpy(),
                                out.export_price.to_numpy())
    out["bill"] = out.payment + out.tariff
    return out


def rebuilt_money(run: Run, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Each party's net receipts per step (index step, a column per party), from the
    records alone."""
    m = meters(run, tables)
    steps = tables["grid"].set_index("step").index
    wholesale = tables["exogenous"].set_index("step").wholesale_price.reindex(steps)
    substation_kwh = tables["grid"].set_index("step").substation_kw * run.dt_h
    by_step = m.groupby("step")
    money = pd.DataFrame(index=steps)
    money["households"] = -by_step.bill.sum()
    positions = tables["positions"].set_index(["aggregator", "step"])
    money["balancing"] = 0.0
    for retailer, theirs in m.groupby("retailer"):
        own = theirs.groupby("step")
        money[retailer] = own.tariff.sum() - wholesale * own.meter_kwh.sum()
        if retailer.startswith("aggregator"):
            # its day-ahead position; the deviation settles at the worse of the real-time
            # and day-ahead prices (dual pricing, no penalty in this scenario)
            p = positions.loc[retailer].reindex(steps)
            deviation = own.meter_kwh.sum() - p.position_kwh
            worse = np.where(deviation > 0, np.maximum(p.real_time_price, wholesale),
                             np.minimum(p.real_time_price, wholesale))
            money[retailer] -= deviation * (worse - wholesale)
            money["balancing"] += deviation * (worse - wholesale)
    # the distributor also buys what the network and the feeder's own loads take
    money["distributor"] -= wholesale * (substation_kwh - by_step.meter_kwh.sum())
    money["market_operator"] = tables["trades"].groupby("step").payment.sum().reindex(
        steps, fill_value=0.0)
    money["wholesale"] = wholesale * substation_kwh
    return money


def check_money(run: Run, tables: dict[str, pd.DataFrame]) -> None:
    money = rebuilt_money(run, tables)
    system = tables["system"].set_index("step")
    booked = sorted(c.removeprefix("money_") for c in system
                    if c.startswith("money_") and c != "money_balance")
    assert booked == sorted(money), f"parties booked {booked}, rebuilt {sorted(money)}"
    for party in money:
        np.testing.assert_allclose(system[f"money_{party}"].reindex(money.index),
                                   money[party], rtol=0, atol=BOOKS_TOL,
                                   err_msg=f"money of {party}")
    np.testing.assert_allclose(money.sum(axis=1), 0.0, rtol=0, atol=BOOKS_TOL,
                               err_msg="money created or destroyed")


def check_bills(run: Run, tables: dict[str, pd.DataFrame]) -> None:
    m = meters(run, tables)
    recorded = tables["households"].merge(m, on=["step", "household"], validate="1:1",
                                          suffixes=("", "_rebuilt"))
    np.testing.assert_allclose(recorded.grid_kwh, recorded.meter_kwh, rtol=0, atol=BOOKS_TOL,
                               err_msg="meters (grid_kwh)")
    # the prices each household settled at are its own retailer's, of this very step
    np.testing.assert_array_equal(recorded.import_price, recorded.import_price_rebuilt,
                                  err_msg="import prices")
    np.testing.assert_array_equal(recorded.export_price, recorded.export_price_rebuilt,
                                  err_msg="export prices")
    np.testing.assert_allclose(recorded.cost, recorded.bill, rtol=0, atol=BOOKS_TOL,
                               err_msg="bills (cost)")


def test_every_party_gets_what_its_own_books_say(run):
    check_money(run, run.tables)
    # not trivially: households pay, the wholesale market is paid, both retailers book
    money = rebuilt_money(run, run.tables)
    assert (money.households < 0).all() and (money.wholesale > 0).all()
    assert (money.distributor != 0).all() and (money["aggregator-0"] != 0).all()


def test_every_bill_is_trades_plus_the_retailers_tariff(run):
    check_bills(run, run.tables)


# -- markets ---------------------------------------------------------------------------------
def check_markets(run: Run, tables: dict[str, pd.DataFrame]) -> None:
    trades, markets = tables["trades"], tables["markets"].set_index(["step", "market"])
    assert not trades.duplicated(["step", "household"]).any(), "two fills for one order"
    per_market = trades.assign(
        bought=trades.kwh.clip(lower=0), sold=-trades.kwh.clip(upper=0)).groupby(
        ["step", "market"])[["bought", "sold", "payment"]].sum()
    np.testing.assert_allclose(per_market.bought, per_market.sold, rtol=0, atol=BOOKS_TOL,
                               err_msg="energy bought vs sold")
    np.testing.assert_allclose(per_market.payment, 0.0, rtol=0, atol=BOOKS_TOL,
                               err_msg="payments in a market")
    volume = per_market.bought.reindex(markets.index, fill_value=0.0)
    np.testing.assert_allclose(markets.volume_kwh, volume, rtol=0, atol=BOOKS_TOL,
                               err_msg="markets volume_kwh vs trades")
    assert (markets.price.isna() == (volume == 0)).all(), \
        "price not NaN exactly where nothing traded"
    assert (markets.demand_kwh >= volume - BOOKS_TOL).all()
    assert (markets.supply_kwh >= volume - BOOKS_TOL).all()
    # one price per market and step, the one the markets table publishes
    published = markets.price.reindex(pd.MultiIndex.from_frame(trades[["step", "market"]]))
    np.testing.assert_array_equal(trades.price, published.to_numpy(),
                                  err_msg="trade prices vs markets price")
    np.testing.assert_allclose(trades.payment, trades.kwh * trades.price, rtol=0,
                               atol=BOOKS_TOL, err_msg="payment = kwh x price")
    buyers, sellers = trades[trades.kwh > 0], trades[trades.kwh < 0]
    assert (buyers.price <= buyers.limit_price + PRICE_TOL).all(), "a buyer paid above its limit"
    assert (sellers.price >= sellers.limit_price - PRICE_TOL).all(), \
        "a seller got less than its limit"
    # what each household recorded trading and paying is its fill in the trades table
    fills = trades.set_index(["step", "household"])[["kwh", "payment"]].rename(
        columns={"payment": "payment_trade"})
    homes = tables["households"].join(fills, on=["step", "household"])
    np.testing.assert_array_equal(homes.traded_kwh, homes.kwh.fillna(0.0),
                                  err_msg="households traded_kwh vs trades")
    np.testing.assert_array_equal(homes.payment, homes.payment_trade.fillna(0.0),
                                  err_msg="households payment vs trades")


def test_markets_balance_from_the_trades_alone(run):
    check_markets(run, run.tables)
    trades = run.tables["trades"]
    # not trivially: several markets traded, with buyers and sellers
    assert trades.groupby(["step", "market"]).ngroups >= 3
    assert (trades.kwh > 0).any() and (trades.kwh < 0).any()


# -- the checks can fail ---------------------------------------------------------------------
def _with(tables: dict[str, pd.DataFrame], name: str, column: str, row: int,
          delta: float) -> dict[str, pd.DataFrame]:
    """A copy of the tables with one value of one table moved by `delta`."""
    changed = tables[name].copy()
    changed.loc[changed.index[row], column] += delta
    return {**tables, name: changed}


def test_each_check_catches_a_single_wrong_record(run, opendss):
    tables = run.tables
    trades, prices = tables["trades"], tables["prices"]
    # a retailer that booked at a price other than the one it published
    row = int(np.flatnonzero(prices.source == "aggregator-0")[-1])
    with pytest.raises(AssertionError, match="money of"):
        check_money(run, _with(tables, "prices", "import_price", row, 0.01))
    # one household billed a micro-unit too much
    with pytest.raises(AssertionError, match="bills"):
        check_bills(run, _with(tables, "households", "cost", 100, 1e-6))
    # one trade off its market's price
    with pytest.raises(AssertionError, match="trade prices"):
        check_markets(run, _with(tables, "trades", "price", len(trades) // 2, 1e-3))
    # a seller's limit above the price it got
    seller = int(np.flatnonzero(trades.kwh < 0)[0])
    above = float(trades.price.iloc[seller] - trades.limit_price.iloc[seller]) + 1e-6
    with pytest.raises(AssertionError, match="seller"):
        check_markets(run, _with(tables, "trades", "limit_price", seller, above))
    # one household's draw misrecorded by one kilowatt at a sampled step
    step = sampled_steps(run)[-1]
    row = int(np.flatnonzero(tables["households"].step == step)[0])
    wrong = _with(tables, "households", "net_kw", row, 1.0)["households"]
    with pytest.raises(AssertionError, match="OpenDSS"):
        check_grid_step(run, wrong, step, *opendss)
