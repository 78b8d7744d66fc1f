"""The co-simulation engine: messages, bus, step protocol, backends, records, CLI.

`cosim.Simulation` (cosim.simulation) is the one step loop; it loads on first use, so
that importing `cosim` (as every Ray worker does) stays light."""

import os
from importlib.metadata import PackageNotFoundError, version

# MKL (torch's BLAS on the CPU) chooses code paths by each buffer's alignment unless told to
# keep one, so the same product can differ in its last bits between processes: two runs of
# one batched IEEE 123 solve with gradients did, and a local and a Ray run of one seed must
# give the same records. AUTO keeps the CPU's fastest path, the same in every process; it
# is read at MKL's first call, so it is set on importing `cosim`, which every run and every
# Ray worker does first. A value set outside is kept.
os.environ.setdefault("MKL_CBWR", "AUTO")

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
