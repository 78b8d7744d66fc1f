"""Rule-based home energy management: self-consumption first.

Surplus PV charges the battery, a deficit discharges it, both within the battery's limits;
whatever is left is bought or sold. Limit prices follow the household's grid tariff: a
buyer never pays more than importing would cost, a seller never takes less than exporting
would earn, so trading with neighbours can only help.
"""

from __future__ import annotations

import torch

from agents.devices.battery import Battery


def self_consumption(
    net_kw: torch.Tensor, battery: Battery, energy_kwh: torch.Tensor, dt_h: float
) -> torch.Tensor:
    """Battery power (kW, charging positive) for a net demand `net_kw` (load - PV)."""
    return battery.clip(-net_kw, energy_kwh, dt_h)


def limit_prices(
    residual_kw: torch.Tensor, import_price: torch.Tensor, export_price: torch.Tensor
) -> torch.Tensor:
    """Limit price per order: the import tariff for buyers, the export tariff for sellers."""
    return torch.where(residual_kw > 0, import_price, export_price)
