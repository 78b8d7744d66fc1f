"""MAHTM's scores of the shipped six-house microgrid."""

from __future__ import annotations

from pathlib import Path

from cosim.config import load_config
from cosim.simulation import Simulation
from experiments.mahtm_scores import scores, without_storage

CONFIG = Path(__file__).parents[2] / "experiments" / "configs" / "mahtm_microgrid.toml"


def test_scores_compare_the_same_houses_with_and_without_storage():
    config = load_config(CONFIG)
    bare = Simulation.from_config(without_storage(config), record=False)
    full = Simulation.from_config(config, record=False)
    try:
        assert (bare.households["battery_capacity_kwh"] == 0).all()
        assert (full.households["battery_capacity_kwh"] > 0).all()
        for key in ("pv_kwp", "home", "market", "connection"):  # everything else the same
            assert (bare.households[key] == full.households[key]).all()
    finally:
        bare.close()
        full.close()
    s = scores(config)
    assert len(s.household) == 6
    # the batteries shift PV into the evening: cheaper and cleaner on average, as in the paper
    assert s.price.mean() < 0 and s.emission.mean() < 0
