"""Bidders (households whose local market bids come from the driver), learning them, and the
hierarchical P2P and wholesale reproduction (`cosim reproduce stackelberg`).

Learning outcomes are not asserted (they are the reproduction's result); what is: a bidder
that bids what the rule would bid is the rule to the last bit (an independent run of the
rule policy), bids land in the market as limit prices, bad bids are refused naming the
household, and the quick table's columns agree with the engine's own money ledger and grid
summary (the `system` table), which the reproduction does not read."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cosim.cli import main as cosim
from cosim.envs import EnvError, MultiAgentEnv
from cosim.records import RunFolder
from cosim.simulation import Simulation
from experiments.reproduce import stackelberg as reproduction

COMPARED = ["limit_price", "traded_kwh", "payment", "grid_kwh", "cost", "battery_kw",
            "battery_energy_kwh", "net_kw", "voltage_pu"]


def _households(config, folder, bids=None) -> pd.DataFrame:
    sim = Simulation.from_config(config if bids is None else config.everyone("bidder"),
                                 record=True, out=folder)
    sim.reset()
    for t in range(sim.total):
        sim.step(bids=None if bids is None else bids(t))
    sim.close()
    return RunFolder(folder).read("households").to_pandas().sort_values(["step", "household"])


@pytest.fixture(scope="module")
def config():
    return reproduction.scenario("margin")


@pytest.fixture(scope="module")
def rule(config, tmp_path_factory):
    return _households(config, tmp_path_factory.mktemp("rule"))


def test_a_bidder_bidding_the_rules_price_is_the_rule(config, rule, tmp_path):
    """Bids set to where each rule household's limit lay between its export and import
    prices give the rule's run again: same orders, trades, bills and device states."""
    position = ((rule.limit_price - rule.export_price)
                / (rule.import_price - rule.export_price)).to_numpy().reshape(-1, 10)
    bidders = _households(config, tmp_path, lambda t: position[t])
    for column in COMPARED:
        np.testing.assert_allclose(bidders[column], rule[column], rtol=0, atol=1e-9,
                                   err_msg=column)
    assert (rule.traded_kwh.abs() > 1e-6).any()  # the market did trade


def test_bids_are_the_limit_prices_the_market_sees(config, rule, tmp_path):
    rng = np.random.default_rng(3)
    bids = rng.uniform(0, 1, (config.run.steps, 10))
    got = _households(config, tmp_path, lambda t: bids[t])
    want = got.export_price + bids.ravel() * (got.import_price - got.export_price)
    np.testing.assert_allclose(got.limit_price, want, rtol=0, atol=1e-12)
    # devices are the rule's until the market fills differently: the first step's orders
    first = got.step == 0
    np.testing.assert_allclose(got.bid_kwh[first], rule.bid_kwh[rule.step == 0], atol=1e-12)
    assert not np.allclose(got.traded_kwh, rule.traded_kwh)  # the bids changed the trades


@pytest.mark.parametrize("bids, message", [
    (None, r"10 households have policy \"bidder\": pass their bids"),
    (np.full(3, 0.5), r"bids must be \(10,\)"),
    (np.r_[np.full(9, 0.5), np.nan], "household 9: bids are not finite"),
    (np.r_[0.5, 1.5, np.full(8, 0.5)], r"household 1: bid 1.5 is outside \[0, 1\]")])
def test_bad_bids_name_the_household(config, bids, message):
    sim = Simulation.from_config(config.everyone("bidder"), record=False)
    try:
        sim.reset()
        with pytest.raises(ValueError, match=message):
            sim.step(bids=bids)
    finally:
        sim.close()


def test_the_bidding_environment_has_one_action(config):
    env = MultiAgentEnv(config, bidding=True)
    try:
        space = env.action_spaces["household_0"]
        assert space.shape == (1,) and space.low[0] == 0 and space.high[0] == 1
        obs = env.reset_arrays()
        _, rewards, done, info = env.step_arrays(np.full((len(obs), 1), 0.5))
        assert rewards.shape == (10,) and np.isfinite(rewards).all() and not done
        with pytest.raises(EnvError, match="agent 'household_2': bid action -0.1"):
            env.step_arrays(np.r_[[0.5, 0.5, -0.1], np.full(7, 0.5)][:, None])
    finally:
        env.close()


def test_the_command_line_refuses_bidders_and_bidding_gradmap(tmp_path, capsys):
    text = reproduction.SCENARIO.read_text().replace(
        "[households]\n", '[households]\npolicy = "bidder"\n').replace(
        '"profiles/default.toml"', f'"{reproduction.SCENARIO.parent}/profiles/default.toml"')
    path = tmp_path / "bidders.toml"
    path.write_text(text)
    assert cosim(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    assert 'policy "bidder"' in capsys.readouterr().err
    assert cosim(["train", str(reproduction.SCENARIO), "--algo", "gradmap", "--bidding"]) == 2
    assert "--bidding" in capsys.readouterr().err


@pytest.fixture(scope="module")
def quick(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("stackelberg-quick")
    return out, reproduction.run(out, reproduction.QUICK_ITERATIONS, progress=False)


def test_the_quick_table_has_every_case_and_column(quick):
    out, table = quick
    assert list(table.case) == list(reproduction.CASES)
    for name in ("table.md", "table.csv", "cases.png", "ippo-myopic/bank.pt",
                 "ippo-stackelberg/training.parquet"):
        assert (out / name).is_file(), name
    md = (out / "table.md").read_text()
    assert all(case in md for case in reproduction.CASES) and "Paper:" in md
    assert (table.nonconverged == 0).all()
    assert (table[table.bids == "ippo"].train_s > 0).all()


def test_the_quick_table_agrees_with_the_engines_ledger(quick):
    """Bills, profit and violations against the `system` table of each evaluated day: the
    money each party booked and the grid's own count, which the table is not built from."""
    out, table = quick
    for row in table.itertuples():
        system = RunFolder(reproduction.day_folder(out, row.case)).read("system").to_pandas()
        assert row.bills == pytest.approx(-system.money_households.sum(), abs=1e-9)
        assert row.profit == pytest.approx(system["money_aggregator-0"].sum(), abs=1e-9)
        assert row.violations == system.violations.sum()
        assert row.p2p_kwh == pytest.approx(system.p2p_kwh.sum(), abs=1e-9)
    rules = table[table.bids == "rule"].set_index("leader")
    # rule bids under any leader: the same devices, so the same P2P trades and peak
    assert rules.p2p_kwh.nunique() == 1 and rules.peak_import_kw.nunique() == 1
