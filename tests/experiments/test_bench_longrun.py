"""The long-run benchmark: its memory arithmetic on hand-made samples, and one tiny run
(12 steps of 20 households on synthetic profiles) through its command-line entry point.

The runs parse with the benchmark's own arguments and call its `main`, as `cosim bench
longrun` does (cosim.commands.bench), without importing every other benchmark for the full
parser: that keeps the file well under 20 s."""

from __future__ import annotations

import argparse
import json
import os

import pytest

from cosim.commands.bench import BENCHMARKS
from experiments.bench import longrun as bench


def main(argv: list[str]) -> int:
    """`cosim bench longrun ARGV`: the benchmark's arguments, then its main."""
    parser = argparse.ArgumentParser(prog="cosim bench longrun")
    bench.add_arguments(parser)
    return bench.main(parser.parse_args(argv))


def test_cosim_bench_lists_longrun():
    assert "longrun" in dict(BENCHMARKS)


def _samples(rss):
    return [bench.Sample(step=(k + 1) * 100, wall_s=float(k), rss_mb=r, children_mb=0.0)
            for k, r in enumerate(rss)]


def test_slope_is_fitted_over_the_second_half_only():
    """A first half that grows fast (warming up) and a flat second half: slope ~0, flat; a
    second half growing by 2 MB per 100 steps: 20 MB per 1,000 steps, not flat."""
    warm_then_flat = _samples([100, 200, 300, 400, 500, 500, 500, 500, 500, 500])
    slope = bench.slope_per_1000(warm_then_flat, total_steps=1000)
    assert slope == pytest.approx(0.0, abs=1e-9)
    assert bench.is_flat(slope, dt_s=900, steps=1000) is True
    leaking = _samples([500 + 2 * k for k in range(10)])
    slope = bench.slope_per_1000(leaking, total_steps=1000)
    assert slope == pytest.approx(20.0)
    assert bench.is_flat(slope, dt_s=900, steps=1000) is False
    # child processes (Ray's) count: a leak in a worker is a leak
    leaking_child = [bench.Sample(s.step, s.wall_s, 500.0, s.rss_mb) for s in leaking]
    assert bench.slope_per_1000(leaking_child, 1000) == pytest.approx(20.0)
    # too few samples in the second half, or too short a run: no verdict
    assert bench.slope_per_1000(_samples([1, 2, 3]), total_steps=300) is None
    assert bench.is_flat(0.0, dt_s=900, steps=bench.MIN_JUDGED_STEPS - 1) is None


def test_memory_from_proc_agrees_with_psutil():
    psutil = pytest.importorskip("psutil")
    own, children, source = bench.memory_mb()
    assert source == "psutil" and own > 0 and children >= 0
    from_proc = bench._proc_rss_mb("self")
    assert from_proc == pytest.approx(psutil.Process().memory_info().rss / 2**20, rel=0.1)
    assert os.getpid() not in bench._proc_children(os.getpid())


def test_a_tiny_longrun_reports_time_memory_and_a_plot(tmp_path):
    out = tmp_path / "run"
    bench_md = tmp_path / "BENCHMARKS.md"
    bench_md.write_text("# Benchmarks\n\nhand-written notes stay\n")
    code = main(["--days", "0.125", "--households", "20",
                 "--sample-every", "2", "--profiles", "synthetic", "--no-progress",
                 "--out", str(out), "--update-benchmarks", str(bench_md)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "complete"
    assert results["steps"] == results["steps_done"] == 12 and results["households"] == 20
    # memory sampled every 2 steps (the warm-up, half of this short run, is step 6)
    assert [s["step"] for s in results["samples"]] == [2, 4, 6, 8, 10, 12]
    assert results["warmup_steps"] == 6
    assert all(s["rss_mb"] > 0 and s["children_mb"] >= 0 and s["arrow_mb"] >= 0
               for s in results["samples"])
    csv = (out / "memory.csv").read_text().splitlines()
    assert csv[0] == "step,wall_s,rss_mb,children_mb,arrow_mb" and len(csv) == 1 + 6
    # the high-water mark is this process's alone; the other figures add its children
    # (a shared Ray instance's workers, in a test session)
    assert results["rss_start_mb"] > 0
    assert max(s["rss_mb"] for s in results["samples"]) <= results["peak_mb"] + 1.0
    for key in ("rss_built_mb", "rss_warm_mb", "rss_end_mb", "rss_max_mb"):
        assert results[key] > 0
    assert results["rss_max_mb"] >= results["rss_end_mb"]
    assert results["slope_mb_per_1000"] is not None and results["flat"] is None  # too short
    assert results["stepping_s"] > 0 and results["total_s"] >= results["build_s"] > 0
    assert results["records_mb"] > 0 and len(results["load_average"]) == 2
    # the run folder is a normal recorded run, with the plot beside its records
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["steps_total"] == 12
    assert (out / "system").is_dir() and (out / "households").is_dir()
    assert (out / "memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = bench_md.read_text()
    assert "hand-written notes stay" in table and table.count(bench.MARK) == 1
    assert "## Year-long run (issue 16 item 8)" in table and "not judged" in table
    assert "| status | complete (12 of 12 steps) |" in table
    assert "Extrapolated, not measured" in table


@pytest.mark.parametrize("argv", [["--days", "0"], ["--households", "0"],
                                  ["--config", "no/such/scenario.toml"]])
def test_bad_input_exits_with_2(argv, tmp_path, capsys):
    args = [*argv, "--profiles", "synthetic", "--out", str(tmp_path)]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own refusal
        code = exc.code
    assert code == 2
    assert "error" in capsys.readouterr().err
