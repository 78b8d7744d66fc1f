"""The GradMAP benchmark: its time-to-target rule on hand-made tables, and one tiny run."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from cosim.cli import build_parser
from experiments.bench import gradmap as bench
from experiments.bench.common import machine_info


def _table(cost, violation, wall):
    return pd.DataFrame({"cost": cost, "mean_violation_pu": violation, "wall_s": wall})


def test_time_to_target_on_hand_made_tables():
    """Best feasible cost 100 (ssl's last row; gradmap's 90 violates), so the cost limit
    is 102: gradmap first meets both at its third row (t = 3), ssl at its fourth (t = 8)."""
    tables = {
        "gradmap": _table([120, 110, 101, 90], [0, 0, 0, 1e-3], [1, 2, 3, 4]),
        "ssl": _table([130, 120, 110, 100], [5e-4, 5e-5, 0, 0], [2, 4, 6, 8]),
    }
    best, times = bench.time_to_target(tables)
    assert best == 100 and times == {"gradmap": 3.0, "ssl": 8.0}
    # a trailing window of 2: gradmap's smoothed costs 120, 115, 105.5, 95.5 - the last
    # averages in a violation of 5e-4, infeasible; ssl's smoothed 105 (violation 0) is the
    # best feasible -> limit 107.1
    best, times = bench.time_to_target(tables, window=2)
    assert best == pytest.approx(105.0)
    assert times["gradmap"] == 3.0  # (110 + 101) / 2 = 105.5 <= 107.1, violation 0
    assert times["ssl"] == 8.0
    # nobody within the violation target: the best is the lowest cost, nobody reaches it
    best, times = bench.time_to_target({"a": _table([5, 4], [1, 1], [1, 2])})
    assert best == 4 and times == {"a": None}


def test_speedup_is_a_lower_bound_when_ssl_does_not_reach_the_target():
    case = bench.Case(agents=10, feeder="x", budget_s=60)
    case.runs = [bench.Run("gradmap", time_to_target_s=10.0, train_s=60.0),
                 bench.Run("ssl", time_to_target_s=None, train_s=60.0)]
    text, value, exact = bench.speedup(case)
    assert value == 6.0 and not exact and text.startswith(">= 6.0x")
    case.runs[1].time_to_target_s = 30.0
    assert bench.speedup(case) == ("3.0x", 3.0, True)


def test_a_tiny_run_on_the_20_agent_case(ray_cluster):
    """Every method trains (at least 2 iterations), every final bank and no control are
    evaluated in rollouts and in the co-simulation, and the table has a row for each;
    IPPO's curve is its bank scored after each iteration like the others'."""
    assert build_parser().parse_args(["bench", "gradmap", "--quick"]).func is bench.main
    methods = ("gradmap", "ssl", "ippo")
    case = bench.measure(20, budget_s=0.1, methods=methods, quick=True, days=2, train_days=1,
                         log=lambda _: None)
    assert case.agents == 20 and tuple(r.method for r in case.runs) == methods
    for ev in [case.idle] + [r.evaluation for r in case.runs]:
        assert all(math.isfinite(x) for x in (ev.train_cost, ev.held_cost,
                                              ev.held_violation_pu, ev.cosim_cost))
        assert ev.cosim_violations >= 0 and ev.cosim_not_converged == 0
    for run in case.runs:
        assert run.iterations == 2 and len(run.curve) == 2 and run.train_s > 0
        assert run.time_to_target_s is None or run.time_to_target_s <= run.train_s
    assert math.isfinite(case.best_cost)
    result = bench.Result(machine_info("cpu"), "test", 1, 0, 2, 1, total_s=1.0, cases=[case])
    table = bench.markdown(result)
    assert table.startswith(bench.MARK) and table.rstrip().endswith(bench.END)
    assert "| 20 | gradmap |" in table and "| 20 | no control |" in table
    assert "| 20 | ippo |" in table and "x IPPO" in table
    ippo = case.runs[2]
    assert ippo.curve[1]["wall_s"] > ippo.curve[0]["wall_s"] > 0  # cumulative
    assert all(math.isfinite(c["cost"]) for c in ippo.curve)
    assert "**Verdict**" in table
