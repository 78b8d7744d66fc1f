"""MAHTM's Table 2 (Cuadrado et al., ICLR 2023 workshop) on our three-layer market.

    cosim reproduce mahtm [--quick] [--out DIR] [--seed N] [--iterations N] [--batch N]
                          [--budget-s S]
    python -m experiments.reproduce.mahtm --quick

The paper's three house sets (agents.profiles.mahtm.HOUSES: training 6, evaluation 6,
testing 10 houses; family / business / teenagers profiles) each form one microgrid of the
shipped MAHTM scenario (experiments/configs/mahtm_microgrid.toml): hourly steps over one
day, batteries of the house table's capacity charging and discharging at up to 0.8 of it
per hour between 10% and 90%, efficiency 1, starting empty (at 10%, the paper's
`battery_random_soc_0 = False`), MAHTM's pools at the microgrid and the distributor, grid
energy at its price plus its carbon cost (markets.mahtm), and the AC power flow.

Rows (methods), each scored on all three sets:

- optimum: the true optimum of our environment, one linear program (cvxpy, HiGHS) over
  every battery of the microgrid with perfect foresight, minimising the households' summed
  bill (the summed reward the shared policy maximises). Summed over a pool's members, the
  bill of a step is max(b N, s N) + spread min(D, O) (N the net import, D and O the
  members' needs and offers, b and s the upstream buy and sell prices, spread the pool's
  buy minus sell price), and the spread is the fee except where the pool's mid price lies
  within fee/2 of b or s, where it is between fee/2 and fee. With spread = fee the sum is
  (b - s - fee) max(N, 0) + s N + fee D, convex (b - s >= fee is checked); the plan is
  replayed in the environment, and the same program with fee/2 is a lower bound on every
  policy's bill, so `optimum_gap` (replayed bill minus that bound, currency per household)
  certifies how far from optimal it can be.
- cvxpy (paper): the paper's CVXPY baseline as its public code formulates it (mahtm.md's
  caveat): per house, no P2P market, exports charged at the feed-in price instead of paid,
  discharge bounded by the capacity instead of the rate; replayed in our environment
  (which clips to the real rate).
- a2c, pg, mappo-shared: one policy shared by every household (parameter sharing), trained
  with RLlib on the training set at the paper's hyperparameters (`Hyperparameters`;
  experiments.rl.train: a2c and pg are RLlib's PPO learner as one pass over one minibatch,
  pg without a critic; mappo-shared, a centralised critic over the global state, stands in
  for COMA), then deployed deterministically on every set.
- rule: the self-consumption rule (charge from surplus PV, discharge to cover load), for
  context.

Columns: train reward (mean return per household over the day on the training set, the
environment's reward: minus the bill), price and emission scores (MAHTM's: per household,
with battery minus without, summed over the day, averaged over households; lower is
better) on the training, evaluation and testing sets, and train time (s). "Without" is
the same houses with their batteries removed and nothing controlled (all PV delivered),
so a learned policy's PV curtailment counts in its scores (experiments.mahtm_scores.scores
on a bank scenario instead keeps the policy on the bare houses). The paper's
numbers sit beside ours where the paper has a row (mahtm.md, Table 2); its units are
normalised, ours are currency and kgCO2 at kW-sized houses, so compare signs, ordering and
rough size, not digits.

What differs from the paper: continuous actions (a Gaussian over the battery power, and
the PV curtailment our households also choose) instead of 40 discrete ones; one learning
rate for actor and critic (RLlib's PPO learner has one optimiser), the actor's; RLlib
standardises advantages over each batch; our profile curves are our own (the paper gives
words, agents.profiles.mahtm); layer 2 and 3 prices follow markets.mahtm's formula, not
learned agents (as in the paper's code); training length is `training_steps` updates unless
`--iterations` or `--budget-s` cut it (the table says how many ran). A2C and PG sample
each update's `batch` days as copies of the training day stepped together
(`Simulation.from_config(copies=)`), the paper's parallel roll-outs; MAPPO-shared's
centralised critic sees one scenario's state, so it samples them one after another.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import cvxpy as cp
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from agents.households import ACTIONS, FIELDS
from agents.households.composition import Households
from agents.policies.bank import PolicyBank
from agents.profiles.mahtm import BATTERY, HOUSES
from cosim.config import ScenarioConfig, load_config
from cosim.envs import RewardConfig
from cosim.scenario import ProfileData
from cosim.simulation import Simulation
from experiments.mahtm_scores import without_storage
from experiments.reproduce import default_folder, run_and_print, script

if TYPE_CHECKING:
    from experiments.rl.train import TrainConfig

ROOT = Path(__file__).parents[2]
SCENARIO = ROOT / "experiments" / "configs" / "mahtm_microgrid.toml"
GENERATOR = ROOT / "experiments" / "configs" / "profiles" / "mahtm.toml"
SETS = ("training", "evaluation", "testing")
LEARNED = ("a2c", "pg", "mappo-shared")
METHODS = ("optimum", "cvxpy (paper)", *LEARNED, "rule")
# the paper's row each of ours stands beside (Table 2; mahtm.md)
PAPER_ROW = {"cvxpy (paper)": "CVXPY (optimal)", "a2c": "MAHTM", "mappo-shared": "COMA"}
PAPER = {  # Table 2: average over households; train time in seconds
    "CVXPY (optimal)": dict(train_reward=-0.915, train_price_score=-0.103,
                            train_emission_score=-0.223, train_time_s=0.9,
                            test_price_score=-0.0889, test_emission_score=-0.19),
    "MAHTM": dict(train_reward=-0.993, train_price_score=-0.097,
                  train_emission_score=-0.1522, train_time_s=600.0,
                  test_price_score=-0.064, test_emission_score=-0.097),
    "COMA": dict(train_reward=-1.3, train_price_score=0.35, train_emission_score=0.35,
                 train_time_s=7200.0, test_price_score=0.0625,
                 test_emission_score=0.0625),
}
COLUMNS = ("train_reward", "train_price_score", "train_emission_score", "train_time_s",
           "eval_price_score", "eval_emission_score", "test_price_score",
           "test_emission_score")
PREFIX = {"training": "train", "evaluation": "eval", "testing": "test"}
BATTERY_SOC = FIELDS.index("battery_soc")
PV_ACTION = ACTIONS.index("pv")
BATTERY_ACTION = ACTIONS.index("battery")


@dataclass(frozen=True)
class Hyperparameters:
    """The paper's first-layer hyperparameters (mahtm.md), and how much of them to run."""

    pg_lr: float = 0.00381
    a2c_actor_lr: float = 0.00245
    a2c_critic_lr: float = 0.001  # reported only: RLlib's PPO learner has one optimiser
    hidden: int = 128  # units of the one hidden layer (actor and critic)
    gamma: float = 1.0
    batch: int = 32  # whole episodes (days) per update: the paper's parallel roll-outs
    rollout_steps: int = 24  # one day of hourly steps
    training_steps: int = 2000  # updates
    discrete_actions: int = 40  # reported only: our actions are continuous
    mappo_lr: float = 0.00245  # COMA's settings are not in the paper: the A2C actor's

    def train_config(self, algo: str, seed: int) -> TrainConfig:
        """experiments.rl.train's TrainConfig of a learned row."""
        from experiments.rl.train import TrainConfig

        lr = {"a2c": self.a2c_actor_lr, "pg": self.pg_lr, "mappo-shared": self.mappo_lr}[algo]
        # the paper's parallel roll-outs of the one training day, as copies of it stepped
        # together; the centralised critic sees one scenario, so mappo-shared steps them
        # one after another
        copies = 1 if algo == "mappo-shared" else self.batch
        return TrainConfig(algo=algo, iterations=self.training_steps, episodes=self.batch,
                           lr=lr, gamma=self.gamma, hidden=(self.hidden,), seed=seed,
                           checkpoint_every=max(1, self.training_steps), copies=copies)


