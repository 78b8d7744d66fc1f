"""Benchmark: stepping households with every device, side by side with a naive peer.

Every household owns all six devices (battery, EV with V2G, heat pump in a 1R1C house,
curtailable PV, generator, flexible load with a 5 h window). Inputs are synthetic (random
loads, PV, EV availability and trips, outdoor temperature) and fixed per step. What is timed,
in milliseconds per step for all households:

- ours, devices: `Households.from_action` (raw actions to feasible setpoints of all six
  devices), `Households.step` and `Households.net_kw`, vectorised torch float64;
- ours, rule-based HEMS: the self-consumption rule deciding, then the same step;
- ours, learned policy: local observations, the policy bank (an independent 2 x 64 MLP per
  household), then the same step;
- ours, differentiable step: the devices step plus the backward pass of its cost to the
  actions (the inner loop of GradMAP);
- naive peer: the same device equations and algorithms (the heat pump's closed-form
  pre-heating included) written as a naive implementation would: one Python object per
  household, its devices' scalar equations in a loop over households (floats and `math`,
  no numpy). It is checked to give the same net draws and states as ours on the very
  steps timed.

Every contender times the same steps (inputs and actions prepared beforehand) from the same
start state; the contenders take turns within each repeat.

The MPC is timed per household plan (horizon `mpc_horizon`, HiGHS) for a smaller fleet:
one program per household (a per-household loop), blocks of 32 households with the same
devices in one program, and one program per device combination; "first" includes cvxpy's
compilation, "next" is the following step of a receding horizon (shifted forecast).

    cosim bench households [--households 10000] [--repeats 5] [--update-benchmarks MD]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from agents.devices.heat_pump import PREHEAT_H
from agents.households import (
    ACTIONS,
    FIELDS,
    SIGNED_ACTIONS,
    Households,
    HouseholdSeries,
    HouseholdState,
    HouseholdType,
    observe,
)
from agents.policies.bank import PolicyBank
from agents.policies.rule_based import self_consumption_setpoints
from cosim.commands.run import _positive as positive
from experiments.bench.common import add_output_arguments, machine_info, save

MARK = "<!-- bench:households -->"
END = "<!-- /bench:households -->"
DT_H = 0.25


@dataclass
class Config:
    households: int = 10_000
    steps: int = 8  # input steps timed, for every contender (the peer included)
    repeats: int = 5
    mpc_households: int = 128
    mpc_horizon: int = 96
    seed: int = 0


@dataclass
class Result:
    config: Config
    machine: dict[str, str]
    ms_per_step: dict[str, float] = field(default_factory=dict)  # medians
    ratios: dict[str, float] = field(default_factory=dict)  # peer / ours, median per repeat
    peer_max_diff: float = 0.0  # states after the timed steps (kWh, degrees C)
    peer_max_net_diff_kw: float = 0.0  # net draws of every timed step
    bank_mb: float = 0.0  # the policy bank's parameters
    mpc_ms_per_household: dict[str, dict[str, float]] = field(default_factory=dict)
    # 1, 5 and 15 min load averages before and after the run: these cores are shared, and
    # other work slows the contenders (interleaving spreads it over all of them)
    load_average: list[list[float]] = field(default_factory=list)


def fleet(n: int, seed: int) -> Households:
    rng = np.random.default_rng(seed)
    return Households.create(
        range(n), [HouseholdType.ACTIVE_PROSUMER] * n,
        battery=dict(capacity_kwh=rng.uniform(4, 15, n), power_kw=rng.uniform(2, 5, n),
                     degradation_cost=0.02),
        ev=dict(capacity_kwh=rng.uniform(30, 80, n), charge_kw=rng.choice([3.7, 7.4, 11], n),
                v2g=True, target_soc=0.8),
        heat_pump=dict(power_kw=rng.uniform(1, 4, n), resistance_k_per_kw=rng.uniform(3, 8, n),
                       capacitance_kwh_per_k=rng.uniform(3, 8, n), cop=3.0, cop_slope=0.05),
        pv=dict(inverter_kw=rng.uniform(3, 6, n), curtailable=True),
        generator=dict(max_kw=rng.uniform(0.5, 2, n), cost_linear=0.2, cost_quadratic=0.05),
        flexible_load=dict(share=0.1, window_h=5.0))


def series(n: int, steps: int, seed: int) -> HouseholdSeries:
    rng = np.random.default_rng(seed + 1)
    hours = 7 + np.arange(steps) * DT_H
    home = (rng.random((n, steps)) < 0.75).astype(float)
    return HouseholdSeries.build(
        rng.uniform(0.2, 3.0, (n, steps)), DT_H,
        pv_kw=rng.uniform(0, 5, (n, steps)) * (np.sin((hours - 6) / 12 * np.pi) > 0),
        ev_at_home=home, ev_trip_kwh=(1 - home) * rng.uniform(0, 4, (n, steps)),
        outdoor_c=5 + 3 * np.sin(hours / 24 * 2 * np.pi), start_hour=7.0,
        wholesale_price=0.15 + 0.1 * np.sin(hours / 24 * 2 * np.pi))


# -- the naive peer ------------------------------------------------------------------------

Span = tuple[int, int] | None  # (first, last) step ahead inside a band; None: no step is
Ahead = tuple[Span, Span]  # comfort, set-back


class NaiveHome:
    """One household as a naive implementation writes it: scalar state, scalar equations."""

    def __init__(self, hh: Households, k: int, dt_h: float) -> None:
        def f(t: torch.Tensor) -> float:
            return float(t[k])
        b, ev, hp, pv, g, fl = (hh.battery, hh.ev, hh.heat_pump, hh.pv, hh.generator,
                                hh.flexible_load)
        self.b = dict(cap=f(b.capacity_kwh), p=f(b.power_kw), ec=f(b.eta_charge),
                      ed=f(b.eta_discharge), lo=f(b.soc_min), hi=f(b.soc_max))
        self.ev = dict(cap=f(ev.capacity_kwh), pc=f(ev.charge_kw), pd=f(ev.discharge_kw),
                       ec=f(ev.eta_charge), ed=f(ev.eta_discharge), lo=f(ev.soc_min),
                       hi=f(ev.soc_max), target=f(ev.target_soc))
        self.hp = dict(p=f(hp.power_kw), r=f(hp.resistance_k_per_kw),
                       c=f(hp.capacitance_kwh_per_k), cop=f(hp.cop), slope=f(hp.cop_slope),
                       clo=f(hp.comfort_low_c), chi=f(hp.comfort_high_c),
                       slo=f(hp.setback_low_c), shi=f(hp.setback_high_c),
                       hours=hp.comfort_hours)
        self.pv = dict(inv=f(pv.inverter_kw), curt=f(pv.curtailable))
        self.gen = dict(lo=f(g.min_kw), hi=f(g.max_kw))
        self.flex = dict(share=f(fl.share), window=int(fl.window_steps(dt_h)[k]))
        self.e_b = self.e_ev = self.temp = 0.0
        self.backlog: list[float] = []

    def load(self, e_b: float, e_ev: float, temp: float, backlog: list[float]) -> None:
        """Set the state (kWh, kWh, degrees C, kWh per age of the flexible backlog)."""
        self.e_b, self.e_ev, self.temp, self.backlog = e_b, e_ev, temp, list(backlog)

    @staticmethod
    def _map(a: float, lo: float, hi: float, signed: bool) -> float:
        a = min(max(a, -1.0 if signed else 0.0), 1.0)
        share = (a + 1) / 2 if signed else a
        return lo + share * (hi - lo)

    def step(self, action: list[float], x: dict[str, float], dt_h: float,
             ahead: Ahead) -> float:
        """One step; returns the net draw (kW). `ahead`: the step's `preheat_ahead`."""
        b, ev, hp, fl = self.b, self.ev, self.hp, self.flex
        # battery
        e_min, e_max = b["lo"] * b["cap"], b["hi"] * b["cap"]
        lo = min(max(-b["p"], -(self.e_b - e_min) * b["ed"] / dt_h), 0.0)
        hi = max(min(b["p"], (e_max - self.e_b) / (b["ec"] * dt_h)), 0.0)
        p_b = self._map(action[0], lo, hi, True)
        self.e_b += (max(p_b, 0) * b["ec"] + min(p_b, 0) / b["ed"]) * dt_h
        # EV
        home = x["home"]
        e_min, e_max = ev["lo"] * ev["cap"], ev["hi"] * ev["cap"]
        lo = min(max(-ev["pd"], -(self.e_ev - e_min) * ev["ed"] / dt_h), 0.0)
        hi = max(min(ev["pc"], (e_max - self.e_ev) / (ev["ec"] * dt_h)), 0.0)
        later = min(x["left"], 1e9) - 1
        need = ev["target"] * ev["cap"] - self.e_ev - later * ev["ec"] * ev["pc"] * dt_h
        lo_t = need / (ev["ec"] * dt_h) if need > 0 else need * ev["ed"] / dt_h
        lo = min(max(lo, lo_t), hi)
        p_ev = self._map(action[1], lo * home, hi * home, True)
        e = self.e_ev + (max(p_ev, 0) * ev["ec"] + min(p_ev, 0) / ev["ed"]) * dt_h - x["trip"]
        self.e_ev = max(e, 0.0)
        # heat pump
        a = math.exp(-dt_h / (hp["r"] * hp["c"]))
        free = a * self.temp + (1 - a) * x["tout"]
        cop = max(hp["cop"] + hp["slope"] * (x["tout"] - 7.0), 1.0)
        gain = (1 - a) * hp["r"] * cop
        occupied = _occupied(hp["hours"], x["hour"] + dt_h)
        low, high = (hp["clo"], hp["chi"]) if occupied else (hp["slo"], hp["shi"])
        # pre-heat for a rising band, in the closed form ours uses (HeatPump.preheat_c): the
        # need (low_k - full) / a^k + full is monotone in k within each band, so only the
        # first or the last step ahead in that band can be the largest
        full = x["tout"] + hp["r"] * cop * hp["p"]  # where full power settles
        for span, low_k in ((ahead[0], hp["clo"]), (ahead[1], hp["slo"])):
            if span is not None:
                k = span[0] if low_k <= full else span[1]
                low = max(low, (low_k - full) / a ** k + full)
        hi = min(max((high - free) / gain, 0.0), hp["p"])
        lo = min(max((low - free) / gain, 0.0), hi)
        p_hp = self._map(action[2], lo, hi, False)
        self.temp = free + gain * p_hp
        # flexible load: oldest first
        pending = [fl["share"] * x["load"] * dt_h] + self.backlog
        due = sum(v for age, v in enumerate(pending) if age >= fl["window"])
        p_fl = self._map(action[3], due / dt_h, sum(pending) / dt_h, False)
        left = p_fl * dt_h
        for age in range(len(pending) - 1, -1, -1):
            take = min(left, pending[age])
            pending[age] -= take
            left -= take
        self.backlog = pending[:-1]
        # PV and generator
        avail = min(max(x["pv"], 0.0), self.pv["inv"])
        p_pv = self._map(action[4], avail * (1 - self.pv["curt"]), avail, False)
        p_g = self._map(action[5], self.gen["lo"], self.gen["hi"], False)
        return (1 - fl["share"]) * x["load"] + p_fl + p_b + p_ev + p_hp - p_pv - p_g


