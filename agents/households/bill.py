"""The one retail bill formula: energy exchanged at an import and an export price.

Every bill in the platform is booked with `energy_bill`: a household's bill from its
retailer (and the retailer's revenue from it), the cost a policy or a learner minimises,
an aggregator's revenue from its portfolio and a microgrid pool's payments.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def energy_bill(energy_kwh: Array, buy_price: Array | float,
                sell_price: Array | float) -> Array:
    """Currency owed for `energy_kwh` (+ imported, - exported): imports at `buy_price`,
    exports at `sell_price` (currency/kWh; negative when the party is paid). Works on numpy
    arrays and on torch tensors (differentiably)."""
    return energy_kwh.clip(min=0) * buy_price + energy_kwh.clip(max=0) * sell_price
