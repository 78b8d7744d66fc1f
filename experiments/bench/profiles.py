"""Benchmark: the household profile generator, side by side with its peers.

Every repeat times each contender in turn, so machine noise hits all of them alike; the
table reports medians of rates and of per-repeat ratios. What is timed, in home-days/s:
- ours, full: `cosim data generate` end to end with the default config (load, PV, EVs,
  heat demand, weather, prices, carbon; Parquet files written) for homes x days;
- ours, load only: the trained load model's `sample` (Markov chains + one GAN pass per
  cluster + power limit) for the same home-days;
- real-profile bootstrap: each home-day a random one of the European LV feeder's real days
  (already at 15 minutes), the cheapest way to get load with no model at all;
- richardsonpy: the UK stochastic demand model the load model learns from, one-minute
  simulation (as it runs) of a few home-days per repeat.

    cosim bench profiles [--homes 100] [--days 100] [--repeats 3] [--update-benchmarks MD]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from agents.profiles.config import GenerateConfig
from agents.profiles.generate import generate
from agents.profiles.loadmodel import LoadModel
from agents.profiles.realdata import eulv_days
from agents.profiles.richardson import simulate_home
from experiments.bench.common import add_output_arguments, machine_info, save

MARK = "<!-- bench:profiles:cpu -->"
END = "<!-- /bench:profiles:cpu -->"


@dataclass
class Config:
    homes: int = 100
    days: int = 100  # homes x days = 10,000 home-days by default
    repeats: int = 3
    richardson_homes: int = 2  # richardsonpy homes per repeat
    richardson_days: int = 7  # days per richardsonpy home
    seed: int = 0


@dataclass
class Result:
    config: Config
    machine: dict[str, str]
    rates: dict[str, float] = field(default_factory=dict)  # home-days/s, medians
    ratios: dict[str, float] = field(default_factory=dict)  # medians of per-repeat ratios
    seconds: dict[str, float] = field(default_factory=dict)  # median wall time per contender


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(cfg: Config, progress: bool = True) -> Result:
    home_days = cfg.homes * cfg.days
    gen_cfg = GenerateConfig(homes=cfg.homes, days=cfg.days, seed=cfg.seed)
    model = LoadModel.load()
    weekend = np.array([d % 7 >= 5 for d in range(cfg.days)])
    real = eulv_days().kw
    rng = np.random.default_rng(cfg.seed)
    tmp = tempfile.TemporaryDirectory(prefix="bench-profiles-")
    out = Path(tmp.name)
    rich_days = cfg.richardson_homes * cfg.richardson_days

    def bootstrap() -> None:
        real[rng.integers(len(real), size=(cfg.homes, cfg.days))].copy()

    def richardson() -> None:
        for h in range(cfg.richardson_homes):
            simulate_home(cfg.seed, h, cfg.richardson_days)

    contenders = {
        "ours_full": (lambda: generate(gen_cfg, out, progress=False), home_days),
        "ours_load": (lambda: model.sample(cfg.homes, weekend, cfg.seed), home_days),
        "bootstrap": (bootstrap, home_days),
        "richardsonpy": (richardson, rich_days),
    }
    generate(GenerateConfig(homes=2, days=2), out, progress=False)  # warm-up: imports, caches
    times: dict[str, list[float]] = {k: [] for k in contenders}
    bar = tqdm(total=cfg.repeats * len(contenders), desc="bench profiles", disable=not progress)
    with tmp:
        for _ in range(cfg.repeats):
            for name, (fn, _) in contenders.items():
                times[name].append(_timed(fn))
                bar.update()
    bar.close()

    rates = {k: [contenders[k][1] / t for t in v] for k, v in times.items()}
    result = Result(config=cfg, machine=machine_info("cpu"))
    result.rates = {k: statistics.median(v) for k, v in rates.items()}
    result.seconds = {k: statistics.median(v) for k, v in times.items()}
    for ours in ("ours_full", "ours_load"):
        for peer in ("richardsonpy", "bootstrap"):
            result.ratios[f"{ours}_vs_{peer}"] = statistics.median(
                a / b for a, b in zip(rates[ours], rates[peer]))
    return result


def markdown(result: Result) -> str:
    cfg, m, r, x = result.config, result.machine, result.rates, result.ratios
    home_days = cfg.homes * cfg.days
    rows = [
        ("ours, full data set (Parquet written)", "ours_full", home_days),
        ("ours, load model only", "ours_load", home_days),
        ("real-profile bootstrap (load only)", "bootstrap", home_days),
        ("richardsonpy (load only, 1-minute)", "richardsonpy",
         cfg.richardson_homes * cfg.richardson_days),
    ]
    lines = [
        MARK,
        "## Profile generator (issue: household profile generator)",
        "",
        "What is timed: generating household home-days at 15-minute resolution. **ours, full** "
        "is `cosim data generate` end to end with the default config (trained load model, "
        "pvlib PV, EV trips, heat demand, weather, price and carbon series, all Parquet "
        "files written); **ours, load only** is the trained load model alone (Markov chains, "
        "one GAN pass per cluster, shape redraws and power limit); the **real-profile "
        "bootstrap** draws a real European LV day for each home-day (no model: the floor for "
        "any load source); "
        "**richardsonpy** is the UK stochastic demand model the load model learns from, run "
        "as it runs (one-minute simulation), on a few home-days per repeat.",
        "",
        "Target from the issue: 10,000 home-days in seconds, not minutes.",
        "",
        f"### Profile generator, cpu ({m['date']})",
        "",
        f"Machine: {m['cpu']}; torch {m['torch']} ({m['torch_threads']} threads); Python "
        f"{m['python']}. Command: `cosim bench profiles --homes {cfg.homes} --days {cfg.days} "
        f"--repeats {cfg.repeats}`.",
        "",
        "| contender | home-days timed | median s | home-days/s |",
        "|---|---:|---:|---:|",
    ]
    for label, key, n in rows:
        lines.append(f"| {label} | {n:,} | {result.seconds[key]:.3f} | {r[key]:,.0f} |")
    per_10k = 10_000 / r["ours_full"]
    lines += [
        "",
        f"**Target {'met' if per_10k < 10 else 'missed'}**: 10,000 home-days of the full data "
        f"set take {per_10k:.1f} s at the measured rate. "
        f"Throughput ratios (median of per-repeat ratios): full data set "
        f"{x['ours_full_vs_richardsonpy']:,.0f}x richardsonpy, load model "
        f"{x['ours_load_vs_richardsonpy']:,.0f}x richardsonpy; against the bootstrap, which "
        f"only indexes an array, the load model runs at {x['ours_load_vs_bootstrap']:.2f}x "
        f"and the full data set at {x['ours_full_vs_bootstrap']:.3f}x.",
        END,
    ]
    return "\n".join(lines) + "\n"



def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Config()
    parser.add_argument("--homes", type=int, default=d.homes)
    parser.add_argument("--days", type=int, default=d.days)
    parser.add_argument("--repeats", type=int, default=d.repeats)
    parser.add_argument("--richardson-homes", type=int, default=d.richardson_homes)
    parser.add_argument("--richardson-days", type=int, default=d.richardson_days)
    parser.add_argument("--seed", type=int, default=d.seed)
    add_output_arguments(parser)


def main(args: argparse.Namespace) -> int:
    cfg = Config(homes=args.homes, days=args.days, repeats=args.repeats,
                 richardson_homes=args.richardson_homes, richardson_days=args.richardson_days,
                 seed=args.seed)
    result = run(cfg)
    save("profiles", args, markdown(result), asdict(result), MARK, END)
    return 0
