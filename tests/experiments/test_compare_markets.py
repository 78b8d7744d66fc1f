"""One scenario under every market design."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from experiments.compare_markets import DESIGNS, compare

CONFIG = Path(__file__).parents[2] / "experiments" / "configs" / "mahtm_microgrid.toml"


def test_designs_differ_only_where_they_should():
    results = compare(str(CONFIG), steps=12)
    assert list(results) == list(DESIGNS)
    uniform, pay_as_bid = (results[k] for k in list(DESIGNS)[:2])
    # pay-as-bid matches the same orders as the uniform auction, at other prices: the
    # energy is the same, the money is not
    for key in ("p2p_kwh", "import_kwh", "export_kwh", "self_consumption"):
        assert pay_as_bid[key] == pytest.approx(uniform[key], abs=1e-9)
    assert pay_as_bid["household_cost"] != pytest.approx(uniform["household_cost"], abs=1e-9)
    assert all(np.isfinite(r["household_cost"]) and r["nonconverged_steps"] == 0
               for r in results.values())