QUICK = Hyperparameters(batch=1, rollout_steps=12, training_steps=2)


# -- the scenarios -------------------------------------------------------------------------

def scenario(house_set: str, dataset: Path, seed: int, steps: int) -> ScenarioConfig:
    """The shipped MAHTM microgrid with the houses of `house_set` (one microgrid, one
    shard), starting empty, on the profile data set `dataset` (`profile_data`)."""
    houses = HOUSES[house_set]
    n = len(houses["peak_load"])
    homes = [{"profile": k, "pv_kwp": float(pv), "battery_kwh": float(cap),
              "battery_kw": BATTERY["battery_p_charge_max"] * float(cap)}
             for k, (pv, cap) in enumerate(zip(houses["pv_peak"], houses["battery_capacity"]))]
    if BATTERY["battery_p_charge_max"] != BATTERY["battery_p_discharge_max"]:
        raise ValueError("one power rating per battery: MAHTM's rates must be equal")
    return load_config(SCENARIO, {
        "run.name": f"mahtm-{house_set}", "run.seed": seed, "run.steps": steps,
        "households.count": n, "households.shard_size": n, "households.homes": homes,
        "households.battery.efficiency": BATTERY["battery_efficiency"],
        "households.battery.soc_min": BATTERY["battery_soc_min"],
        "households.battery.soc_max": BATTERY["battery_soc_max"],
        # battery_random_soc_0 = False: every battery starts at its minimum
        "households.battery.soc_initial": BATTERY["battery_soc_min"],
        "markets.households_per_market": n,
        "profiles.generator": None, "profiles.dataset": str(Path(dataset).resolve())})


