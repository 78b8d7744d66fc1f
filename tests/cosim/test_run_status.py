"""Honest run status: steps whose power flow did not converge, partial runs, exit codes, and
bad command lines that leave nothing behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cosim.backends import LocalBackend
from cosim.cli import main
from cosim.scenario import build
from cosim.simulation import NotConverged, Simulation

from .conftest import scenario_config, synthetic_profiles

PROFILES = Path(__file__).parents[2] / "experiments" / "configs" / "profiles"


def _heavy(on_nonconvergence: str):
    """Sixty homes, each 1,500 times its size, on IEEE 13 in the evening: from the third
    step on the power flow has no solution."""
    return scenario_config(
        run={"name": "heavy", "seed": 7, "steps": 4, "checkpoint_every": 2,
             "start": "2026-06-01T17:00:00Z", "on_nonconvergence": on_nonconvergence},
        grid={"feeder": "ieee13"}, households={"count": 60, "shard_size": 30,
                                               "size_factor": 200.0})


def test_a_step_without_convergence_stops_the_run_naming_step_and_worst_bus(tmp_path):
    sim = Simulation(build(_heavy("stop"), synthetic_profiles(homes=30)), LocalBackend(),
                     tmp_path)
    with pytest.raises(NotConverged, match=r"step 2: the power flow of scenario 'heavy' did "
                                           r"not converge; worst bus \d+\.\d"):
        sim.run(progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["failed_step"] == 2
    assert "worst bus" in manifest["error"] and manifest["nonconverged_steps"] == 1
    assert manifest["steps_recorded"] == 3  # the last flush's, written with the status
    # the failed step is on disk, marked, so it can be looked at
    system = pd.read_parquet(tmp_path / "system")
    assert list(system["step"]) == [0, 1, 2] and list(system["converged"]) == [1, 1, 0]


def test_recorded_nonconvergence_is_counted_and_never_summed_away(tmp_path):
    sim = Simulation(build(_heavy("record"), synthetic_profiles(homes=30)), LocalBackend(),
                     tmp_path)
    summary = sim.run(progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "nonconverged" and manifest["nonconverged_steps"] == 2
    assert manifest["nonconverged_steps_list"] == [2, 3]
    assert summary["nonconverged_steps"] == 2 and summary["first_nonconverged_step"] == 2
    # network totals need every step: NaN, not the sum of the steps that converged
    for key in ("substation_kwh", "losses_kwh", "emissions_kg"):
        assert np.isnan(summary[key]), key
    system = pd.read_parquet(tmp_path / "system")
    assert system.loc[system["step"] >= 2, "substation_kwh"].isna().all()
    grid = pd.read_parquet(tmp_path / "grid")
    assert (grid["worst_bus"] != "").all() and not grid["converged"].iloc[2:].any()
    # the households still stepped: their energy is whole
    assert summary["load_kwh"] > 0 and not np.isnan(summary["household_cost"])


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


SCENARIO = f"""
[run]
name = "cli"
seed = 3
start = 2024-06-03T{{hour}}:00:00Z
steps = 4
dt_s = 3600
checkpoint_every = 2
on_nonconvergence = "{{mode}}"

[grid]
feeder = "ieee13"

[households]
count = 20
shard_size = 10
size_factor = {{size}}

