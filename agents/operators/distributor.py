"""The distributor (MAHTM layer 3): prices between microgrids, aware of grid carbon.

Energy from the grid comes with the grid's carbon intensity (kgCO2/kWh); energy traded
between microgrids is counted carbon-free (MAHTM's assumption). The distributor passes
the grid's carbon on: microgrids importing from the grid through it pay the grid's buy
price plus `carbon_price` times the intensity, a levy the distributor keeps. Between
microgrids it prices like a microgrid operator one level up: between the grid's sell price
and that carbon-inclusive import price, at the microgrids' demand share, with a `fee`
spread. Dirtier grid hours so raise what a microgrid with surplus earns from its neighbours
and what a short one saves by buying from them instead of the grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from agents.operators.imbalance import imbalance_price, pro_rata
from agents.operators.microgrid import LocalPrices, Settlement, settle_pool


class DistributorPrices(NamedTuple):
    buy: float  # between microgrids, currency/kWh
    sell: float
    import_price: float  # grid energy to a microgrid, carbon levy included
    export_price: float  # microgrid surplus sold to the grid


class DistributorSettlement(NamedTuple):
    """Per microgrid: `settlement` (its payments include the levy on its grid imports);
    the distributor keeps fees and levy (`revenue`), the grid gets `grid_payment`."""

    settlement: Settlement
    revenue: float  # currency
    carbon_levy: float  # part of `revenue`
    grid_payment: float  # currency, + paid to the grid
    emissions_kg: float  # from grid imports


@dataclass
class Distributor:
    carbon_price: float = 0.1  # currency per kgCO2 (0.1 = 100 per tonne)
    fee: float = 0.005

    def __post_init__(self) -> None:
        if self.carbon_price < 0 or self.fee < 0:
            raise ValueError(f"distributor carbon_price {self.carbon_price} and fee "
                             f"{self.fee} must be non-negative")

    def prices(self, microgrid_net_kwh: np.ndarray, grid_buy: float, grid_sell: float,
               carbon_kg_per_kwh: float) -> DistributorPrices:
        """Prices for one step from the microgrids' net energy (kWh, + import)."""
        if grid_sell > grid_buy:
            raise ValueError(f"grid sell price {grid_sell} above grid buy price {grid_buy}")
        import_price = grid_buy + self.carbon_price * carbon_kg_per_kwh
        net = np.asarray(microgrid_net_kwh, float)
        m = pro_rata(net, np.zeros(len(net), int), 1)
        mid = float(imbalance_price(grid_sell, import_price, m.supply_kwh, m.demand_kwh)[0])
        return DistributorPrices(min(mid + self.fee / 2, import_price),
                                 max(mid - self.fee / 2, grid_sell), import_price, grid_sell)

    def settle(self, microgrid_net_kwh: np.ndarray, prices: DistributorPrices,
               grid_buy: float, carbon_kg_per_kwh: float) -> DistributorSettlement:
        """Trades between microgrids (pro rata), the rest with the grid."""
        net = np.asarray(microgrid_net_kwh, float)
        s = settle_pool(net, np.zeros(len(net), int), 1,
                        LocalPrices(np.array([prices.buy]), np.array([prices.sell])),
                        prices.import_price, prices.export_price)
        imports = float(np.maximum(s.upstream_kwh, 0.0).sum())
        levy = (prices.import_price - grid_buy) * imports
        return DistributorSettlement(s, float(s.operator_revenue.sum()) + levy, levy,
                                     float(s.upstream_payment.sum()) - levy,
                                     imports * carbon_kg_per_kwh)
