"""Benchmark: `cosim sweep` scaling, 1 to 8 variants, locally and on a two-node cluster.

Issue 16 (item 6, "done when": the sweep scaling, 1 to 8 variants, local and a 2-node
cluster). Every variant is the same scenario under another `run.name`: the same work each
(other seeds can make a scenario's prices invalid, which would time a failure). For each
count n the whole sweep is timed, wall clock from submission to the last row, on:

- **local**: `--backend local`, the variants one after another in this process (the
  baseline a user without Ray has);
- **ray**: a local Ray instance with `--cpus` CPUs, one task per variant;
- **cluster**: a `ray.cluster_utils.Cluster` of two nodes of `--cpus / 2` CPUs each (on
  this machine both nodes share its cores: it measures the multi-node machinery, not more
  hardware).

Contenders alternate within each repeat (local, ray, cluster for one n, then the next n);
the table holds medians over repeats. Scaling efficiency = (local time of one variant x n)
/ (time of the n-variant sweep x CPUs used), 1.0 being perfect use of every CPU.

    cosim bench sweep [--config experiments/configs/lv_55.toml] [--counts 1 2 4 8]
                      [--repeats 1] [--cpus 2] [--update-benchmarks BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cosim.commands.sweep import label, run_all
from experiments.bench.common import add_output_arguments, machine_info, save

MARK, END = "<!-- bench:sweep -->", "<!-- /bench:sweep -->"
ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "experiments" / "configs" / "lv_55.toml"
BACKENDS = ("local", "ray", "cluster")


@dataclass
class Result:
    machine: dict[str, str]
    config: str
    counts: list[int]
    repeats: int
    cpus: int
    seconds: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    failed: int = 0  # variants that did not complete, over every sweep

    def median(self, backend: str, n: int) -> float:
        return statistics.median(self.seconds[backend][n])


def _sweep(config: Path, n: int, backend: str, address: str | None, cpus: int) -> tuple[
        float, int]:
    """(wall seconds, variants not complete) of one sweep of n variants."""
    grid = [{"run.name": f"variant{k}"} for k in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        folders = [Path(tmp) / label(k, v) for k, v in enumerate(grid)]
        start = time.perf_counter()
        rows = run_all(config, grid, folders, "local" if backend == "local" else "ray",
                       address=address, num_cpus=cpus, progress=False)
        seconds = time.perf_counter() - start
    return seconds, sum(r["status"] != "complete" for r in rows)


def run(config: Path, counts: list[int], repeats: int, cpus: int) -> Result:
    import ray
    from ray.cluster_utils import Cluster

    result = Result(machine_info("cpu"), str(config.relative_to(ROOT)
                                             if config.is_relative_to(ROOT) else config),
                    counts, repeats, cpus,
                    {b: {n: [] for n in counts} for b in BACKENDS})
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": max(1, cpus // 2), "include_dashboard": False})
    cluster.add_node(num_cpus=max(1, cpus - cpus // 2))
    try:
        _sweep(config, 1, "local", None, cpus)  # warm the imports and caches
        for _ in range(repeats):
            for n in counts:
                for backend in BACKENDS:
                    # a fresh Ray for each sweep, as the command line starts one: its start-up
                    # is part of what a user waits for
                    address = cluster.address if backend == "cluster" else None
                    seconds, failed = _sweep(config, n, backend, address, cpus)
                    ray.shutdown()
                    result.seconds[backend][n].append(seconds)
                    result.failed += failed
                    print(f"{n} variants, {backend}: {seconds:.1f} s", flush=True)
    finally:
        cluster.shutdown()
    return result


def markdown(result: Result) -> str:
    m = result.machine
    one = result.median("local", result.counts[0]) / result.counts[0]
    lines = [
        MARK,
        "## Scenario sweeps: `cosim sweep` from 1 to 8 variants (issue 16)",
        "",
        f"Machine: {m['cpu']}; {m['date']}. Command: `cosim bench sweep --counts "
        f"{' '.join(map(str, result.counts))} --repeats {result.repeats} --cpus "
        f"{result.cpus}`. Each variant is `{result.config}` under its own `run.name`, records "
        "on, one Ray task (1 CPU) each. local: one after another in one process; ray: a "
        f"local Ray instance of {result.cpus} CPUs; cluster: a two-node "
        "`ray.cluster_utils.Cluster` on the same machine (its nodes share these cores). "
        "Times are wall clock for the whole sweep including Ray's start-up, medians of "
        f"{result.repeats} repeats with the contenders alternating; efficiency = n x (local "
        f"time per variant, {one:.2f} s) / (sweep time x {result.cpus} CPUs). Variants that "
        f"did not complete: {result.failed}.",
        "",
        "| variants | local s | ray s | cluster s | ray efficiency | cluster efficiency |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n in result.counts:
        t = {b: result.median(b, n) for b in BACKENDS}
        eff = {b: n * one / (t[b] * result.cpus) for b in ("ray", "cluster")}
        lines.append(f"| {n} | {t['local']:.1f} | {t['ray']:.1f} | {t['cluster']:.1f} | "
                     f"{eff['ray']:.2f} | {eff['cluster']:.2f} |")
    lines += ["", END]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=2,
                        help="CPUs of the local Ray instance and of the cluster (split over "
                             "its two nodes)")
    add_output_arguments(parser)


def main(args: argparse.Namespace) -> int:
    result = run(args.config, args.counts, args.repeats, args.cpus)
    save("sweep", args, markdown(result), asdict(result), MARK, END)
    return 0
