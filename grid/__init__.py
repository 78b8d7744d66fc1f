"""Distribution feeders and batched three-phase AC power flow.

    from grid import load_feeder, PowerFlow
    feeder = load_feeder("ieee123")
    pf = PowerFlow(feeder, connections=["1.1", "35.1.2"])
    result = pf.solve(p_kw=[[3.0, -2.0]], load_scale=[1.1])
    result.vmag_pu, result.losses, result.converged

`grid` imports nothing else of this project.
"""

from grid.errors import FeederError, GridError, InjectionError
from grid.feeder import Feeder, Line, Load, Source, load_feeder, shipped_feeders
from grid.powerflow import PowerFlow
from grid.result import PowerFlowResult

__all__ = [
    "Feeder",
    "FeederError",
    "GridError",
    "InjectionError",
    "Line",
    "Load",
    "PowerFlow",
    "PowerFlowResult",
    "Source",
    "load_feeder",
    "shipped_feeders",
]
