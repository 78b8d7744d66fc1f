"""Operators above the households: microgrid operators (MAHTM layer 2), the distributor
(layer 3, carbon-aware) and aggregators (portfolios, wholesale, Stackelberg leader).
Plain classes on arrays; the co-simulation wraps them in actors."""

from agents.operators.aggregator import (
    Aggregator,
    Candidate,
    Flexibility,
    Leadership,
    Response,
    markup_candidates,
    mpc_follower,
    rule_follower,
)
from agents.operators.distributor import Distributor, DistributorPrices, DistributorSettlement
from agents.operators.imbalance import Matching, imbalance_price, pro_rata
from agents.operators.microgrid import LocalPrices, MicrogridOperator, Settlement, settle_pool

__all__ = ["Aggregator", "Candidate", "Distributor", "DistributorPrices",
           "DistributorSettlement", "Flexibility", "Leadership", "LocalPrices", "Matching",
           "MicrogridOperator", "Response", "Settlement", "imbalance_price", "markup_candidates",
           "mpc_follower", "pro_rata", "rule_follower", "settle_pool"]
