"""Benchmark: one simulation across a two-node Ray cluster, and its scaling efficiency.

Issue 16 item 5 ("across nodes, a two-node `ray.cluster_utils.Cluster` run with the scaling
efficiency reported"). The job is the engine benchmark's (`engine.scenario_for`: households
on IEEE 123, a double auction per 100 households, the AC power flow every 15-minute step,
96 steps, every record written, shards and checkpoints by default, "auto"). Contenders, in
turns within each repeat:

- **local**: the local backend, one process (its records writer on a thread beside the
  stepping): the baseline;
- **two nodes**: the Ray backend joined to a `ray.cluster_utils.Cluster` of two nodes of
  `--cpus / 2` CPUs each. A cluster gets one actor host per CPU, spread over the nodes
  (each group of shards with its market operators in one host, the grid and the other
  services in one more); hosts that do not live on the driver's node encode their
  actors' records where they live and send them compressed. Each run takes the hosts the
  last one closed, as a user's next run does; the first, untimed, starts them.

Both nodes of the test cluster are processes of this machine and share its cores, so the
cluster has the same CPUs as the local run: the **efficiency** is local time / two-node
time, 1.0 when spreading the run over nodes costs nothing. (On two real machines of this
size the same efficiency x 2 would be the speed-up against one.) Each size's first
timed pair is also checked for equal records: every table of the two run folders, row by
row.

    cosim bench nodes [--sizes 10000 50000 100000] [--repeats 3] [--cpus 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from cosim.backends import LocalBackend, RayBackend
from cosim.records import RunFolder
from experiments.bench.common import add_output_arguments, machine_info, save
from experiments.bench.engine import STEPS, _ours, scenario_for

MARK, END = "<!-- bench:nodes -->", "<!-- /bench:nodes -->"
CONTENDERS = ("local", "nodes")


@dataclass
class Row:
    households: int
    shards: int
    seconds: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CONTENDERS})
    hosts_per_node: list[int] = field(default_factory=list)  # actor hosts on each node
    records_equal: bool | None = None
    differing: list[str] = field(default_factory=list)  # tables that differ

    def median(self, contender: str) -> float:
        return statistics.median(self.seconds[contender])

    def efficiency(self) -> float:
        """Median over repeats of local time / two-node time."""
        return statistics.median(a / b for a, b in zip(self.seconds["local"],
                                                        self.seconds["nodes"]))


@dataclass
class Result:
    machine: dict[str, str]
    repeats: int
    cpus: int
    rows: list[Row] = field(default_factory=list)


class _Placed(RayBackend):
    """The Ray backend, remembering on which node each of its hosts runs."""

    nodes_seen: dict[str, str] = {}

    def start(self, *args: object, **kwargs: object) -> None:
        super().start(*args, **kwargs)
        type(self).nodes_seen = dict(self.host_nodes)  # (cleared at shutdown)


def _stepping(scenario: object, backend: object, folder: Path) -> float:
    """Seconds of one run after its set-up (actor start), after a garbage collection (so
    that no run pays for the last one's garbage)."""
    gc.collect()
    return _ours(scenario, backend, folder)[1]


def differing_tables(a: Path, b: Path) -> list[str]:
    """The tables of run folder `a` that run folder `b` lacks or holds otherwise (every
    column, row by row)."""
    out = []
    for folder in sorted(p for p in a.iterdir() if p.is_dir()):
        one, other = RunFolder(a).read(folder.name), RunFolder(b).read(folder.name)
        # (pandas: NaN, a market's price where nothing traded, equals NaN)
        if other is None or not one.to_pandas().equals(other.to_pandas()):
            out.append(folder.name)
    return out


def run(sizes: list[int], repeats: int, cpus: int, address: str | None = None,
        steps: int = STEPS) -> Result:
    """`address`: a running cluster to join (default: start one of two nodes of `cpus` / 2
    CPUs each, and shut it down at the end)."""
    import ray
    from ray.cluster_utils import Cluster

    result = Result(machine_info("cpu"), repeats, cpus)
    cluster = None
    if address is None:
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": max(1, cpus // 2), "include_dashboard": False})
        cluster.add_node(num_cpus=max(1, cpus - cpus // 2))
        cluster.wait_for_nodes()
        address = cluster.address
    try:
        for n in sizes:
            scenario = scenario_for(n, steps=steps)
            row = Row(n, sum(s.name.startswith("shard") for s in scenario.actors))
            with tempfile.TemporaryDirectory() as tmp:
                folder = {c: Path(tmp) / c for c in CONTENDERS}
                # untimed: imports, caches and the cluster's hosts
                _stepping(scenario, LocalBackend(), folder["local"])
                _stepping(scenario, _Placed(address=address), folder["nodes"])
                for k in range(repeats):
                    row.seconds["local"].append(
                        _stepping(scenario, LocalBackend(), folder["local"]))
                    row.seconds["nodes"].append(
                        _stepping(scenario, _Placed(address=address), folder["nodes"]))
                    if k == 0:  # (outside the timing)
                        row.differing = differing_tables(folder["local"], folder["nodes"])
                        row.records_equal = not row.differing
                    print(f"{n:,} households: local {row.seconds['local'][-1]:.2f} s, two "
                          f"nodes {row.seconds['nodes'][-1]:.2f} s", flush=True)
            placed = list(_Placed.nodes_seen.values())
            row.hosts_per_node = sorted((placed.count(node) for node in set(placed)),
                                        reverse=True)
            result.rows.append(row)
    finally:
        if cluster is not None:
            ray.shutdown()
            cluster.shutdown()
    return result


def markdown(result: Result, args: argparse.Namespace) -> str:
    m = result.machine
    lines = [
        MARK,
        f"### One run on two nodes, cpu ({m['date']})",
        "",
        f"Machine: {m['cpu']}; torch {m['torch']} ({m['torch_threads']} threads). Command: "
        f"`cosim bench nodes --sizes {' '.join(str(r.households) for r in result.rows)} "
        f"--repeats {result.repeats} --cpus {result.cpus}"
        f"{'' if args.threads is None else f' --threads {args.threads}'}`. The engine "
        "benchmark's job (households on IEEE 123, 96 steps, every record written). **local**: "
        "the local backend; **two nodes**: the Ray backend on a `ray.cluster_utils.Cluster` "
        f"of two nodes of {max(1, result.cpus // 2)} CPU(s) each, on this machine (they share "
        "its cores). Seconds of stepping after set-up, medians over "
        f"{result.repeats} repeats in which the two take turns; **efficiency** = local time "
        "/ two-node time (the same CPUs: 1.0 when spreading over nodes costs nothing), the "
        "median of per-repeat ratios. **records equal**: every table of the first timed "
        "pair's run folders, row by row.",
        "",
        "| households | shards | hosts per node | local s | two nodes s | efficiency "
        "| records equal |",
        "|---:|---:|---|---:|---:|---:|---|",
    ]
    for row in result.rows:
        equal = "yes" if row.records_equal else f"no: {', '.join(row.differing)}"
        lines.append(
            f"| {row.households:,} | {row.shards} | "
            f"{', '.join(map(str, row.hosts_per_node))} | {row.median('local'):.2f} | "
            f"{row.median('nodes'):.2f} | {row.efficiency():.2f} | {equal} |")
    lines += ["", END]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 50000, 100000])
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per contender and size, taking turns; medians count")
    parser.add_argument("--cpus", type=int, default=2,
                        help="CPUs of the cluster, split over its two nodes")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of this process (default: torch's)")
    add_output_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = run(args.sizes, args.repeats, args.cpus)
    save("nodes", args, markdown(result, args), asdict(result), MARK, END)
    return 0
