"""The viewer's Mesa agents: thin views over the current step of the records.

An agent holds only its identity (a household index, a market id, a retailer name); every
value it shows is read from the model's `frame`, the columnar rows of the step on display.
So stepping or seeking the model touches arrays, never a thousand Python objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mesa.discrete_space import CellAgent

if TYPE_CHECKING:
    from cosim.viz.model import FeederModel


class HouseholdAgent(CellAgent):
    """A household (HEMS) at its grid connection."""

    def __init__(self, model: FeederModel, index: int) -> None:
        super().__init__(model)
        self.index = index

    def value(self, column: str) -> float:
        """This step's `column` of the households table (kW, kWh per step, currency, p.u.)."""
        return float(self.model.frame.households[column][self.index])

    @property
    def net_kw(self) -> float:
        """Net import (+) or export (-), kW."""
        return self.value("net_kw")

    @property
    def soc(self) -> float:
        """Battery state of charge, 0..1 (NaN without a battery)."""
        return float(self.model.frame.soc[self.index])

    @property
    def devices(self) -> dict[str, object]:
        """The static facts of homes.parquet: connection, market, retailer, device sizes."""
        return self.model.records.homes.iloc[self.index].to_dict()


class MarketAgent(CellAgent):
    """A microgrid operator: its market's clearing of this step."""

    def __init__(self, model: FeederModel, market: int) -> None:
        super().__init__(model)
        self.market = market

    @property
    def price(self) -> float:
        """Clearing price, currency/kWh (NaN when nothing traded)."""
        return float(self.model.frame.market_price.get(self.market, float("nan")))

    @property
    def volume_kwh(self) -> float:
        return float(self.model.frame.market_volume.get(self.market, 0.0))


class RetailerAgent(CellAgent):
    """The distributor or an aggregator: the import and export prices it signals."""

    def __init__(self, model: FeederModel, name: str) -> None:
        super().__init__(model)
        self.name = name

    @property
    def prices(self) -> tuple[float, float]:
        """(import, export) price of this step, currency/kWh (NaN if none was recorded)."""
        return self.model.frame.retail_prices.get(self.name, (float("nan"), float("nan")))


class GridAgent(CellAgent):
    """The feeder's power flow, at the substation."""

    @property
    def summary(self) -> dict[str, float]:
        """This step's row of the grid table: substation_kw, losses_kw, violations, ..."""
        return self.model.frame.grid