def _occupied(hours: tuple[tuple[float, float], ...], hour: float) -> bool:
    """True where local clock `hour` falls in a comfort window."""
    h = hour % 24
    return any((s <= h < e) if s < e else (h >= s or h < e) for s, e in hours)


def preheat_ahead(hours: tuple[tuple[float, float], ...], hour_end: float,
                  dt_h: float) -> Ahead:
    """The first and last of the next `PREHEAT_H` hours' steps (counted from 1) whose end
    falls in a comfort window, and in the set-back. The clock is shared by every household,
    so, as in ours, this is worked out once per step, not once per household."""
    inside: list[int] = []
    outside: list[int] = []
    for k in range(1, max(1, round(PREHEAT_H / dt_h)) + 1):
        (inside if _occupied(hours, hour_end + k * dt_h) else outside).append(k)
    return ((inside[0], inside[-1]) if inside else None,
            (outside[0], outside[-1]) if outside else None)


def naive_inputs(s: HouseholdSeries, t: int) -> list[dict[str, float]]:
    cols = {"load": s.load_kw[:, t], "pv": s.pv_kw[:, t], "home": s.ev_at_home[:, t],
            "trip": s.ev_trip_kwh[:, t], "left": s.ev_steps_left[:, t]}
    rows = [dict(zip(cols, v)) for v in zip(*(c.tolist() for c in cols.values()))]
    for r in rows:
        r["tout"], r["hour"] = float(s.outdoor_c[t]), float(s.hour[t])
    return rows


