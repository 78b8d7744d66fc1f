"""The two-node benchmark runs the engine on the session's two-node cluster, and its
records check compares what it claims to."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from cosim.backends import LocalBackend
from cosim.simulation import Simulation
from experiments.bench import nodes
from experiments.bench.engine import scenario_for


def test_a_small_run_on_two_nodes_gives_the_local_records(ray_cluster) -> None:
    result = nodes.run([40], repeats=1, cpus=2, address=ray_cluster.address, steps=6)
    (row,) = result.rows
    assert row.records_equal and row.differing == []
    assert len(row.seconds["local"]) == len(row.seconds["nodes"]) == 1
    assert all(s > 0 for c in nodes.CONTENDERS for s in row.seconds[c])
    # one shard host and one for the services (where: tests/cosim/test_ray.py)
    assert row.shards == 1 and sum(row.hosts_per_node) == 2
    table = nodes.markdown(result, argparse.Namespace(threads=None))
    assert table.startswith(nodes.MARK) and "| 40 | 1 |" in table and "| yes |" in table


def test_differing_tables_names_a_table_that_differs(tmp_path: Path) -> None:
    scenario = scenario_for(40, steps=4)
    for name in ("a", "b"):
        Simulation(scenario, LocalBackend(), tmp_path / name).run(progress=False)
    assert nodes.differing_tables(tmp_path / "a", tmp_path / "b") == []
    # a run of another seed: the households' draws (and with them most tables) differ
    Simulation(scenario_for(40, seed=1, steps=4), LocalBackend(), tmp_path / "c").run(
        progress=False)
    assert "households" in nodes.differing_tables(tmp_path / "a", tmp_path / "c")
    shutil.rmtree(tmp_path / "b" / "lines")
    assert nodes.differing_tables(tmp_path / "a", tmp_path / "b") == ["lines"]
