"""`cosim reproduce`: the registry, the command line, and MAHTM's quick reproduction.

The quick run (experiments/reproduce/mahtm.py, `--quick`) runs once per module; the tests
check its table's structure and what must hold whatever the learning outcome: the
optimum is never worse than any other policy on the same days, every policy's bill is above
the certified lower bound, and the scores and rewards are those an independent
computation gives (experiments.mahtm_scores's day totals of the deployed bank and of the
bare houses, experiments.rl.train's return through the PettingZoo environment).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from agents.households import ACTIONS, FIELDS, SIGNED_ACTIONS
from agents.policies.bank import PolicyBank
from agents.profiles.mahtm import HOUSES
from cosim.cli import main as cosim
from experiments.mahtm_scores import day_totals, without_storage
from experiments.reproduce import REPRODUCTIONS, mahtm


@pytest.fixture(scope="module")
def quick(ray_cluster, tmp_path_factory):
    return mahtm.run(tmp_path_factory.mktemp("mahtm-quick"), quick=True, progress=False)


def test_only_written_reproductions_are_listed():
    assert set(REPRODUCTIONS) == {"mahtm", "facmac", "stackelberg"}


def test_an_unknown_name_is_exit_code_2_naming_the_available_ones(capsys):
    with pytest.raises(SystemExit) as exc:
        cosim(["reproduce", "nonesuch"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "facmac" in err and "mahtm" in err


@pytest.mark.parametrize("option", [["--batch", "0"], ["--iterations", "-1"],
                                    ["--budget-s", "0"], ["--seed", "-3"]])
def test_bad_options_are_exit_code_2(option, capsys, tmp_path):
    assert cosim(["reproduce", "mahtm", "--quick", "--out", str(tmp_path), *option]) == 2
    assert "error" in capsys.readouterr().err


def test_an_out_folder_holding_something_else_is_exit_code_2(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    assert cosim(["reproduce", "mahtm", "--quick", "--out", str(tmp_path)]) == 2
    assert cosim(["reproduce", "mahtm", "--quick", "--out",
                  str(tmp_path / "notes.txt")]) == 2
    assert "is not a reproduction's folder" in capsys.readouterr().err


def test_the_house_sets_are_the_papers(tmp_path):
    for s, n in (("training", 6), ("evaluation", 6), ("testing", 10)):
        config = mahtm.scenario(s, tmp_path, seed=0, steps=24)
        homes = config.households.homes
        assert config.households.count == len(homes) == n
        assert [h.pv_kwp for h in homes] == HOUSES[s]["pv_peak"]
        assert [h.battery_kwh for h in homes] == HOUSES[s]["battery_capacity"]
        assert [h.battery_kw for h in homes] == pytest.approx(
            [0.8 * c for c in HOUSES[s]["battery_capacity"]])
        b = config.households.battery
        assert (b.efficiency, b.soc_min, b.soc_max, b.soc_initial) == (1.0, 0.1, 0.9, 0.1)
        assert config.markets.mechanism == "mahtm"
        assert config.markets.households_per_market == n  # one microgrid


def test_a_bank_of_different_policies_is_not_taken_as_shared(tmp_path):
    path = tmp_path / "bank.pt"
    PolicyBank(2, len(FIELDS), len(ACTIONS), (8,), SIGNED_ACTIONS, seed=0).save(
        path, FIELDS, ACTIONS)
    with pytest.raises(ValueError, match="not a shared policy"):
        mahtm.shared_bank(path, 10)


def test_the_quick_table_has_table_2s_layout_beside_the_papers_numbers(quick):
    table = pd.read_csv(quick.out / "table.csv")
    assert list(table.method) == list(mahtm.METHODS)
    for column in mahtm.COLUMNS:
        assert column in table and f"paper_{column}" in table
        assert table[column].notna().all()
    for method, paper_row in mahtm.PAPER_ROW.items():
        row = table.set_index("method").loc[method]
        assert row.paper_row == paper_row
        for column, value in mahtm.PAPER[paper_row].items():
            assert row[f"paper_{column}"] == value
    assert table.set_index("method").loc[list(mahtm.LEARNED), "iterations"].eq(2).all()
    text = (quick.out / "table.md").read_text()
    assert text.startswith("| method (paper's row) | train_reward")
    assert "a2c (MAHTM) | " in text and "(-0.993)" in text  # ours, then the paper's
    assert (quick.out / "learning_curves.png").stat().st_size > 0
    for algo in mahtm.LEARNED:
        assert (quick.out / algo / "bank.pt").is_file()


def test_the_optimum_is_never_worse_than_any_policy_on_the_same_days(quick):
    for s in mahtm.SETS:
        best = quick.days["optimum", s]
        for m in mahtm.METHODS:
            day = quick.days[m, s]
            # the lower bound holds for every policy; the optimum beats each of them
            assert day.bill.sum() >= quick.bounds[s] - 1e-9, (m, s)
            assert best.bill.sum() <= day.bill.sum() + 1e-9, (m, s)
            assert best.reward.sum() >= day.reward.sum() - 1e-9, (m, s)
    table = quick.table.set_index("method")
    assert (table.train_reward.max() == table.loc["optimum", "train_reward"])
    assert table.loc["optimum", "optimum_gap"] >= -1e-9


def test_days_are_what_mahtm_scores_measures_for_the_deployed_bank(quick, tmp_path):
    """Each learned row's bills and emissions against experiments.mahtm_scores running
    the bank as `cosim run` deploys it (its own loop and policy), on the training and
    testing sets, and the no-battery day against its run of the bare houses."""
    for s in ("training", "testing"):
        n = len(HOUSES[s]["peak_load"])
        bare = day_totals(without_storage(quick.configs[s]).everyone("rule"))
        assert quick.baseline[s].bill == pytest.approx(bare[0], abs=1e-12)
        assert quick.baseline[s].emissions_kg == pytest.approx(bare[1], abs=1e-12)
        for algo in mahtm.LEARNED if s == "training" else ["a2c"]:  # one suffices to test
            bank = tmp_path / f"{algo}-{s}.pt"
            mahtm.shared_bank(quick.banks[algo], n).save(bank, FIELDS, ACTIONS)
            bill, emissions = day_totals(quick.configs[s].everyone("bank", bank))
            assert quick.days[algo, s].bill == pytest.approx(bill, abs=1e-9)
            assert quick.days[algo, s].emissions_kg == pytest.approx(emissions, abs=1e-9)


def test_scores_and_rewards_by_hand(quick):
    """Price score = mean over households of (bill with - bill without the batteries,
    nothing controlled), the emission score alike; the train reward
    equals the return the RL environment gives the same bank (experiments.rl.train)."""
    from experiments.rl.train import bank_return

    table = quick.table.set_index("method")
    for m in mahtm.METHODS:
        with_, bare = quick.days[m, "evaluation"], quick.baseline["evaluation"]
        assert table.loc[m, "eval_price_score"] == pytest.approx(
            np.mean(with_.bill - bare.bill), abs=1e-12)
        assert table.loc[m, "eval_emission_score"] == pytest.approx(
            np.mean(with_.emissions_kg - bare.emissions_kg), abs=1e-12)
    bank = PolicyBank.load(quick.banks["a2c"], fields=FIELDS, actions=ACTIONS)
    env_return = bank_return(quick.configs["training"], bank,
                             profiles=quick.profiles["training"])
    assert table.loc["a2c", "train_reward"] == pytest.approx(env_return, abs=1e-9)
    # a shared policy: every household's weights are the first one's
    assert all(torch.equal(w, w[:1].expand_as(w)) for w in bank.weights)