# -- the run -----------------------------------------------------------------------------

def _timed(fn: Callable[[int], None], steps: int) -> float:
    """ms per step of fn(0), ..., fn(steps - 1)."""
    start = time.perf_counter()
    for t in range(steps):
        fn(t)
    return (time.perf_counter() - start) / steps * 1e3


def run(cfg: Config, progress: bool = True) -> Result:
    """Time every contender on the same steps (inputs and random actions) from the same
    start state, taking turns within each repeat; the peer's states and net draws are
    compared with ours on exactly the steps timed."""
    n = cfg.households
    load_start = [round(x, 2) for x in os.getloadavg()]
    hh = fleet(n, cfg.seed)
    ser = series(n, cfg.steps, cfg.seed)
    inputs = [ser.at(t) for t in range(cfg.steps)]
    rng = torch.Generator().manual_seed(cfg.seed)
    actions = [torch.rand(n, len(ACTIONS), generator=rng, dtype=torch.float64) * 2 - 1
               for _ in range(cfg.steps)]
    bank = PolicyBank(n, len(FIELDS), len(ACTIONS), squash=SIGNED_ACTIONS, seed=cfg.seed)
    start = hh.initial_state(DT_H, battery_soc=0.5, ev_soc=0.6, indoor_c=19.0)
    box: dict[str, HouseholdState] = {}
    # what ours and the peer produce in the timed steps, for the agreement check: keeping a
    # reference to each step's result costs either side next to nothing
    net: dict[str, list] = {"devices": [], "peer": []}

    def devices(t: int) -> None:
        x = inputs[t]
        sp = hh.from_action(actions[t], box["s"], x, DT_H)
        net["devices"].append(hh.net_kw(sp, x))
        box["s"] = hh.step(box["s"], sp, x, DT_H)

    def rule(t: int) -> None:
        x = inputs[t]
        buy = ser.wholesale_price[t] + 0.1
        sp = self_consumption_setpoints(hh, box["s"], x, DT_H, buy, buy * 0.3)
        hh.net_kw(sp, x)
        box["s"] = hh.step(box["s"], sp, x, DT_H)

    def learned(t: int) -> None:
        x = inputs[t]
        with torch.no_grad():
            obs = observe(hh, box["s"], x, 0.25, 0.05, 1.0, DT_H)
            sp = hh.from_action(bank(obs), box["s"], x, DT_H)
            hh.net_kw(sp, x)
            box["s"] = hh.step(box["s"], sp, x, DT_H)

    def differentiable(t: int) -> None:
        x = inputs[t]
        a = actions[t].clone().requires_grad_()
        sp = hh.from_action(a, box["s"], x, DT_H)
        nxt = hh.step(box["s"], sp, x, DT_H)
        (hh.cost(sp, x, 0.25, 0.05, DT_H).sum() + nxt.battery_kwh.sum()).backward()
        box["s"] = HouseholdState(*(v.detach() for v in nxt))

    # the peer's inputs and actions as Python rows, made before timing as ours are
    homes = [NaiveHome(hh, k, DT_H) for k in range(n)]
    rows = [naive_inputs(ser, t) for t in range(cfg.steps)]
    acts = [a.tolist() for a in actions]
    hours = hh.heat_pump.comfort_hours
    first_state = list(zip(start.battery_kwh.tolist(), start.ev_kwh.tolist(),
                           start.indoor_c.tolist(), start.backlog_kwh.tolist()))

    def peer(t: int) -> None:
        ahead = preheat_ahead(hours, rows[t][0]["hour"] + DT_H, DT_H)
        net["peer"].append([home.step(a, x, DT_H, ahead)
                            for home, a, x in zip(homes, acts[t], rows[t])])

    def reset_peer() -> None:
        for home, state in zip(homes, first_state):
            home.load(*state)

    ours = {"devices": devices, "rule": rule, "learned": learned, "differentiable": differentiable}
    times: dict[str, list[float]] = {k: [] for k in [*ours, "peer"]}
    diff_state = diff_net = 0.0
    bar = tqdm(total=cfg.repeats * len(times), desc="bench households", disable=not progress)
    for _ in range(cfg.repeats):
        # each contender: one untimed step, then the timed steps from the start state
        for name, fn in ours.items():
            box["s"] = start
            fn(0)
            box["s"] = start
            net["devices"].clear()
            times[name].append(_timed(fn, cfg.steps))
            bar.update()
            if name == "devices":
                ref, ref_net = box["s"], torch.stack(net["devices"])
        reset_peer()
        peer(0)
        reset_peer()
        net["peer"].clear()
        times["peer"].append(_timed(peer, cfg.steps))
        bar.update()
        # the peer computes what we compute, on the rows just timed: every step's net draw
        # and the state after the last step
        theirs = HouseholdState(*(torch.tensor(v, dtype=torch.float64) for v in (
            [h.e_b for h in homes], [h.e_ev for h in homes], [h.temp for h in homes],
            [h.backlog for h in homes])))
        diff_state = max(diff_state, *(float((a - b).abs().max()) for a, b in zip(ref, theirs)))
        their_net = torch.tensor(net["peer"], dtype=torch.float64)
        diff_net = max(diff_net, float((ref_net - their_net).abs().max()))
    bar.close()

    result = Result(config=cfg, machine=machine_info("cpu"), peer_max_diff=diff_state,
                    peer_max_net_diff_kw=diff_net,
                    bank_mb=sum(p.numel() * p.element_size() for p in bank.parameters()) / 1e6)
    result.ms_per_step = {k: statistics.median(v) for k, v in times.items()}
    for name in ours:
        result.ratios[name] = statistics.median(p / o for p, o in zip(times["peer"], times[name]))
    result.mpc_ms_per_household = mpc_timings(cfg)
    result.load_average = [load_start, [round(x, 2) for x in os.getloadavg()]]
    return result