def profile_data(house_set: str, folder: Path, seed: int) -> Path:
    """Generate the MAHTM profiles of `house_set` (agents.profiles.mahtm) around the
    scenario's day into `folder`; reused when already there."""
    from agents.profiles import generate
    from agents.profiles import load_config as generator_config

    if (folder / "manifest.json").exists():
        return folder
    base = load_config(SCENARIO)
    day = base.run.start.astimezone(dt.UTC).date()
    mahtm = tomllib.loads(GENERATOR.read_text())["mahtm"] | {"houses": house_set}
    cfg = generator_config(GENERATOR, seed=seed, homes=len(HOUSES[house_set]["peak_load"]),
                           start=day - dt.timedelta(days=1), days=3, dt_s=base.run.dt_s,
                           mahtm=mahtm)
    generate(cfg, folder, config_file=GENERATOR, progress=False)
    return folder


# -- one day of a policy -------------------------------------------------------------------

@dataclass(frozen=True)
class Day:
    """Per household, summed over the day: bill (currency), emissions of its grid imports
    (kgCO2) and reward (the environment's: cosim.envs.RewardConfig's default prices, whose
    network terms are zero)."""

    bill: np.ndarray
    emissions_kg: np.ndarray
    reward: np.ndarray


Actor = Callable[[int, np.ndarray], np.ndarray]  # (step, observations) -> raw actions


def replay(config: ScenarioConfig, profiles: ProfileData, act: Actor | None) -> Day:
    """One day of `config`: every household on `act` (the `external` policy), or on its
    own policy when `act` is None. A step whose power flow fails is an error."""
    r = RewardConfig()
    sim = Simulation.from_config(config if act is None else config.everyone("external"),
                                 record=False, profiles=profiles)
    try:
        obs = sim.reset()
        n = sim.n_households
        bill, emissions, reward = np.zeros(n), np.zeros(n), np.zeros(n)
        for t in range(sim.total):
            result = sim.step(None if act is None else act(t, obs))
            if not result.grid.converged:
                raise RuntimeError(f"{config.run.name}, step {t}: the power flow did not "
                                   "converge")
            c = result.costs
            bill += c.bill
            emissions += c.emissions_kg
            reward -= (c.bill + c.operating_cost + r.discomfort_cost * c.discomfort_kh
                       + r.shortfall_cost * c.ev_shortfall_kwh
                       + r.carbon_price * c.emissions_kg)
            obs = result.observations
    finally:
        sim.close()
    return Day(bill, emissions, reward)


