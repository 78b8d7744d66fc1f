"""The `cosim` command line: help, feeder facts, the power-flow demo and the benchmark."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from cosim.cli import main


def test_help_from_the_installed_entry_point():
    exe = shutil.which("cosim") or str((__import__("pathlib").Path(sys.executable).parent
                                        / "cosim"))
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "grid" in out and "bench" in out


def test_grid_info(capsys):
    assert main(["grid", "info", "ieee123", "--loads"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^loads +91$", out, re.M) and "84 wye, 7 delta" in out and "s1a" in out


def test_grid_info_bad_file_is_one_clear_line(capsys, tmp_path):
    assert main(["grid", "info", str(tmp_path / "missing.dss")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: feeder file not found") and "Traceback" not in err


def test_grid_solve_writes_a_plot(capsys, tmp_path):
    png = tmp_path / "profile.png"
    assert main(["grid", "solve", "ieee13", "--scenarios", "8", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "9 converged" in out and "max deviation" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_bench_powerflow_quick(capsys, tmp_path):
    bench_md = tmp_path / "BENCHMARKS.md"
    bench_md.write_text("# Benchmarks\n\nhand-written notes stay\n")
    args = ["bench", "powerflow", "--feeder", "ieee13", "--batches", "1", "8",
            "--repeats", "1", "--opendss-cases", "16", "--out", str(tmp_path / "out"),
            "--update-benchmarks", str(bench_md)]
    assert main(args) == 0
    assert main(args) == 0  # a second run replaces its section instead of appending
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(row["variant"], row["tol"], row["batch"]) for row in data["rows"]] == [
        (variant, tol, batch) for variant in ("default", "torch") for tol in (1e-9, 1e-6)
        for batch in (1, 8)]
    assert all(row["solves_per_s"] > 0 for row in data["rows"])
    assert all(row["max_error_pu"] <= 1e-6 for row in data["rows"])
    assert data["gradient"]["ratio"] > 0
    text = bench_md.read_text()
    assert "hand-written notes stay" in text
    assert text.count("<!-- bench:powerflow:cpu-ieee13 -->") == 1  # its feeder's section
    assert "x fastest OpenDSS path" in text


@pytest.mark.parametrize("argv", [[], ["grid"], ["bench"]])
def test_missing_subcommand_is_a_usage_error(argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_run_the_mahtm_microgrid_and_resume_it(capsys, tmp_path):
    from pathlib import Path

    import pandas as pd

    config = Path(__file__).parents[2] / "experiments" / "configs" / "mahtm_microgrid.toml"
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "6 households in 1 shards" in text and "balances   money" in text
    assert (out / "scenario.toml").read_text() == config.read_text()
    homes = pd.read_parquet(out / "households")
    assert len(homes) == 6 * 24 and homes["pv_kw"].max() > 0
    # resuming a finished run changes nothing
    before = pd.read_parquet(out / "households")
    assert main(["run", "--resume", str(out), "--no-progress"]) == 0
    pd.testing.assert_frame_equal(before, pd.read_parquet(out / "households"))


def test_run_with_a_bad_scenario_is_one_clear_error(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[households]\ncount = 0\n[profiles]\ndataset = 'x'\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml: households.count: Input should be greater than 0" in err
    assert main(["run"]) == 2
    assert "give a scenario file, or --resume RUN_DIR" in capsys.readouterr().err


def test_bank_init_then_run_the_microgrid_on_it(capsys, tmp_path):
    from pathlib import Path

    import pandas as pd

    shipped = Path(__file__).parents[2] / "experiments" / "configs"
    text = (shipped / "mahtm_microgrid.toml").read_text()
    text = text.replace('generator = "profiles/mahtm.toml"',
                        f'generator = "{shipped / "profiles" / "mahtm.toml"}"')
    text = text.replace("[households]\n", '[households]\npolicy = "bank"\n')
    config = tmp_path / "microgrid.toml"
    config.write_text(text + '\n[policies.bank]\npath = "bank.pt"\n')
    assert main(["run", str(config), "--out", str(tmp_path / "none")]) == 2
    assert "policies.bank.path: " in capsys.readouterr().err  # no bank file yet
    assert main(["bank", "init", str(config), "--out", str(tmp_path / "bank.pt"),
                 "--hidden", "16"]) == 0
    assert "6 independent policies 16 -> 16 -> 6" in capsys.readouterr().out
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--steps", "3", "--no-progress"]) == 0
    homes = pd.read_parquet(out / "homes.parquet")
    assert set(homes["policy"]) == {"bank"}
    assert len(pd.read_parquet(out / "households")) == 6 * 3


def test_bench_markets_quick(tmp_path):
    bench_md = tmp_path / "BENCHMARKS.md"
    bench_md.write_text("# Benchmarks\n\nhand-written notes stay\n")
    args = ["bench", "markets", "--quick", "--out", str(tmp_path / "out"),
            "--update-benchmarks", str(bench_md)]
    assert main(args) == 0
    assert main(args) == 0  # a second run replaces its section
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert all(row["max_volume_diff"] <= 1e-9 for row in data["rows"])
    text = bench_md.read_text()
    assert "hand-written notes stay" in text and text.count("<!-- bench:markets") == 1


def test_bench_engine_quick(tmp_path):
    """The engine benchmark and its mosaik peer run (the peer clears with our auction)."""
    args = ["bench", "engine", "--sizes", "100", "--no-ray", "--repeats", "1", "--steps", "8",
            "--out", str(tmp_path / "out")]
    assert main(args) == 0
    (row,) = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert all(row["run_s"][k] > 0 for k in ("ours", "limit", "mosaik_household",
                                              "mosaik_array_opendss", "mosaik_array_powerflow"))