def mpc_timings(cfg: Config) -> dict[str, dict[str, float]]:
    """ms per household plan: the first plan (compiling) and the next step's."""
    from agents.policies.mpc import MPC, MPCConfig

    n, horizon = cfg.mpc_households, cfg.mpc_horizon
    # MAHTM's four types, each with an EV, a heat pump and flexible load: four device mixes
    hh = Households.create(
        range(n), np.arange(n) % 4,
        battery=dict(capacity_kwh=8.0, power_kw=3.0, degradation_cost=0.01),
        ev=dict(capacity_kwh=40.0, charge_kw=7.0, v2g=True), heat_pump=dict(power_kw=2.5),
        flexible_load=dict(share=0.1, window_h=3.0))
    ser = series(n, horizon + 1, cfg.seed)
    buy = ser.wholesale_price.numpy() + 0.1
    sell = ser.wholesale_price.numpy() * 0.4
    out = {}
    for label, block in (("per household", 1), ("blocks of 4 (default)", 4), ("blocks of 32", 32),
                         ("one per device mix", 0)):
        mpc = MPC(hh, DT_H, MPCConfig(horizon=horizon, households_per_problem=block))
        state = hh.initial_state(DT_H)
        start = time.perf_counter()
        first = mpc.act(state, ser, buy, sell)
        cold = time.perf_counter() - start
        state = hh.step(state, first, ser.at(0), DT_H)
        start = time.perf_counter()
        mpc.act(state, ser.window(1, horizon), buy[1:], sell[1:])
        warm = time.perf_counter() - start
        out[label] = {"first": cold / n * 1e3, "next": warm / n * 1e3,
                      "programs": float(len(mpc.blocks()))}
    return out