def bank_actor(bank: PolicyBank) -> Actor:
    """The shared policy's deterministic actions, as `cosim run` deploys a bank."""
    def act(t: int, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return bank(torch.as_tensor(obs)).numpy()
    return act


def shared_bank(path: Path, households: int) -> PolicyBank:
    """The shared policy of a trained bank, copied to `households` households (the test
    set has more houses than the training set). Refuses a bank whose policies differ."""
    bank = PolicyBank.load(path, fields=FIELDS, actions=ACTIONS)
    for w in [*bank.weights, *bank.biases]:
        if not torch.equal(w, w[:1].expand_as(w)):
            raise ValueError(f"{path}: the households' policies differ; not a shared policy")
    return bank.select([0] * households)


# -- the optimum and the paper's CVXPY baseline ---------------------------------------------

@dataclass(frozen=True)
class Inputs:
    """What a plan needs, per household [n, T] or [n] and per step [T]: load and PV
    available (kW), battery (kWh, kW, efficiencies, wear currency/kWh), upstream buy and
    sell prices (currency/kWh) and the pool's fee."""

    load_kw: np.ndarray
    pv_kw: np.ndarray
    e0: np.ndarray
    e_min: np.ndarray
    e_max: np.ndarray
    power_kw: np.ndarray
    eta_c: np.ndarray
    eta_d: np.ndarray
    wear: np.ndarray
    capacity: np.ndarray
    buy: np.ndarray
    sell: np.ndarray
    fee: float
    dt_h: float


def inputs(config: ScenarioConfig, profiles: ProfileData) -> Inputs:
    """The inputs exactly as the simulation holds them: its one shard's households and
    the distributor's grid prices (markets.mahtm.grid_prices)."""
    from markets.mahtm import grid_prices

    if config.markets.mahtm.gain != 1:
        raise ValueError("the optimum needs MAHTM pools without smoothing (gain = 1)")
    sim = Simulation.from_config(config, record=False, profiles=profiles)
    try:
        shards = [s for s in sim.scenario.actors if s.name in sim.shards]
        feed = next(s for s in sim.scenario.actors if s.name == "feed").kwargs
        n_markets = len(np.unique(sim.households["market"]))
    finally:
        sim.close()
    if len(shards) != 1 or n_markets != 1:
        raise ValueError("the optimum is written for one microgrid in one shard")
    homes = shards[0].kwargs["homes"]
    hh = Households.create(homes.household, **homes.devices)
    b, dt_h = hh.battery, config.run.dt_s / 3600.0
    steps = config.run.steps
    pv = hh.pv.available(torch.as_tensor(homes.pv_kw[:, :steps]).T).T.numpy()
    e_min, e_max = (x.numpy() for x in b.energy_bounds())
    prices = np.array([grid_prices(float(feed["wholesale_price"][t]),
                                   float(feed["carbon_intensity"][t]),
                                   config.markets.mahtm.carbon_price,
                                   config.tariff.export_price) for t in range(steps)])
    return Inputs(load_kw=homes.load_kw[:, :steps], pv_kw=pv,
                  e0=homes.initial["battery_soc"] * b.capacity_kwh.numpy(),
                  e_min=e_min, e_max=e_max, power_kw=b.power_kw.numpy(),
                  eta_c=b.eta_charge.numpy(), eta_d=b.eta_discharge.numpy(),
                  wear=b.degradation_cost.numpy(), capacity=b.capacity_kwh.numpy(),
                  buy=prices[:, 0], sell=prices[:, 1], fee=config.markets.mahtm.fee, dt_h=dt_h)


@dataclass(frozen=True)
class Plan:
    """Battery power per household and step (kW, charging positive), the program's
    objective (currency, all households) and its solve time (s)."""

    battery_kw: np.ndarray
    objective: float
    solve_s: float


def optimum(x: Inputs, spread: float | None = None) -> Plan:
    """The community's cheapest day (module docstring): the pool's spread taken as `fee`
    (default; the plan) or as `spread` (fee / 2: the lower bound)."""
    spread = x.fee if spread is None else spread
    if (x.buy - x.sell < x.fee).any():
        t = int(np.argmax(x.buy - x.sell < x.fee))
        raise ValueError(f"step {t}: buy {x.buy[t]} minus sell {x.sell[t]} price is below "
                         f"the pool's fee {x.fee}; the program would not be exact")
    n, T = x.load_kw.shape
    bc, bd = cp.Variable((n, T), nonneg=True), cp.Variable((n, T), nonneg=True)
    e = cp.Variable((n, T + 1))
    need = cp.Variable((n, T), nonneg=True)  # each household's import, max(net, 0)
    short = cp.Variable(T, nonneg=True)  # the microgrid's net import, max(N, 0)
    net = (x.load_kw - x.pv_kw + bc - bd) * x.dt_h  # kWh
    cons = [e[:, 0] == x.e0,
            e[:, 1:] == e[:, :-1] + x.dt_h * (cp.multiply(x.eta_c[:, None], bc)
                                              - cp.multiply(1 / x.eta_d[:, None], bd)),
            e[:, 1:] >= x.e_min[:, None], e[:, 1:] <= x.e_max[:, None],
            bc <= x.power_kw[:, None], bd <= x.power_kw[:, None],
            need >= net, short >= cp.sum(net, axis=0)]
    cost = (cp.sum(cp.multiply(x.buy - x.sell - spread, short))
            + cp.sum(cp.multiply(x.sell, cp.sum(net, axis=0))) + spread * cp.sum(need)
            + x.dt_h * cp.sum(cp.multiply(x.wear[:, None], bc + bd)))
    value, solve_s = _solve(cp.Problem(cp.Minimize(cost), cons), "the optimum's program")
    return Plan(bc.value - bd.value, value, solve_s)


def paper_cvxpy(x: Inputs) -> Plan:
    """The paper's CVXPY baseline (mahtm.md, seed-papers.md section 6), per house on our
    data: b0 = soc_min, -capacity <= a <= min(charge, discharge rate), b' = b + eta a,
    c = load - pv + eta a, minimise sum max(c buy, 0) + max(-c sell, 0) (exports charged,
    no P2P), as in its public code."""
    n, T = x.load_kw.shape
    a, b = cp.Variable((n, T)), cp.Variable((n, T + 1))
    eta = x.eta_c[:, None]  # the paper's one efficiency (ours is 1 both ways)
    c = (x.load_kw - x.pv_kw) * x.dt_h + cp.multiply(eta, a)
    cons = [b[:, 0] == x.e_min, b >= x.e_min[:, None], b <= x.e_max[:, None],
            b[:, 1:] == b[:, :-1] + cp.multiply(eta, a),
            a >= -x.capacity[:, None], a <= (x.power_kw * x.dt_h)[:, None]]
    cost = cp.sum(cp.pos(cp.multiply(c, x.buy[None]))) \
        + cp.sum(cp.pos(-cp.multiply(c, x.sell[None])))
    value, solve_s = _solve(cp.Problem(cp.Minimize(cost), cons),
                            "the paper's CVXPY program")
    return Plan(a.value / x.dt_h, value, solve_s)


def _solve(problem: cp.Problem, what: str) -> tuple[float, float]:
    """(optimal value, solve seconds) of `problem` with HiGHS; anything but optimal raises,
    naming `what`."""
    start = time.perf_counter()
    problem.solve(solver="HIGHS")
    solve_s = time.perf_counter() - start
    if problem.status != cp.OPTIMAL:
        raise RuntimeError(f"{what}: solver returned {problem.status}")
    return float(problem.value), solve_s


def plan_actor(plan: Plan, x: Inputs) -> Actor:
    """Raw actions that make the battery follow `plan` (the device maps a raw action
    affinely onto its feasible interval from the observed state of charge, agents.devices),
    with all PV delivered."""
    n = len(x.capacity)

    def act(t: int, obs: np.ndarray) -> np.ndarray:
        e = obs[:, BATTERY_SOC] * x.capacity
        lo = np.minimum(np.maximum(-x.power_kw, -(e - x.e_min) * x.eta_d / x.dt_h), 0.0)
        hi = np.maximum(np.minimum(x.power_kw, (x.e_max - e) / (x.eta_c * x.dt_h)), 0.0)
        width = hi - lo
        share = np.divide(plan.battery_kw[:, t] - lo, width, out=np.full(n, 0.5),
                          where=width > 1e-12)
        out = np.zeros((n, len(ACTIONS)))
        out[:, BATTERY_ACTION] = np.clip(2 * share - 1, -1, 1)
        out[:, PV_ACTION] = 1.0
        return out
    return act


# -- the table ----------------------------------------------------------------------------

@dataclass
class Result:
    """The measured table (one row per method, COLUMNS and the rest), the paper's, the
    run folder and the per-set facts the tests check."""

    table: pd.DataFrame
    out: Path
    days: dict[tuple[str, str], Day]  # (method, set) -> its day
    baseline: dict[str, Day]  # set -> the day without batteries
    bounds: dict[str, float]  # set -> the lower bound on the summed bill (currency)
    banks: dict[str, Path]  # learned method -> its trained bank
    configs: dict[str, ScenarioConfig]  # set -> its scenario
    profiles: dict[str, ProfileData]  # set -> its profiles


def scores(day: Day, bare: Day) -> tuple[float, float]:
    """(price score, emission score): MAHTM's, averaged over households."""
    return (float((day.bill - bare.bill).mean()),
            float((day.emissions_kg - bare.emissions_kg).mean()))


def run(out: Path, quick: bool = False, seed: int | None = None, progress: bool = True,
        hyper: Hyperparameters | None = None, budget_s: float | None = None) -> Result:
    """The whole reproduction into `out` (module docstring): table.md, table.csv,
    learning_curves.png, the house sets' profile data and each learned method's training
    folder. Ray is started here (2 CPUs) unless it already runs."""
    import ray

    hyper = hyper or (QUICK if quick else Hyperparameters())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed = load_config(SCENARIO).run.seed if seed is None else seed
    configs, profiles = {}, {}
    from cosim.profiles import load_profiles
    for s in SETS:
        data = profile_data(s, out / "profiles" / s, seed)
        configs[s] = scenario(s, data, seed, hyper.rollout_steps)
        profiles[s] = load_profiles(configs[s])
    bare = {s: replay(without_storage(configs[s]).everyone("rule"), profiles[s], None)
            for s in SETS}
    days: dict[tuple[str, str], Day] = {}
    times: dict[str, float] = {}
    gaps: dict[str, float] = {}
    bounds: dict[str, float] = {}
    iterations: dict[str, int] = {}
    for s in tqdm(SETS, desc="optimum and cvxpy (paper)", disable=not progress):
        x = inputs(configs[s], profiles[s])
        plan, paper = optimum(x), paper_cvxpy(x)
        bounds[s] = optimum(x, spread=x.fee / 2).objective
        days["optimum", s] = replay(configs[s], profiles[s], plan_actor(plan, x))
        days["cvxpy (paper)", s] = replay(configs[s], profiles[s], plan_actor(paper, x))
        days["rule", s] = replay(configs[s].everyone("rule"), profiles[s], None)
        gaps[s] = (days["optimum", s].bill.sum() - bounds[s]) / len(x.capacity)
        if s == "training":
            times["optimum"], times["cvxpy (paper)"] = plan.solve_s, paper.solve_s
    times["rule"] = 0.0

    from experiments.rl.train import train
    started = not ray.is_initialized()
    if started:
        # a new local instance, never a cluster someone else started on this machine
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    banks: dict[str, Path] = {}
    curves = []
    try:
        for algo in LEARNED:
            start = time.perf_counter()
            outcome = train(configs["training"], hyper.train_config(algo, seed),
                            out / algo, profiles=profiles["training"], progress=progress,
                            budget_s=budget_s)
            times[algo] = time.perf_counter() - start
            iterations[algo] = int(outcome.training.iteration.iloc[-1])
            banks[algo] = outcome.bank
            curves.append(outcome.training)
            for s in SETS:
                bank = shared_bank(outcome.bank, len(HOUSES[s]["peak_load"]))
                days[algo, s] = replay(configs[s], profiles[s], bank_actor(bank))
    finally:
        if started:
            ray.shutdown()

    rows = []
    for m in METHODS:
        row = {"method": m, "train_reward": float(days[m, "training"].reward.mean())}
        for s in SETS:
            price, emission = scores(days[m, s], bare[s])
            row[f"{PREFIX[s]}_price_score"], row[f"{PREFIX[s]}_emission_score"] = \
                price, emission
        row["train_time_s"] = times[m]
        row["iterations"] = iterations.get(m, np.nan)
        row["optimum_gap"] = gaps["training"] if m == "optimum" else np.nan
        row["paper_row"] = PAPER_ROW.get(m, "")
        for c in COLUMNS:
            paper = PAPER.get(PAPER_ROW.get(m, ""), {})
            row[f"paper_{c}"] = paper.get(c, np.nan)
        rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(out / "table.csv", index=False)
    settings = asdict(hyper) | {"seed": seed, "quick": quick, "budget_s": budget_s}
    (out / "table.md").write_text(markdown(table, settings, gaps) + "\n")
    plot(curves, days, bare["training"], out / "learning_curves.png")
    return Result(table, out, days, bare, bounds, banks, configs, profiles)


def _cell(value: float, paper: float, digits: int = 3) -> str:
    mine = "—" if np.isnan(value) else f"{value:.{digits}f}"
    return mine if np.isnan(paper) else f"{mine} ({paper:g})"


def markdown(table: pd.DataFrame, settings: dict, gaps: dict[str, float]) -> str:
    """The table in Markdown, each of our numbers followed by the paper's in brackets
    where the paper has that row and column."""
    heads = ["method (paper's row)", *COLUMNS, "iterations"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join([":---"] + ["---:"] * (
        len(heads) - 1)) + "|"]
    for _, r in table.iterrows():
        name = r.method + (f" ({r.paper_row})" if r.paper_row else "")
        cells = [_cell(r[c], r[f"paper_{c}"], 1 if c == "train_time_s" else 3)
                 for c in COLUMNS]
        its = "" if np.isnan(r.iterations) else f"{int(r.iterations)}"
        lines.append("| " + " | ".join([name, *cells, its]) + " |")
    gap = ", ".join(f"{s} {g:.2g}" for s, g in gaps.items())
    lines += ["", "Ours (paper's in brackets; Table 2, normalised units). Scores: with "
              "battery minus without, per household over the day, currency and kgCO2; lower "
              "is better. Train reward: the day's return per household on the training set. "
              f"Optimum: certified within {gap} currency per household of the true optimum "
              "(replayed bill minus a lower bound).",
              "", "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items())]
    return "\n".join(lines)


def plot(curves: list[pd.DataFrame], days: dict[tuple[str, str], Day], bare: Day,
         path: Path) -> None:
    """Each learned method's training curve (return per household), with the optimum's,
    the rule's and the bare houses' day on the training set as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for c in curves:
        ax.plot(c.iteration, c.return_per_household, marker="o", ms=2, label=c.algo.iloc[0])
    for m, style in (("optimum", "--"), ("rule", ":")):
        ax.axhline(days[m, "training"].reward.mean(), ls=style, color="k", label=m)
    # without batteries nothing is controlled, so the reward is minus the bill
    ax.axhline(-bare.bill.mean(), ls="-.", color="grey", label="no battery")
    ax.set(xlabel="update", ylabel="return per household (currency/day)",
           title="MAHTM training set: sampled return per update")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- command line -------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="a reduced run for CI: 12 steps, 2 updates of 1 episode each, "
                             "every part exercised")
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder (default runs/reproduce/mahtm-<time>)")
    parser.add_argument("--seed", type=int, default=None,
                        help="scenario, profile and training seed (default: the scenario's)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="updates per learned method (default: the paper's 2000; 2 with "
                             "--quick)")
    parser.add_argument("--batch", type=int, default=None,
                        help="episodes (days) per update (default: the paper's 32; 1 with "
                             "--quick)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="stop each learned method's training before it would pass "
                             "this many seconds")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    for flag, value in (("--iterations", args.iterations), ("--batch", args.batch),
                        ("--budget-s", args.budget_s)):
        if value is not None and value <= 0:
            print(f"error: {flag} {value}: must be positive", file=sys.stderr)
            return 2
    if args.seed is not None and args.seed < 0:
        print(f"error: --seed {args.seed}: must be >= 0", file=sys.stderr)
        return 2
    hyper = QUICK if args.quick else Hyperparameters()
    hyper = replace(hyper, **{k: v for k, v in (("training_steps", args.iterations),
                                                ("batch", args.batch)) if v is not None})
    out = args.out or default_folder("mahtm")
    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                               and not (out / "profiles").is_dir())):
        print(f"error: --out {out}: exists and is not a reproduction's folder",
              file=sys.stderr)
        return 2
    return run_and_print(
        out, lambda: run(out, args.quick, args.seed, not args.no_progress, hyper,
                         args.budget_s), f"table: {out / 'table.md'}, {out / 'table.csv'}")


if __name__ == "__main__":
    script("mahtm", add_arguments, main, __doc__)
