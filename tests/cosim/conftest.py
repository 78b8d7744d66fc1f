"""Scenario fixtures for engine tests: synthetic but physically shaped profiles."""

from __future__ import annotations

import pytest

from cosim.config import parse_config
from cosim.profiles import synthetic
from cosim.scenario import ProfileData


def synthetic_profiles(homes: int = 20, steps: int = 96, **kwargs) -> ProfileData:
    return synthetic(homes=homes, steps=steps, **kwargs)


def scenario_config(**sections: dict) -> object:
    raw = {"profiles": {"dataset": "unused"}}
    for name, values in sections.items():
        raw[name] = values
    return parse_config(raw, "test.toml")


def small(**changes: dict) -> object:
    """60 households with every device kind, 3 markets, a distributor and an aggregator, 12
    steps on IEEE 13; `changes` update its sections key by key."""
    sections = dict(
        # 06:00 to 09:00: cars leave, the morning comfort band begins
        run={"name": "small", "seed": 7, "steps": 12, "checkpoint_every": 4,
             "start": "2026-06-01T06:00:00Z"},
        grid={"feeder": "ieee13"},
        households={"count": 60, "shard_size": 25,
                    "battery": {"share": 0.5}, "pv": {"share": 0.6},
                    "ev": {"share": 0.4, "v2g_share": 0.5, "soc_initial": 0.78},
                    "heat_pump": {"share": 0.3, "indoor_initial_c": 18.5},
                    "flexible_load": {"share": 0.3}, "generator": {"share": 0.1}},
        markets={"households_per_market": 20},
        tariff={"peak_import_price": 0.45, "peak_hours": [17, 21]},
        aggregators={"count": 1, "customer_share": 0.3},
    )
    for name, values in changes.items():
        sections[name] = sections.get(name, {}) | values
    return scenario_config(**sections)


@pytest.fixture
def small_config():
    return small()


def with_policies(config, tmp_path, **households) -> object:
    """`config` with household policy settings changed (and a fresh policy bank of one agent
    per household in `tmp_path` when any household uses one)."""
    from agents.households import ACTIONS, FIELDS, SIGNED_ACTIONS
    from agents.policies.bank import PolicyBank
    from cosim.config import ScenarioConfig

    raw = config.model_dump()
    raw["households"] |= households
    bank = tmp_path / "bank.pt"
    if not bank.exists():
        PolicyBank(config.households.count, len(FIELDS), len(ACTIONS), hidden=(16,),
                   squash=SIGNED_ACTIONS, seed=5).save(bank, FIELDS, ACTIONS)
    raw["policies"]["bank"]["path"] = bank
    return ScenarioConfig.model_validate(raw)


@pytest.fixture
def bank_config(small_config, tmp_path_factory):
    """small_config with half the households on a policy bank that reads their voltage."""
    return with_policies(small_config, tmp_path_factory.mktemp("bank"),
                         policy_groups=[{"policy": "bank", "share": 0.5}])


def fail_dispatch(monkeypatch, shard: str = "shard-0001", step: int = 6):
    """Make `shard` raise RuntimeError("inverter fault") in its dispatch phase at `step`;
    returns the function that undoes it (for the resumed run)."""
    from cosim.actors.households import HouseholdShard

    original = HouseholdShard.dispatch

    def failing(self, at, inbox):
        if self.name == shard and at == step:
            raise RuntimeError("inverter fault")
        return original(self, at, inbox)

    monkeypatch.setattr(HouseholdShard, "dispatch", failing)
    return lambda: monkeypatch.setattr(HouseholdShard, "dispatch", original)
