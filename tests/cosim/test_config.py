"""Scenario files: validated, with errors naming the file, the key and the reason."""

from __future__ import annotations

import pytest

from cosim.config import ConfigError, load_config


def _write(tmp_path, text):
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


GOOD = """
[run]
name = "ok"
steps = 4
[grid]
feeder = "ieee13"
[households]
count = 10
[profiles]
dataset = "data"
"""


def test_a_good_file_loads_and_resolves_paths(tmp_path):
    config = load_config(_write(tmp_path, GOOD))
    assert config.run.steps == 4 and config.households.count == 10
    assert config.profiles.dataset == (tmp_path / "data").resolve()
    assert config.tariff.import_price == 0.30  # defaults fill the rest


@pytest.mark.parametrize(("edit", "pattern"), [
    (("[households]\ncount = 10", "[households]\ncount = 10\nbatery = {share = 1}"),
     r"scenario.toml: households.batery: Extra inputs are not permitted"),
    (("count = 10", "count = -3"), r"households.count: Input should be greater than 0"),
    (("steps = 4", "steps = 'many'"), r"run.steps: Input should be a valid integer"),
    (("feeder = \"ieee13\"", "feeder = \"ieee13\"\nvmin_pu = 1.1"),
     r"grid: Value error, vmin_pu \(1.1\) must be below vmax_pu \(1.05\)"),
    (("dataset = \"data\"", ""), r"profiles: Value error, give exactly one of dataset or "
                                 r"generator"),
    (("count = 10", "count = 2\nhomes = [{profile = 0}]"),
     r"households: Value error, homes lists 1 households, count is 2"),
    (("count = 10", "count = 10\nheat_pump = {share = 0.5, comfort_c = [22, 18]}"),
     r"households.heat_pump: Value error, comfort_c = \[22.0, 18.0\]: the low end is above"),
    (("count = 10", "count = 10\nbattery = {soc_min = 0.6, soc_initial = 0.5}"),
     r"households.battery: Value error, need soc_min <= soc_initial <= soc_max"),
    (("count = 10", "count = 1\nhomes = [{profile = 0, ev_kwh = 50}]"),
     r"households.homes.0: Value error, ev_kwh = 50.0 and ev_kw = 0.0: give both or neither"),
    (("steps = 4", "steps = 4\ntimezone = \"Mars/Olympus\""),
     r"run: Value error, timezone 'Mars/Olympus' is not an IANA time zone"),
])
def test_bad_values_name_file_key_and_reason(tmp_path, edit, pattern):
    old, new = edit
    with pytest.raises(ConfigError, match=pattern):
        load_config(_write(tmp_path, GOOD.replace(old, new)))


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"scenario.toml: not valid TOML: .*line 2"):
        load_config(_write(tmp_path, "[run]\nsteps = = 4\n"))
    with pytest.raises(ConfigError, match=r"nowhere.toml: scenario file not found"):
        load_config(tmp_path / "nowhere.toml")
