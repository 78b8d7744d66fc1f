"""Benchmark: small runs for RL, one scenario and N copies of it stepped as one batch.

The scenario is MAHTM's 6-house microgrid (experiments/configs/mahtm_microgrid.toml: one
day, hourly, the microgrid and distributor pools, the AC power flow on the European LV
feeder's 2,721 nodes), every household `external` and driven with random actions (the
same ones for every contender), records off, `Simulation.step` returning observations,
costs, markets and each copy's grid, as an RL environment reads them.

Contenders, timed over one 24-step episode after an untimed reset, taking turns within
each repeat (who goes first alternates from repeat to repeat):
- **copies**: `Simulation.from_config(..., copies=N)`, the N copies stacked as households
  in one shard, a market per copy, the power flow's batch as copies;
- **separate**: N simulations of the scenario, each stepped in turn (what a user without
  copies would write; a vector env of N environments in one process).

Rates are copy-steps per second (N x 24 / seconds); ratios are medians of per-repeat
ratios. Accuracy on the timed rows: the largest difference of any household's bill
between the two. Targets from issue 16 item 3 (2 cores, records off): one copy at 500 steps/s at
least; N = 32 at 5,000 copy-steps/s at least. Item 4's fixed cost per shard-step (under
1 ms) is read off one copy: its shard's own phases for six households.

    cosim bench copies [--copies 1 8 32 128] [--separate-max 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cosim.simulation import Simulation
from experiments.bench.common import add_output_arguments, machine_info, save

MARK = "<!-- bench:copies -->"
END = "<!-- /bench:copies -->"
CONFIG = Path(__file__).parents[1] / "configs" / "mahtm_microgrid.toml"
TARGET_ONE, TARGET_32 = 500.0, 5000.0
TARGET_SHARD_MS = 1.0  # issue 16 item 4: a shard-step's fixed cost
SHARD_PHASES = ("observe", "decide", "dispatch", "settle")  # the shard's own phases


@dataclass
class Row:
    copies: int
    households: int
    copies_per_s: float
    separate_per_s: float | None
    ratio: float | None  # separate's time / copies'
    bill_diff: float | None  # largest |bill| difference on the timed rows, currency
    phases_ms: dict[str, float] = field(default_factory=dict)  # copies, per step


@dataclass
class Result:
    machine: dict[str, str]
    command: str
    repeats: int
    rows: list[Row] = field(default_factory=list)


def _episode(sims: list[Simulation], actions: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """Seconds to step `sims` (each in turn) through `actions` ([steps] of [N x houses,
    actions], cut among the sims), and the bills [steps, N x houses]."""
    for sim in sims:
        sim.reset()
        sim.wall.clear()  # the phases of the steps timed, not of the reset
    cut = np.cumsum([0] + [sim.n_households for sim in sims])
    bills = []
    start = time.perf_counter()
    for step in actions:
        bills.append(np.concatenate([
            sim.step(step[a:b]).costs.bill for sim, a, b in zip(sims, cut, cut[1:])]))
    return time.perf_counter() - start, np.array(bills)


def run(sizes: list[int], separate_max: int, repeats: int, command: str) -> Result:
    overrides = {"households.policy": "external"}
    result = Result(machine_info("cpu"), command, repeats)
    contenders = {}
    for n in sizes:
        together = Simulation.from_config(CONFIG, record=False, overrides=overrides, copies=n)
        alone = ([Simulation.from_config(CONFIG, record=False, overrides=overrides)
                  for _ in range(n)] if n <= separate_max else None)
        contenders[n] = (together, alone)
    rng = np.random.default_rng(0)
    times: dict[int, list[tuple[float, float | None]]] = {n: [] for n in sizes}
    diffs: dict[int, float] = {}
    for repeat in range(repeats):
        for n, (together, alone) in contenders.items():
            houses = together.n_households
            steps = together.total
            actions = [np.column_stack([rng.uniform(-1, 1, (houses, 2)),
                                        rng.uniform(0, 1, (houses, 4))])
                       for _ in range(steps)]
            # who goes first alternates: the first of a pair ran 10-20% slower on the 2-core
            # machines (one copy against one separate simulation, the same thing, read 0.8x)
            t_alone = bills_alone = None
            if alone is not None and repeat % 2:
                t_alone, bills_alone = _episode(alone, actions)
            t_copies, bills = _episode([together], actions)
            if alone is not None and not repeat % 2:
                t_alone, bills_alone = _episode(alone, actions)
            if alone is not None:
                diffs[n] = max(diffs.get(n, 0.0), float(np.abs(bills - bills_alone).max()))
            times[n].append((t_copies, t_alone))
    for n, (together, alone) in contenders.items():
        steps, houses = together.total, together.n_households
        copies_s = float(np.median([t for t, _ in times[n]]))
        separate = [a for _, a in times[n] if a is not None]
        phases = {k: 1e3 * v / steps for k, v in together.wall.items()
                  if k not in ("start_actors", "total")}
        result.rows.append(Row(
            n, houses, n * steps / copies_s,
            n * steps / float(np.median(separate)) if separate else None,
            float(np.median([a / t for t, a in times[n]])) if separate else None,
            diffs.get(n), phases))
        print(result.rows[-1], flush=True)
        for sim in [together, *(alone or [])]:
            sim.close()
    return result


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def markdown(result: Result) -> str:
    m = result.machine
    rows = {r.copies: r for r in result.rows}
    one, many = rows.get(1), rows.get(32)
    lines = [
        MARK,
        f"### Small runs and copies, cpu ({m['date']})",
        "",
        f"Machine: {m['cpu']}; Python {m['python']}; torch {m['torch']} "
        f"({m['torch_threads']} threads). Command: `{result.command}`. MAHTM's 6-house "
        "microgrid (mahtm_microgrid.toml, European LV feeder, the pools, AC power flow), "
        "every household external on random actions, records off, 24 steps per episode, "
        f"medians over {result.repeats} repeats in which the contenders take turns. "
        "**copies**: `Simulation.from_config(copies=N)`; **separate**: N simulations "
        "stepped in turn; x separate = separate's time over copies' (median of per-repeat "
        "ratios); bill diff: the largest difference of a household's bill between them on "
        "the timed rows. Phases: the copies' engine time per step by phase.",
        "",
        "| copies | households | copies copy-steps/s | separate copy-steps/s | x separate | "
        "bill diff | phases ms per step (copies) |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result.rows:
        phases = ", ".join(f"{k} {v:.2f}" for k, v in r.phases_ms.items())
        lines.append(f"| {r.copies} | {r.households} | {r.copies_per_s:,.0f} | "
                     f"{_f(r.separate_per_s, ',.0f')} | {_f(r.ratio, '.1f')} | "
                     f"{_f(r.bill_diff, '.1e')} | {phases} |")
    lines.append("")
    if one is not None:
        lines.append(f"One copy: {one.copies_per_s:,.0f} steps/s (target {TARGET_ONE:,.0f}: "
                     f"{'met' if one.copies_per_s >= TARGET_ONE else 'missed'}).")
        shard = sum(one.phases_ms.get(p, 0.0) for p in SHARD_PHASES)
        lines.append(f"One copy's shard phases ({', '.join(SHARD_PHASES)}: its one shard's "
                     f"fixed cost per step, six households): {shard:.2f} ms (target under "
                     f"{TARGET_SHARD_MS:g} ms: {'met' if shard < TARGET_SHARD_MS else 'missed'}).")
    if many is not None:
        lines.append(f"32 copies: {many.copies_per_s:,.0f} copy-steps/s (target "
                     f"{TARGET_32:,.0f}: "
                     f"{'met' if many.copies_per_s >= TARGET_32 else 'missed'}).")
    lines.append(END)
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 8, 32, 128],
                        help="copies per contender")
    parser.add_argument("--separate-max", type=int, default=32,
                        help="time N separate simulations up to this N")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (the compiled power flow uses every core)")
    add_output_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if min(args.copies) < 1 or args.repeats < 1:
        print("cosim bench copies: --copies and --repeats must be at least 1")
        return 2
    torch.set_num_threads(args.threads)
    command = ("cosim bench copies --copies " + " ".join(map(str, args.copies))
               + f" --separate-max {args.separate_max} --repeats {args.repeats}"
               + f" --threads {args.threads}")
    result = run(args.copies, args.separate_max, args.repeats, command)
    save("copies", args, markdown(result), asdict(result), MARK, END)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
