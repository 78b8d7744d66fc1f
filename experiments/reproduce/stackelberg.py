"""Hierarchical P2P and wholesale trading with a Stackelberg aggregator (Wilk, Cantor, Liu,
Li, arXiv:2604.20586, 2026): prosumers learn their P2P bids with IPPO in their microgrid's
auction; an aggregator that retails them all leads a Stackelberg game over them for its
wholesale participation.

    cosim reproduce stackelberg [--quick] [--out DIR] [--iterations N] [--seed N]
                                [--no-progress]

The scenario is experiments/configs/stackelberg_eulv.toml: ten prosumers (PV on seven,
batteries in five, cars in three) in one microgrid of the European LV feeder, an hourly
call double auction among them, one aggregator retailing all ten that buys their net
position day-ahead and settles the deviation at the real-time price. Five cases, each
evaluated on a held-out day (the day after the training day) in the co-simulation:

    rule bids, margin leader      no game: the aggregator prices at wholesale +- a margin
    rule bids, myopic leader      the leader best-responds to its members' current
                                  response only (no anticipation of their reaction)
    rule bids, Stackelberg        the leader anticipates their reaction (its price slope)
    IPPO bids, myopic leader      the prosumers' bids learned by IPPO against that leader
    IPPO bids, Stackelberg        ... and against the anticipating leader

Rule bids are each prosumer's own marginal value of energy (agents.households.orders); an
IPPO bidder's one action places its limit price between its export and import price
(`cosim train --bidding`; its devices follow the same self-consumption rule, so the bids
alone differ). The leader models its members with the rule (it cannot see the learned
bids), the paper's leader-follower information structure as we read it.

Columns, all on the held-out day: the prosumers' bills (sum, currency), the aggregator's
profit (retail revenue less day-ahead cost and imbalance settlement), the wholesale
imbalance (sum over hours of |metered - day-ahead position|, kWh), the portfolio's peak
import (kW), the P2P volume (kWh), node-steps outside the voltage limits, and any step whose
power flow did not converge (never hidden), and the leader's markup and peak adder that
day (currency/kWh). The paper's own numbers (a prosumer reward of 0.9 in its ten-prosumer
case, aggregator rewards of 1.27-18.09 across its cases) come with no units or definitions
that we could check, so they are printed beside the table as quoted, not compared cell
by cell.

Output under the run folder: table.md and table.csv, each IPPO run's training folder
(bank.pt, training.parquet, training.png), each evaluation's run folder, and cases.png
(bills, profit, imbalance and peak import per case).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from agents.policies.bank import PolicyBank
from cosim.config import ScenarioConfig, load_config
from cosim.envs import BID_ACTIONS
from cosim.records import RunFolder
from cosim.simulation import Simulation
from experiments.reproduce import (
    common_arguments,
    default_folder,
    empty_folder,
    run_and_print,
    script,
)

ROOT = Path(__file__).parents[2]
SCENARIO = ROOT / "experiments" / "configs" / "stackelberg_eulv.toml"
LEADERS = ("margin", "myopic", "stackelberg")
# case: (bids, leader)
CASES = {"rule bids, margin leader": ("rule", "margin"),
         "rule bids, myopic leader": ("rule", "myopic"),
         "rule bids, Stackelberg": ("rule", "stackelberg"),
         "IPPO bids, myopic leader": ("ippo", "myopic"),
         "IPPO bids, Stackelberg": ("ippo", "stackelberg")}
ITERATIONS, QUICK_ITERATIONS = 60, 2
EPISODES = 4  # training days sampled per IPPO iteration (the same day: the scenario's)
LR = 1e-3
PAPER = ("the paper reports, without units we could check: prosumer reward 0.9 (ten-prosumer "
         "case); aggregator outcome 1.27 and reward 12.72 (case I); aggregator reward 0.12 "
         "with PJM wholesale data and 18.09 with dynamic trading (case III)")


def scenario(leader: str, held_out: bool = False, seed: int | None = None) -> ScenarioConfig:
    """The scenario with the aggregator pricing as `leader` (LEADERS), on the training day
    or the day after it (`held_out`)."""
    if leader not in LEADERS:
        raise ValueError(f"leader {leader!r}: choose one of {LEADERS}")
    config = load_config(SCENARIO)
    run = config.run.model_copy(update={
        **({"seed": seed} if seed is not None else {}),
        **({"start": config.run.start + dt.timedelta(days=1)} if held_out else {})})
    agg = config.aggregators
    update = {"pricing": "margin"} if leader == "margin" else {
        "stackelberg": agg.stackelberg.model_copy(
            update={"anticipate": leader == "stackelberg"})}
    return ScenarioConfig.model_validate(config.model_copy(update={
        "run": run, "aggregators": agg.model_copy(update=update)}).model_dump())


@dataclass
class Day:
    """One evaluated day of a case (module docstring's columns)."""

    bills: float
    profit: float
    imbalance_kwh: float
    peak_import_kw: float
    p2p_kwh: float
    violations: int
    nonconverged: int
    markup: float  # the leader's tariff that day, currency/kWh (NaN: no leader)
    peak_adder: float

    @classmethod
    def of(cls, folder: Path, bills: float, p2p: float, violations: int,
           nonconverged: int, dt_h: float) -> Day:
        """The aggregator's columns from the run folder's `positions` table: its profit is
        its own ledger, rebuilt from the settlement (retail revenue - day-ahead cost -
        imbalance cost)."""
        records = RunFolder(folder)
        p = records.read("positions").to_pandas()
        profit = float((p.retail_revenue - p.day_ahead_cost - p.imbalance_cost).sum())
        led = records.read("stackelberg")
        tariff = (np.nan, np.nan) if led is None else (
            float(led["markup"][0].as_py()), float(led["peak_adder"][0].as_py()))
        return cls(bills, profit, float((p.actual_kwh - p.position_kwh).abs().sum()),
                   float(max(p.actual_kwh.max(), 0.0) / dt_h), p2p, violations, nonconverged,
                   *tariff)


def day_folder(out: Path, case: str) -> Path:
    """Where the reproduction in `out` recorded `case`'s evaluated day."""
    return out / "days" / case.replace(", ", "-").replace(" ", "_").lower()


def evaluate(config: ScenarioConfig, folder: Path, bank: PolicyBank | None) -> Day:
    """One recorded day of `config`: the prosumers bid as their rule, or as `bank` (its
    deterministic bids, each from the household's own observation)."""
    sim = Simulation.from_config(config if bank is None else config.everyone("bidder"),
                                 record=True, out=folder)
    bills = p2p = 0.0
    violations = nonconverged = 0
    try:
        obs = sim.reset()
        for _ in range(sim.total):
            bids = None
            if bank is not None:
                with torch.no_grad():
                    bids = bank(torch.as_tensor(obs)).numpy()[:, 0]
            result = sim.step(bids=bids)
            bills += float(result.costs.bill.sum())
            p2p += float(np.nansum(result.markets["volume_kwh"]))
            if result.grid.converged:
                violations += int(result.grid.violations)
            else:
                nonconverged += 1
            obs = result.observations
    finally:
        sim.close()
    return Day.of(folder, bills, p2p, violations, nonconverged, config.run.dt_s / 3600.0)


def run(out: Path, iterations: int, seed: int | None = None, progress: bool = True
        ) -> pd.DataFrame:
    """The whole reproduction into `out` (module docstring). Ray is started here (2 CPUs)
    unless it already runs."""
    import ray

    from experiments.rl.train import TrainConfig, train

    out.mkdir(parents=True, exist_ok=True)
    banks: dict[str, PolicyBank] = {}
    times: dict[str, float] = {}
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    try:
        for leader in sorted({leader for bids, leader in CASES.values() if bids == "ippo"}):
            config = scenario(leader, seed=seed)
            settings = TrainConfig(algo="ippo", iterations=iterations, bidding=True,
                                   episodes=EPISODES, lr=LR, seed=config.run.seed,
                                   checkpoint_every=iterations)
            start = time.perf_counter()
            outcome = train(config, settings, out / f"ippo-{leader}", progress=progress)
            times[leader] = time.perf_counter() - start
            banks[leader] = PolicyBank.load(outcome.bank, actions=BID_ACTIONS)
    finally:
        if started:
            ray.shutdown()
    rows = []
    for case, (bids, leader) in tqdm(CASES.items(), desc="evaluating", disable=not progress):
        config = scenario(leader, held_out=True, seed=seed)
        day = evaluate(config, day_folder(out, case), banks.get(leader) if bids == "ippo"
                       else None)
        rows.append({"case": case, "bids": bids, "leader": leader, **vars(day),
                     "train_s": times.get(leader, 0.0) if bids == "ippo" else 0.0})
    table = pd.DataFrame(rows)
    table.to_csv(out / "table.csv", index=False)
    (out / "table.md").write_text(markdown(table, iterations) + "\n")
    plot(table, out / "cases.png")
    return table


def markdown(table: pd.DataFrame, iterations: int) -> str:
    head = ("| case | prosumer bills | aggregator profit | imbalance (kWh) | peak import (kW) "
            "| P2P (kWh) | voltage node-steps | non-converged | markup / peak adder "
            "| IPPO training (s) |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head] + [
        f"| {r.case} | {r.bills:.2f} | {r.profit:.2f} | {r.imbalance_kwh:.2f} | "
        f"{r.peak_import_kw:.2f} | {r.p2p_kwh:.2f} | {r.violations} | {r.nonconverged} | "
        f"{_tariff(r.markup, r.peak_adder)} | {r.train_s:.0f} |" for r in table.itertuples()]
    return "\n".join([
        "Hierarchical P2P and wholesale trading with a Stackelberg aggregator, held-out day "
        f"(IPPO: {iterations} iterations of {EPISODES} episodes of the training day each)",
        "", *lines, "", f"Paper: {PAPER}."])


def _tariff(markup: float, peak_adder: float) -> str:
    return "—" if np.isnan(markup) else f"{markup:.3f} / {peak_adder:.2f}"


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = {"bills": "prosumer bills (currency)", "profit": "aggregator profit (currency)",
               "imbalance_kwh": "wholesale imbalance (kWh)",
               "peak_import_kw": "peak import (kW)"}
    fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 4))
    colours = ["tab:blue" if b == "rule" else "tab:orange" for b in table.bids]
    for ax, (column, label) in zip(axes, columns.items()):
        ax.barh(table.case, table[column], color=colours)
        ax.set(xlabel=label)
        ax.grid(alpha=0.3, axis="x")
        ax.invert_yaxis()
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.suptitle("held-out day: rule bids (blue) against IPPO bids (orange)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common_arguments(parser, "stackelberg",
                     f"{QUICK_ITERATIONS} IPPO iterations, every case evaluated")
    parser.add_argument("--iterations", type=int, default=None,
                        help=f"IPPO iterations per leader (default {ITERATIONS})")


def main(args: argparse.Namespace) -> int:
    iterations = args.iterations if args.iterations is not None else (
        QUICK_ITERATIONS if args.quick else ITERATIONS)
    if iterations < 1 or (args.seed is not None and args.seed < 0):
        print("error: --iterations must be >= 1 and --seed >= 0", file=sys.stderr)
        return 2
    out = args.out or default_folder("stackelberg")
    if not empty_folder(out):
        return 2
    return run_and_print(
        out, lambda: run(out, iterations, args.seed, not args.no_progress),
        f"table: {out / 'table.md'}, {out / 'table.csv'}; plot: {out / 'cases.png'}")


if __name__ == "__main__":
    script("stackelberg", add_arguments, main, __doc__)
