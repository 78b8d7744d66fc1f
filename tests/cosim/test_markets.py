"""Each market design in the co-simulation, rebuilt from the records by independent code:
MAHTM's three layers from the households' bids and meters, the cooperative game's day
settlement against a brute-force game, pay-as-bid from the trades, and the sharded market
operators (one per group of shards, each shard answered by its own)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from cosim.backends import LocalBackend
from cosim.config import ConfigError
from cosim.scenario import build
from cosim.simulation import Simulation
from markets.mechanism import Orders, Upstream

from .conftest import small, synthetic_profiles

TOL = 1e-12


def _run(config, folder):
    sim = Simulation(build(config, synthetic_profiles(homes=30)), LocalBackend(), folder)
    sim.run(progress=False)
    tables = {t: pd.read_parquet(folder / t) for t in
              ("households", "system", "prices", "exogenous", "trades", "markets")
              if (folder / t).exists()}
    homes = pd.read_parquet(folder / "homes.parquet")[["household", "market"]]
    tables["households"] = tables["households"].merge(homes, on="household", validate="m:1")
    return sim, tables


def _pool(low, high, demand, supply, fee):
    """MAHTM's posted prices, written out from the paper's description."""
    share = demand / (demand + supply) if demand + supply > 0 else 0.5
    mid = low + (high - low) * share
    return min(mid + fee / 2, high), max(mid - fee / 2, low)


def test_mahtm_three_layers_rebuilt_from_bids_and_meters(tmp_path):
    config = small(markets={"mechanism": "mahtm", "households_per_market": 10,
                            "mahtm": {"fee": 0.02, "carbon_price": 0.2}},
                   aggregators={"count": 0})
    _, t = _run(config, tmp_path)
    homes, system = t["households"], t["system"]
    exo = t["exogenous"].set_index("step")
    assert system["money_balance"].abs().max() < 1e-9
    grid_buy = exo.wholesale_price + 0.2 * exo.carbon_intensity
    grid_sell = config.tariff.export_price
    checked = 0
    for step, day in homes.groupby("step"):
        b, s = grid_buy[step], grid_sell
        # layer 2: every microgrid's pool of bids at its posted prices
        for _, mg in day.groupby("market"):
            q = mg.bid_kwh.to_numpy()
            demand, supply = q.clip(min=0).sum(), (-q).clip(min=0).sum()
            buy, sell = _pool(s, b, demand, supply, 0.02)
            matched = min(demand, supply)
            fill = np.where(q > 0, q * matched / max(demand, 1e-300),
                            q * matched / max(supply, 1e-300))
            np.testing.assert_allclose(mg.traded_kwh, fill, atol=TOL)
            np.testing.assert_allclose(mg.payment, np.where(fill > 0, fill * buy, fill * sell),
                                       atol=TOL)
        # layer 3: the microgrids' metered residuals pooled, the rest at the grid's prices
        g = day.grid_kwh.to_numpy()
        imports = day.assign(i=g.clip(min=0)).groupby("market").i.sum()
        exports = day.assign(e=(-g).clip(min=0)).groupby("market").e.sum()
        buy3, sell3 = _pool(s, b, imports.sum(), exports.sum(), 0.02)
        matched = min(imports.sum(), exports.sum())
        f_in = matched / imports.sum() if imports.sum() else 0.0
        f_out = matched / exports.sum() if exports.sum() else 0.0
        np.testing.assert_allclose(day.import_price, f_in * buy3 + (1 - f_in) * b, atol=TOL)
        np.testing.assert_allclose(day.export_price, f_out * sell3 + (1 - f_out) * s, atol=TOL)
        # only the grid's share of imports emits
        np.testing.assert_allclose(
            day.emissions_kg, g.clip(min=0) * (1 - f_in) * exo.carbon_intensity[step], atol=TOL)
        checked += matched > 0
    assert checked >= 3  # microgrids did trade with each other


def _brute_force_values(q: np.ndarray, buy: np.ndarray, sell: np.ndarray) -> dict:
    """v(S): what coalition S saves behind one meter, step by step, by enumeration."""
    n = len(q)
    values = {}
    for r in range(n + 1):
        for members in itertools.combinations(range(n), r):
            alone = sum(float(buy @ q[i].clip(min=0) - sell @ (-q[i]).clip(min=0))
                        for i in members)
            net = q[list(members)].sum(0) if members else np.zeros(q.shape[1])
            values[members] = alone - float(buy @ net.clip(min=0) - sell @ (-net).clip(min=0))
    return values


def test_cooperative_game_splits_the_day_inside_the_core(tmp_path):
    config = small(run={"steps": 6}, markets={"mechanism": "cooperative",
                                              "households_per_market": 6},
                   households={"count": 18, "shard_size": 6}, aggregators={"count": 0})
    sim, t = _run(config, tmp_path)
    assert t["system"]["money_balance"].abs().max() < 1e-9
    coalitions = pd.read_parquet(tmp_path / "coalitions")
    assert (coalitions.step == 5).all()  # settled once, at the run's last step
    home_market = pd.read_parquet(tmp_path / "homes.parquet").set_index("household").market
    assert (coalitions.market.to_numpy() == home_market.loc[coalitions.household]).all()
    assert coalitions.market.nunique() == 3
    homes, prices = t["households"], t["prices"]
    buy = prices[prices.source == "distributor"].set_index("step").import_price.to_numpy()
    sell = prices[prices.source == "distributor"].set_index("step").export_price.to_numpy()
    for market, mine in coalitions.groupby("market"):
        members = mine.household.to_numpy()
        q = homes[homes.household.isin(members)].pivot(
            index="household", columns="step", values="bid_kwh").loc[members].to_numpy()
        v = _brute_force_values(q, buy, sell)
        x = mine.allocated_savings.to_numpy()
        grand = tuple(range(len(members)))
        assert x.sum() == pytest.approx(v[grand], abs=1e-9)  # efficient
        # in the core: no coalition saves more on its own than the members get
        assert max(v[S] - x[list(S)].sum() for S in v if S) <= 1e-7
        # the pool realised exactly v(N); the transfers move money only among members
        assert mine.pool_savings.sum() == pytest.approx(v[grand], abs=1e-9)
        assert mine.transfer.sum() == pytest.approx(0.0, abs=1e-9)
    last = homes[homes.step == 5].set_index("household")
    trades = t["trades"]
    paid = trades[trades.step == 5].set_index("household").payment.reindex(last.index,
                                                                            fill_value=0.0)
    np.testing.assert_allclose(last.payment - paid,
                               coalitions.set_index("household").transfer.loc[last.index],
                               atol=TOL)


def test_pay_as_bid_books_every_trade_at_its_limit(tmp_path):
    config = small(run={"steps": 4},
                   markets={"double_auction": {"pricing": "pay_as_bid"}})
    _, t = _run(config, tmp_path)
    trades = t["trades"]
    assert len(trades) > 0
    np.testing.assert_allclose(trades.price, trades.limit_price, atol=0)
    spread = trades.groupby(["step", "market"]).payment.sum()
    assert (spread >= -TOL).all() and (spread > 0).any()  # the operator keeps the spread
    assert t["system"]["money_balance"].abs().max() < 1e-9
    per = trades.assign(b=trades.kwh.clip(lower=0), s=-trades.kwh.clip(upper=0)).groupby(
        ["step", "market"])[["b", "s"]].sum()
    np.testing.assert_allclose(per.b, per.s, atol=TOL)


def test_each_shard_is_answered_by_its_own_market_operator(tmp_path):
    config = small(run={"steps": 2, "record_messages": True},
                   households={"count": 60, "shard_size": 20},
                   markets={"households_per_market": 10})
    sim, _ = _run(config, tmp_path)
    operators = sim.market_operators
    assert len(operators) == 3 == len(sim.shards)  # shards hold whole markets
    for shard in sim.shards:
        sources = {src for src, phase, _ in sim.routes[(shard, "dispatch")]}
        assert len(sources) == 1 and sources <= set(operators)
    log = pd.read_parquet(tmp_path / "messages")
    clearing = log[log.type == "ClearingResult"]
    assert (clearing.groupby(["step", "sender"]).size() == 1).all()
    assert clearing.rows.max() == 20  # nobody gets another shard's rows


@pytest.mark.parametrize("follower", ["rule", "mpc"])
def test_stackelberg_aggregator_leads_the_day_and_reports_the_gap(follower, tmp_path):
    settings = {"markups": [0.0, 0.05, 0.1, 0.2, 0.3], "peak_adders": [0.0, 0.1],
                "sell_discount": 0.02, "follower": follower}
    config = small(run={"steps": 6}, aggregators={"count": 1, "customer_share": 0.5,
                                                  "pricing": "stackelberg",
                                                  "stackelberg": settings})
    sim, t = _run(config, tmp_path)
    led = pd.read_parquet(tmp_path / "stackelberg")
    assert len(led) == 6 and led.converged.all()  # one row per step, the day's equilibrium
    assert (led.leader_gain.abs() < 1e-9).all() and (led.follower_gain.abs() < 1e-9).all()
    markup, adder = led.markup.iloc[0], led.peak_adder.iloc[0]
    assert markup in settings["markups"] and adder in settings["peak_adders"]
    # it charges above wholesale, trading margin against members its model says would
    # rather pay the distributor's 0.30 (optimising followers weigh their exports too)
    members = (sim.households["retailer"] == "aggregator-0").sum()
    assert markup > 0 and 0 < led.members_staying.iloc[0] <= members
    prices = t["prices"][t["prices"].source == "aggregator-0"].set_index("step")
    wholesale = t["exogenous"].set_index("step").wholesale_price
    hour = (6 + prices.index / 4) % 24
    peak = (hour >= 17) & (hour < 21)
    np.testing.assert_allclose(prices.import_price, wholesale + markup + adder * peak, atol=1e-12)
    np.testing.assert_allclose(prices.export_price, wholesale - 0.02, atol=1e-12)
    assert t["system"]["money_balance"].abs().max() < 1e-9


def test_stackelberg_bilevel_leader_is_checked_by_the_members_own_mpc(tmp_path):
    config = small(run={"steps": 4},
                   households={"count": 20, "shard_size": 20, "ev": {"share": 0.0},
                               "heat_pump": {"share": 0.0}, "flexible_load": {"share": 0.0},
                               "generator": {"share": 0.0}, "battery": {"share": 1.0}},
                   markets={"households_per_market": 20},
                   aggregators={"count": 1, "customer_share": 0.3, "pricing": "stackelberg",
                                "stackelberg": {"method": "bilevel", "sell_discount": 0.0,
                                                "markups": [0.0, 0.1, 0.2, 0.3],
                                                "peak_adders": [0.0]}})
    _, t = _run(config, tmp_path)
    led = pd.read_parquet(tmp_path / "stackelberg")
    # the MILP's plans are optimal for each member: its own MPC saves nothing more
    assert (led.method == "bilevel").all()
    assert led.follower_gain.max() < 1e-6 and led.markup.iloc[0] in (0.1, 0.2, 0.3)
    assert t["system"]["money_balance"].abs().max() < 1e-9
    with pytest.raises(Exception, match="household .* owns more"):
        build(small(aggregators={"count": 1, "pricing": "stackelberg",
                                 "stackelberg": {"method": "bilevel"}}),
              synthetic_profiles(homes=30))


def test_pools_refuse_what_they_cannot_price():
    profiles = synthetic_profiles(homes=30)
    with pytest.raises(ConfigError, match=r"tariff.export_price: at .* above the wholesale"):
        build(small(markets={"mechanism": "mahtm"}, tariff={"export_price": 5.0},
                    aggregators={"count": 0}), profiles)
    with pytest.raises(ConfigError, match=r"aggregators.count must be 0"):
        build(small(markets={"mechanism": "cooperative"}), profiles)


@pytest.mark.parametrize("design", ["mahtm", "cooperative", "stackelberg"])
def test_a_resumed_run_equals_an_uninterrupted_one(design, tmp_path):
    """Each design's state (a lagging pool price, a day's coalition books, the leader's
    tariff and members' state) survives a checkpoint."""
    changes = {
        "mahtm": dict(markets={"mechanism": "mahtm", "mahtm": {"gain": 0.4}},
                      aggregators={"count": 0}, run={"start": "2026-06-01T10:00:00Z"}),
        "cooperative": dict(markets={"mechanism": "cooperative", "households_per_market": 6},
                            households={"count": 18, "shard_size": 6},
                            aggregators={"count": 0}),
        "stackelberg": dict(aggregators={"count": 1, "pricing": "stackelberg"}),
    }[design]
    changes["run"] = changes.get("run", {}) | {"steps": 8, "checkpoint_every": 3}
    config = small(**changes)
    profiles = synthetic_profiles(homes=30)
    Simulation(build(config, profiles), LocalBackend(), tmp_path / "full").run(progress=False)
    Simulation(build(config, profiles), LocalBackend(), tmp_path / "cut").run(
        steps=5, progress=False)
    Simulation.resume(tmp_path / "cut", LocalBackend(), profiles=profiles).run(progress=False)
    keys = {"households": ["step", "household"], "system": ["step"],
            "prices": ["step", "source"]}
    for table, key in keys.items():
        full, cut = (pd.read_parquet(tmp_path / run / table).sort_values(key).reset_index(
            drop=True) for run in ("full", "cut"))
        pd.testing.assert_frame_equal(full.drop(columns=["wall_s"], errors="ignore"),
                                      cut.drop(columns=["wall_s"], errors="ignore"),
                                      check_exact=True, obj=f"{design} {table}")


def test_the_cooperative_day_settles_at_each_day_end_and_at_the_runs_end():
    """Two-step days over a five-step run: the books close after steps 1, 3 and 4, each
    time with transfers that sum to zero, and start afresh."""
    from cosim.actors.market import Coalitions
    from markets.mahtm import PoolMarket as Pool

    home = np.zeros(4, dtype=np.int64)
    games = Coalitions({"allocation": "shapley"}, home, 1, steps_per_day=2, steps=5)
    pool, rng, closed = Pool(fee=0.0), np.random.default_rng(1), []
    for step in range(5):
        orders = Orders(np.arange(4), home, rng.uniform(-2, 2, 4), np.zeros(4), 1)
        up = Upstream.flat(0.3, 0.05, 1)
        result, day = games.settle(step, orders, pool.clear(orders, up, home), up)
        if day is not None:
            closed.append(step)
            assert day["transfer"].sum() == pytest.approx(0.0, abs=1e-12)
            np.testing.assert_allclose(result.payment - pool.clear(orders, up, home).payment,
                                       day["transfer"])
    assert closed == [1, 3, 4]
    assert not games.used.any() and not games.saved.any()
