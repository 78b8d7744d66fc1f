"""Scenario files: validated, with errors naming the file, the key and the reason."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from cosim.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"


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
    # TOML spells inf and nan; no size, price or temperature is either
    (("count = 10", "count = 10\npv = { kwp = [1, inf] }"),
     r"scenario.toml: households.pv.kwp.1: Input should be a finite number \(got inf\)"),
    (("count = 10", "count = 10\nheat_pump = { indoor_initial_c = nan }"),
     r"scenario.toml: households.heat_pump.indoor_initial_c: Input should be a finite number "
     r"\(got nan\)"),
    (("steps = 4", "steps = 4\nphase_timeout_s = -inf"),
     r"scenario.toml: run.phase_timeout_s: Input should be a finite number \(got -inf\)"),
    (("steps = 4", "steps = 4\nseed = -1"),
     r"scenario.toml: run.seed: Input should be greater than or equal to 0 \(got -1\)"),
    # no coercion: a string or a boolean is not a number, a number is not a boolean
    (("count = 10", "count = \"10\""),
     r"scenario.toml: households.count: Input should be a valid integer \(got '10'\)"),
    (("count = 10", "count = true"),
     r"scenario.toml: households.count: Input should be a valid integer \(got true\)"),
    (("count = 10", "count = 10.0"),
     r"scenario.toml: households.count: Input should be a valid integer \(got 10.0\)"),
    (("dataset = \"data\"", "dataset = \"data\"\n[tariff]\nimport_price = \"0.3\""),
     r"scenario.toml: tariff.import_price: Input should be a valid number \(got '0.3'\)"),
    (("count = 10", "count = 10\nbattery = { share = true }"),
     r"scenario.toml: households.battery.share: Input should be a valid number \(got true\)"),
    (("steps = 4", "steps = 4\nrecord_messages = 1"),
     r"scenario.toml: run.record_messages: Input should be a valid boolean \(got 1\)"),
    (("count = 10", "count = 1\nhomes = [{profile = 0, ev_kwh = 50, ev_kw = 7, ev_v2g = \"yes\"}]"),
     r"scenario.toml: households.homes.0.ev_v2g: Input should be a valid boolean \(got 'yes'\)"),
    # a start without an offset would be read in the machine's own time zone
    (("steps = 4", "steps = 4\nstart = 2026-06-01T00:00:00"),
     r"scenario.toml: run.start: Value error, 2026-06-01T00:00:00 has no UTC offset; add Z "
     r"\(UTC\) or an offset, e.g. 2026-06-01T00:00:00Z or 2026-06-01T00:00:00\+01:00"),
    (("steps = 4", "steps = 4\nstart = 2026-06-01"),
     r"scenario.toml: run.start: Value error, 2026-06-01T00:00:00 has no UTC offset; add Z"),
    (("dataset = \"data\"", "dataset = \"data\"\n[tariff]\npeak_hours = [17, 25]"),
     r"scenario.toml: tariff.peak_hours: Value error, \[17, 25\]: need 0 <= start < end <= 24"),
    (("dataset = \"data\"", "dataset = \"data\"\n[tariff]\npeak_hours = [21, 17]"),
     r"scenario.toml: tariff.peak_hours: Value error, \[21, 17\]: need 0 <= start < end <= 24"),
    (("dataset = \"data\"", "dataset = \"data\"\n[tariff]\npeak_hours = [-1, 7]"),
     r"scenario.toml: tariff.peak_hours: Value error, \[-1, 7\]: need 0 <= start < end <= 24"),
])
def test_bad_values_name_file_key_and_reason(tmp_path, edit, pattern):
    old, new = edit
    with pytest.raises(ConfigError, match=pattern):
        load_config(_write(tmp_path, GOOD.replace(old, new)))


def test_integers_lists_strings_and_offsets_still_work(tmp_path):
    """What strictness must not break: integers where floats belong, lists where pairs are
    declared (TOML has no tuples), paths as strings, any UTC offset."""
    config = load_config(_write(tmp_path, GOOD.replace("count = 10", (
        "count = 10\npv = { kwp = [1, 6] }\nbattery = { capacity_kwh = [5, 10], share = 1 }"))
        .replace("steps = 4", "steps = 4\nstart = 2026-06-01T02:00:00+02:00")))
    assert config.households.pv.kwp == (1.0, 6.0) and config.households.battery.share == 1.0
    assert config.run.start == dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    assert config.profiles.dataset == (tmp_path / "data").resolve()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")),
                         ids=lambda p: p.name)
def test_the_shipped_scenarios_load(path):
    config = load_config(path)
    assert config.run.start.utcoffset() is not None


@pytest.mark.parametrize("path", sorted((CONFIGS / "profiles").glob("*.toml")),
                         ids=lambda p: p.name)
def test_the_shipped_profile_configs_load(path):
    from agents.profiles import load_config as load_generator_config

    assert load_generator_config(path).homes > 0


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"scenario.toml: not valid TOML: .*line 2"):
        load_config(_write(tmp_path, "[run]\nsteps = = 4\n"))
    with pytest.raises(ConfigError, match=r"nowhere.toml: scenario file not found"):
        load_config(tmp_path / "nowhere.toml")


def test_auto_checkpoints_follow_the_household_count(tmp_path):
    """run.checkpoint_every = "auto" (the default): AUTO_CHECKPOINT_HOUSEHOLD_STEPS
    household-steps between checkpoints, at least AUTO_MIN_CHECKPOINT and at most
    AUTO_MAX_CHECKPOINT steps, and no more than AUTO_MOST_HOUSEHOLD_STEPS household-steps
    in one, resolved when the file is read (the manifest keeps it),
    whether the count is written or the default; a number is kept; anything else is an
    error naming the key."""
    from cosim.config import AUTO_MAX_CHECKPOINT, AUTO_MIN_CHECKPOINT

    def every(households: str, run: str = "") -> int:
        text = GOOD.replace("count = 10", households).replace("steps = 4", "steps = 4" + run)
        return load_config(_write(tmp_path, text)).run.checkpoint_every

    assert every("count = 1000") == 96
    assert every("count = 1000", '\ncheckpoint_every = "auto"') == 96
    assert every("count = 3000") == 32
    assert every("count = 5000") == every("count = 33000") == AUTO_MIN_CHECKPOINT == 24
    assert every("count = 50000") == 16  # AUTO_MOST_HOUSEHOLD_STEPS / count
    assert every("count = 100000") == 8
    assert every("count = 6") == every("count = 100") == AUTO_MAX_CHECKPOINT == 960
    assert every("") == 96  # the default count, 1,000
    assert every("count = 100", "\ncheckpoint_every = 7") == 7
    with pytest.raises(ConfigError, match='run: .*checkpoint_every must be a positive '
                                          'integer or "auto", got \'often\''):
        every("count = 100", '\ncheckpoint_every = "often"')
    with pytest.raises(ConfigError, match=r"run.checkpoint_every: Input should be greater "
                                          r"than 0 \(got 0\)"):
        every("count = 100", "\ncheckpoint_every = 0")


def test_auto_shards_follow_the_machine(tmp_path, monkeypatch):
    """shard_size = "auto" (the default): one shard per CPU, at least AUTO_MIN_SHARD
    households each and at most AUTO_MAX_SHARD (for records; copies, which never record,
    are not capped), resolved to a number when the file is read (so the manifest keeps
    it); a number is kept; anything else is an error naming the key."""
    import os

    from cosim.config import AUTO_MAX_SHARD, AUTO_MIN_SHARD, auto_shard_size

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)

    def size(households: str) -> int:
        text = GOOD.replace("count = 10", households)
        return load_config(_write(tmp_path, text)).households.shard_size

    assert size("count = 100") == 100  # one shard
    assert size("count = 100\nshard_size = \"auto\"") == 100
    assert size(f"count = {AUTO_MAX_SHARD}") == AUTO_MAX_SHARD  # one shard
    assert size(f"count = {AUTO_MAX_SHARD + 1}") == AUTO_MAX_SHARD // 2 + 1  # two
    assert size("count = 100000") == 25_000  # capped: four shards on four CPUs
    assert size("count = 1000000") == 25_000  # capped: forty shards
    # uncapped (copies): one per CPU, at least AUTO_MIN_SHARD each
    assert auto_shard_size(3 * AUTO_MIN_SHARD, records=False) == AUTO_MIN_SHARD
    assert auto_shard_size(100 * AUTO_MIN_SHARD, records=False) == 25 * AUTO_MIN_SHARD
    assert size("count = 100\nshard_size = 30") == 30
    with pytest.raises(ConfigError, match='shard_size must be a positive integer or "auto", '
                                          "got 'big'"):
        size("count = 100\nshard_size = \"big\"")
    with pytest.raises(ConfigError, match=r"households.count: Input should be a valid "
                                          r"integer \(got '10'\)$"):
        size("count = \"10\"")
