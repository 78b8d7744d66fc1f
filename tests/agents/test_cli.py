"""`cosim data` and `cosim bench profiles` from the command line."""

from __future__ import annotations

import json

import pandas as pd

from cosim.cli import main


def test_generate_from_the_example_config(capsys, tmp_path):
    out = tmp_path / "set"
    code = main(["data", "generate", "experiments/configs/profiles/default.toml", "--homes", "7",
                 "--days", "2", "--seed", "4", "--out", str(out)])
    assert code == 0
    assert "wrote 7 homes x 2 days (192 steps of 900 s, trained load)" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["homes"] == 7 and manifest["seed"] == 4
    assert manifest["config_file"].endswith("default.toml")
    assert len(pd.read_parquet(out / "households.parquet")) == 7 * 192


def test_bad_config_is_one_clear_line(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[pv]\nshare = 2\n")
    assert main(["data", "generate", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: key 'pv.share'") and "Traceback" not in err


def test_train_and_validate_commands(capsys, tmp_path):
    model = tmp_path / "m.pt"
    assert main(["data", "train", "--out", str(model), "--richardson-homes", "5",
                 "--richardson-days", "14", "--clusters", "2", "--gan-steps", "20"]) == 0
    out = capsys.readouterr().out
    assert "weekday clusters:" in out and f"wrote {model}" in out
    assert main(["data", "validate", "--model", str(model), "--homes", "20", "--days", "7",
                 "--json", str(tmp_path / "v.json"), "--plot", str(tmp_path / "v.png")]) == 0
    out = capsys.readouterr().out
    assert "cluster accuracy, TSTR" in out
    metrics = json.loads((tmp_path / "v.json").read_text())
    assert set(metrics["per_type"]) == {"weekday", "weekend"}
    assert (tmp_path / "v.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_profiles_quick(capsys, tmp_path):
    bench_md = tmp_path / "BENCHMARKS.md"
    bench_md.write_text("# Benchmarks\n\nhand-written notes stay\n")
    args = ["bench", "profiles", "--homes", "4", "--days", "3", "--repeats", "1",
            "--richardson-homes", "1", "--richardson-days", "2", "--out", str(tmp_path / "out"),
            "--update-benchmarks", str(bench_md)]
    assert main(args) == 0
    assert main(args) == 0  # a second run replaces its section
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert all(rate > 0 for rate in data["rates"].values())
    assert data["ratios"]["ours_load_vs_richardsonpy"] > 1
    text = bench_md.read_text()
    assert "hand-written notes stay" in text and text.count("<!-- bench:profiles:cpu -->") == 1
    assert "richardsonpy" in text