[profiles]
generator = "{PROFILES / 'mahtm.toml'}"
"""


def test_cosim_run_exits_3_when_a_step_did_not_converge(tmp_path, capsys):
    config = _write(tmp_path, SCENARIO.format(hour=19, mode="record", size=1500.0))
    assert main(["run", str(config), "--out", str(tmp_path / "rec"), "--no-progress"]) == 3
    out = capsys.readouterr().out
    assert "2 of them WITHOUT a converged power flow (first: step 2)" in out
    assert "substation n/a, losses n/a" in out
    config = _write(tmp_path, SCENARIO.format(hour=19, mode="stop", size=1500.0))
    assert main(["run", str(config), "--out", str(tmp_path / "stop"), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "error: step 2: the power flow of scenario 'cli' did not converge; worst bus" in err


def test_steps_n_of_a_longer_scenario_is_partial_and_resumes_to_complete(tmp_path, capsys):
    config = _write(tmp_path, SCENARIO.format(hour=10, mode="stop", size=1.0))
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--steps", "3", "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "partial" and manifest["steps_done"] == 3
    assert manifest["steps_recorded"] == 3
    assert main(["run", "--resume", str(out), "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["steps_done"] == 4
    assert manifest["steps_recorded"] == 4
    assert sorted(pd.read_parquet(out / "system")["step"]) == [0, 1, 2, 3]


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "argument --steps: must be a positive whole number, got 0"),
    (["--steps", "-2"], "argument --steps: must be a positive whole number, got -2"),
    (["--steps", "two"], "argument --steps: must be a positive whole number, got 'two'"),
])
def test_bad_steps_is_a_usage_error(tmp_path, capsys, argv, message):
    config = _write(tmp_path, SCENARIO.format(hour=10, mode="stop", size=1.0))
    with pytest.raises(SystemExit) as info:
        main(["run", str(config), "--out", str(tmp_path / "x"), *argv])
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_config_with_resume_and_other_bad_runs_leave_no_folder(tmp_path, capsys):
    config = _write(tmp_path, SCENARIO.format(hour=10, mode="stop", size=1.0))
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--steps", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["run", str(config), "--resume", str(out)]) == 2
    assert "give a scenario file or --resume" in capsys.readouterr().err
    # a scenario that fails only once its profiles exist leaves no half-written folder
    bad = _write(tmp_path, SCENARIO.format(hour=10, mode="stop", size=1.0).replace(
        "size_factor = 1.0", "size_factor = 1.0\nhomes = [{ profile = 99 }]\ncount = 1"
    ).replace("count = 20\n", ""))
    assert main(["run", str(bad), "--out", str(tmp_path / "new"), "--no-progress"]) == 2
    assert "households.homes[0].profile" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    # external households need Python to act for them
    ext = _write(tmp_path, SCENARIO.format(hour=10, mode="stop", size=1.0).replace(
        "size_factor = 1.0", "size_factor = 1.0\npolicy = \"external\""))
    assert main(["run", str(ext), "--out", str(tmp_path / "ext")]) == 2
    assert "cosim.Simulation.step" in capsys.readouterr().err
    assert not (tmp_path / "ext").exists()


def test_a_reused_out_folder_with_another_seeds_profiles_is_refused(tmp_path, capsys):
    config = _write(tmp_path, SCENARIO.format(hour=10, mode="stop", size=1.0))
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--steps", "1", "--no-progress"]) == 0
    before = (out / "profiles" / "manifest.json").read_text()
    other = _write(tmp_path, SCENARIO.format(hour=10, mode="stop", size=1.0).replace(
        "seed = 3", "seed = 4"))
    assert main(["run", str(other), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'profiles'}: holds profiles generated for another scenario (seed 3" in err
    assert "this one needs seed 4" in err
    # the folder the user gave is left as it was
    assert (out / "profiles" / "manifest.json").read_text() == before
    shutil.rmtree(out)


@pytest.mark.parametrize("old, new, message", [
    ("size_factor = 1.0", "size_factor = 1.0\npv = { share = 0.5, kwp = [1, inf] }",
     "households.pv.kwp.1: Input should be a finite number (got inf)"),
    ("seed = 3", "seed = -1", "run.seed: Input should be greater than or equal to 0 (got -1)"),
    ("size_factor = 1.0", "size_factor = 1.0\nheat_pump = { share = 0.5, "
     "indoor_initial_c = nan }", "households.heat_pump.indoor_initial_c: Input should be a "
     "finite number (got nan)"),
    ("start = 2024-06-03T10:00:00Z", "start = 2024-06-03T10:00:00",
     "run.start: Value error, 2024-06-03T10:00:00 has no UTC offset"),
    ("count = 20", "count = \"20\"", "households.count: Input should be a valid integer "
     "(got '20')"),
    ("count = 20", "count = true", "households.count: Input should be a valid integer "
     "(got true)"),
    ("[grid]", "[tariff]\npeak_hours = [17, 25]\n\n[grid]",
     "tariff.peak_hours: Value error, [17, 25]: need 0 <= start < end <= 24"),
])
def test_bad_scenario_values_exit_2_naming_file_key_and_value(tmp_path, capsys, old, new,
                                                              message):
    text = SCENARIO.format(hour=10, mode="stop", size=1.0)
    assert old in text
    config = _write(tmp_path, text.replace(old, new))
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{config}: {message}" in err, err
    assert not (tmp_path / "run").exists()
