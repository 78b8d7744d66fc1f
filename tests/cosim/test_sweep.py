"""`cosim sweep`: variants as Ray tasks on the two-node cluster, each the same run as a
direct simulation of that variant; a failing variant is reported and the rest complete."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cosim.cli import main
from cosim.commands.sweep import parse_set, variants

MICROGRID = Path(__file__).parents[2] / "experiments" / "configs" / "mahtm_microgrid.toml"


def test_values_are_toml_literals_and_variants_the_cross_product():
    assert parse_set("households.count=10,20") == ("households.count", [10, 20])
    assert parse_set("tariff.peak_hours=[17, 21],[18,22]") == (
        "tariff.peak_hours", [[17, 21], [18, 22]])
    assert parse_set('grid.feeder=eulv,"a,b",ieee13') == ("grid.feeder", ["eulv", "a,b", "ieee13"])
    assert variants(["a=1,2", "b=x,y"]) == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"},
                                           {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]


def _direct(variant: dict, folder: Path) -> dict:
    from cosim.config import load_config
    from cosim.simulation import Simulation

    sim = Simulation.from_config(load_config(MICROGRID, variant), record=True, out=folder)
    return sim.run(progress=False)


def test_a_sweep_on_the_cluster_equals_direct_runs(ray_cluster, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["sweep", str(MICROGRID), "--set", "run.steps=3,5", "--set",
                 "grid.vmax_pu=1.0,1.1", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    table = pd.read_parquet(out / "sweep.parquet")
    assert len(table) == 4 and (table.status == "complete").all()
    assert list(table["run.steps"]) == ["3", "3", "5", "5"]
    for row in table.itertuples():
        variant = {"run.steps": int(row[2]), "grid.vmax_pu": float(row[3])}
        expected = _direct(variant, tmp_path / f"direct-{row.variant}")
        assert row.steps == expected["steps"]
        for key in ("household_cost", "import_kwh", "voltage_violations", "losses_kwh"):
            assert getattr(row, key) == pytest.approx(expected[key], rel=1e-12), key
        # the run folder holds the variant's records, as `cosim run` writes them
        homes = pd.read_parquet(Path(row.folder) / "households")
        assert len(homes) == 6 * expected["steps"]
    # a tight upper limit is a real setting: it finds more violations than a loose one
    by = table.set_index(["run.steps", "grid.vmax_pu"]).voltage_violations
    assert by[("5", "1.0")] >= by[("5", "1.1")]


def test_a_failing_variant_is_reported_and_the_rest_complete(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["sweep", str(MICROGRID), "--set", "run.steps=2", "--set",
                 "grid.feeder=eulv,no_such_feeder", "--backend", "local", "--out", str(out),
                 "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "variant 1" in err and "no_such_feeder" in err
    table = pd.read_parquet(out / "sweep.parquet")
    assert list(table.status) == ["complete", "failed"]
    assert "no_such_feeder" in table.error[1] and table.steps[0] == 2


@pytest.mark.parametrize("sets, message", [
    (["households.count"], "write KEY=V1,V2"),
    (["households.count=0,6"], "variant 0"),
    (["no_section.key=1"], "variant 0"),
    ([], "at least one --set"),
    (["households.policy=rule,external"], "which `cosim sweep` cannot supply"),
])
def test_bad_input_is_exit_2_and_nothing_runs(tmp_path, capsys, sets, message):
    out = tmp_path / "sweep"
    argv = ["sweep", str(MICROGRID), "--out", str(out), "--backend", "local"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_the_sweep_benchmark_table_computes_efficiency_from_its_times():
    """1 variant locally takes 10 s; 4 variants on 2 CPUs in 25 s is 40 s of work in 50
    CPU-seconds: efficiency 0.8."""
    from experiments.bench.sweep import Result, markdown

    result = Result({"cpu": "test", "date": "today"}, "x.toml", [1, 4], 1, 2, {
        "local": {1: [10.0], 4: [40.0]}, "ray": {1: [12.0], 4: [25.0]},
        "cluster": {1: [14.0], 4: [50.0]}})
    table = markdown(result)
    assert "| 4 | 40.0 | 25.0 | 50.0 | 0.80 | 0.40 |" in table
    assert "| 1 | 10.0 | 12.0 | 14.0 | 0.42 | 0.36 |" in table
