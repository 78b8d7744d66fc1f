"""The co-simulation engine: messages, bus, step protocol, backends, records, CLI.

`cosim.Simulation` (cosim.simulation) is the one step loop; it loads on first use, so
that importing `cosim` (as every Ray worker does) stays light."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gridedge-cosim")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_LAZY = {"Simulation": "cosim.simulation", "StepResult": "cosim.simulation",
         "HouseholdCosts": "cosim.simulation", "NotConverged": "cosim.simulation"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cosim' has no attribute {name!r}")