def markdown(result: Result) -> str:
    cfg, m, ms, x = result.config, result.machine, result.ms_per_step, result.ratios
    n = cfg.households
    rows = [
        ("ours, devices (from_action + step)", "devices"),
        ("ours, rule-based HEMS + devices", "rule"),
        ("ours, observation + policy bank + devices", "learned"),
        ("ours, devices step + backward to the actions", "differentiable"),
    ]
    per_step = ms["devices"]
    load = " before, ".join(", ".join(f"{v:.2f}" for v in la) for la in result.load_average)
    load = f"{load} after (1, 5, 15 min)" if result.load_average else "not recorded"
    lines = [
        MARK,
        "## Households and devices (issue: households and devices)",
        "",
        "What is timed: one step (15 min) of households that each own all six devices "
        "(battery, EV with V2G and a departure target, heat pump in a 1R1C house with a "
        "comfort band, curtailable PV, generator, flexible load with a 5 h window), random "
        "raw actions and synthetic inputs. **ours** is the vectorised torch float64 code of "
        "`agents.households` (raw actions mapped to feasible setpoints of every device, the "
        "state stepped, the net draw); the other rows add the decision: the "
        "self-consumption rule, or local observations and the policy bank (an independent "
        "2 x 64 MLP per household), or the backward pass of the step's cost to the "
        "actions. The **naive peer** is the same device equations and algorithms written as "
        "a naive implementation would: one Python object per household with scalar state, "
        "stepped in a loop over households (floats and `math`); its heat pumps pre-heat with "
        "the closed form ours uses (only the first or last step ahead in each band can bind; "
        "which steps those are depends on the shared clock, so both work it out once per "
        "step), not by looking at every step of the next 12 h. Every contender times the "
        "same steps (inputs and random actions, prepared before timing) from the same start "
        "state, after one untimed step. On exactly the rows timed the peer reproduces our "
        f"net draws to {result.peer_max_net_diff_kw:.1e} kW and our states after the last "
        f"step to {result.peer_max_diff:.1e} (kWh, degrees C).",
        "",
        "Target from the issue: stepping 10,000 households with all devices takes "
        "milliseconds per step.",
        "",
        f"### Households, cpu ({m['date']})",
        "",
        f"Machine: {m['cpu']} (shared with other work; load average {load}); torch "
        f"{m['torch']} ({m['torch_threads']} threads); Python {m['python']}. Command: "
        f"`cosim bench households --households {n} --repeats {cfg.repeats}`. Medians over "
        f"{cfg.repeats} repeats of the same {cfg.steps} steps for every contender, which "
        "take turns within each repeat; ratio = the peer's time / ours, median of "
        "per-repeat ratios.",
        "",
        "| contender | households | ms per step | household-steps/s | x naive peer |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, key in rows:
        lines.append(f"| {label} | {n:,} | {ms[key]:.1f} | {n / ms[key] * 1e3:,.0f} | "
                     f"{x[key]:,.0f} |")
    lines.append(f"| naive peer: Python loop over households | {n:,} | {ms['peer']:,.0f} | "
                 f"{n / ms['peer'] * 1e3:,.0f} | 1 |")
    lines += [
        "",
        f"**Target {'met' if per_step < 100 else 'missed'}**: {n:,} households with all "
        f"devices step in {per_step:.1f} ms ({x['devices']:,.0f}x the naive peer). The "
        f"policy-bank row reads every household's own weights each step: {n:,} independent "
        f"MLPs hold {result.bank_mb:,.0f} MB of float64, "
        f"{result.bank_mb / ms['learned']:.1f} GB/s at the time measured (float32 weights "
        "would halve the bytes).",
        "",
        f"MPC (HiGHS via cvxpy), ms per household plan, {cfg.mpc_households} households (the "
        "four MAHTM types, each with an EV, a heat pump and flexible load: four device "
        f"mixes), horizon {cfg.mpc_horizon} steps; first = including cvxpy's compilation, "
        "next = the following receding-horizon step (each program re-solved with new data):",
        "",
        "| programs | solved per plan | first | next |",
        "|---|---:|---:|---:|",
    ]
    for label, t in result.mpc_ms_per_household.items():
        lines.append(f"| {label} | {t['programs']:.0f} | {t['first']:.1f} | {t['next']:.1f} |")
    lines.append(END)
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Config()
    parser.add_argument("--households", type=positive, default=d.households)
    parser.add_argument("--steps", type=positive, default=d.steps,
                        help="input steps timed, the same for every contender")
    parser.add_argument("--repeats", type=positive, default=d.repeats)
    parser.add_argument("--mpc-households", type=positive, default=d.mpc_households)
    parser.add_argument("--mpc-horizon", type=positive, default=d.mpc_horizon)
    parser.add_argument("--seed", type=int, default=d.seed)
    add_output_arguments(parser)


def main(args: argparse.Namespace) -> int:
    cfg = Config(households=args.households, steps=args.steps, repeats=args.repeats,
                 mpc_households=args.mpc_households,
                 mpc_horizon=args.mpc_horizon, seed=args.seed)
    result = run(cfg)
    save("households", args, markdown(result), asdict(result), MARK, END)
    return 0
