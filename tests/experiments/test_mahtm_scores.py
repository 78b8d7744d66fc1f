"""MAHTM's scores of the shipped six-house microgrid, against the two runs' own records."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cosim.config import load_config
from experiments.mahtm_scores import day_totals, scores, without_storage

CONFIG = Path(__file__).parents[2] / "experiments" / "configs" / "mahtm_microgrid.toml"


def test_scores_are_with_storage_minus_without_per_household():
    config = load_config(CONFIG)
    bare = without_storage(config)
    assert all(h.battery_kwh == 0 and h.battery_kw == 0 for h in bare.households.homes)
    assert bare.households.homes[0].pv_kwp == config.households.homes[0].pv_kwp
    s = scores(config)
    bill, emissions = day_totals(bare)
    np.testing.assert_allclose(s.cost_without, bill)
    np.testing.assert_allclose(s.price, s.cost_with - bill)
    assert len(s.household) == 6
    # the batteries shift PV into the evening: cheaper and cleaner on average, as in the paper
    assert s.price.mean() < 0 and s.emission.mean() < 0
